"""The pytest plugin, as a user's project sees it: each test here writes a small project (conftest.py,
tests, pytest configuration) and runs pytest on it in this process with `pytester`, against the real
example sidecar (or a Go module written here).

These tests are synchronous: the inner pytest runs each of its tests in a `trio.run` of its own,
which cannot nest in one of ours.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import documented_project
import pytest
from gomodule import ROOT, write_module
from timing import HANG

from trio_gotask import pytest_plugin
from trio_gotask.pytest_plugin import gotask_fixture

pytestmark = pytest.mark.slow  # pytest in child processes, users' sidecars built: the newest Python only

pytest_plugins = ["pytester"]

EXAMPLE = ROOT / "go" / "example"
PLUGIN = "trio_gotask.pytest_plugin"
HOME = str(Path.home())

# A user's pytest configuration: Trio mode, and warnings (a thread's exception, say) as errors.
PYPROJECT = """
[tool.pytest.ini_options]
trio_mode = true
filterwarnings = ["error"]
"""

# Each test of the inner projects writes "<test name> <sidecar pid>" here.
RECORD_PID = """
import os
from pathlib import Path


async def record(request, gt):
    pid = await gt.call("App.Pid")
    with open(Path(os.environ["PIDS"]), "a") as f:
        f.write(f"{request.node.name} {pid}\\n")
    return pid
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """pytest in the project, with the plugin loaded as users get it, through its entry point;
    or, in an environment installed from a tree without the entry point (a shared development
    venv), handed to pytest directly."""
    installed = any(ep.value == PLUGIN for ep in entry_points(group="pytest11"))
    return pytester.runpytest(*args, plugins=[] if installed else [pytest_plugin])


def gone(pid: int) -> bool:
    """The process is gone and reaped: the inner runs are in this process, so an unreaped child
    would still answer as a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """`pytester`, with the real HOME back (pytester points it at the project): Go's build and
    module caches and the sidecar build cache live there, and would start cold in every test."""
    monkeypatch.setenv("HOME", HOME)
    return pytester


@pytest.fixture
def pids(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = project.path / "pids.txt"
    monkeypatch.setenv("PIDS", str(path))
    project.makepyfile(record_pid=RECORD_PID)
    return path


def read_pids(path: Path) -> dict[str, int]:
    return {name: int(pid) for name, pid in (line.split() for line in path.read_text().splitlines())}


def test_each_test_gets_a_sidecar_of_its_own_reaped_after_it(project: pytest.Pytester, pids: Path) -> None:
    project.makepyprojecttoml(PYPROJECT)
    project.makeconftest(f"""
from trio_gotask.pytest_plugin import gotask_fixture

app = gotask_fixture({str(EXAMPLE)!r})
""")
    project.makepyfile(
        test_app="""
from record_pid import record


async def test_hi(app, request):
    assert await app.call("App.Hi", "Reasno") == {"hello": "Reasno"}
    assert await record(request, app) == app.pid


async def test_again(app, request):
    assert await record(request, app) == app.pid
"""
    )
    run(project).assert_outcomes(passed=2)
    found = read_pids(pids)
    assert found["test_hi"] != found["test_again"]
    assert all(gone(pid) for pid in found.values())


@pytest.mark.parametrize("where", ["ini", "option"])
def test_the_gotask_fixture_takes_its_sidecar_from_the_configuration(
    project: pytest.Pytester, pids: Path, where: str
) -> None:
    (project.path / "go").mkdir()
    (project.path / "go" / "sidecar").symlink_to(EXAMPLE)
    if where == "ini":  # from the configuration file's folder
        project.makepyprojecttoml(PYPROJECT + 'gotask_sidecar = "go/sidecar"\n')
        args = []
    else:  # the option wins over the configuration
        project.makepyprojecttoml(PYPROJECT + 'gotask_sidecar = "nowhere"\n')
        args = ["--gotask-sidecar=go/sidecar"]
    project.makepyfile(
        test_app="""
import pytest
from record_pid import record


@pytest.mark.trio
async def test_hi(gotask, request):
    assert await gotask.call("App.Hi", "Reasno") == {"hello": "Reasno"}
    await record(request, gotask)
"""
    )
    # Marked, not in Trio mode: pytest-trio runs the fixture all the same.
    run(project, "-o", "trio_mode=false", *args).assert_outcomes(passed=1)
    assert gone(read_pids(pids)["test_hi"])


def test_the_gotask_fixture_with_no_sidecar_says_how_to_name_one(project: pytest.Pytester) -> None:
    project.makepyprojecttoml(PYPROJECT)
    project.makepyfile(test_app="async def test_hi(gotask):\n    pass\n")
    result = run(project)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the gotask fixture needs a sidecar: set gotask_sidecar*"])


def test_process_scope_module_shares_one_process_between_the_tests_of_a_module(
    project: pytest.Pytester, pids: Path
) -> None:
    project.makepyprojecttoml(PYPROJECT)
    project.makeconftest(f"""
from trio_gotask.pytest_plugin import gotask_fixture

shared = gotask_fixture({str(EXAMPLE)!r}, process_scope="module", transport="tcp", pool_size=2)
""")
    test = """
from record_pid import record


async def test_{0}_first(shared, request):
    assert shared.pid is None  # connected to a process that is not the test's
    await record(request, shared)


async def test_{0}_second(shared, request):
    await record(request, shared)
"""
    project.makepyfile(test_a=test.format("a"), test_b=test.format("b"))
    run(project).assert_outcomes(passed=4)
    found = read_pids(pids)
    assert found["test_a_first"] == found["test_a_second"]
    assert found["test_b_first"] == found["test_b_second"]
    assert found["test_a_first"] != found["test_b_first"]
    assert all(gone(pid) for pid in found.values())


def test_process_scope_class_shares_one_process_between_the_tests_of_a_class(
    project: pytest.Pytester, pids: Path
) -> None:
    project.makepyprojecttoml(PYPROJECT)
    project.makeconftest(f"""
from trio_gotask.pytest_plugin import gotask_fixture

shared = gotask_fixture({str(EXAMPLE)!r}, process_scope="class")
""")
    project.makepyfile(
        test_classes="""
from record_pid import record


class TestA:
    async def test_first(self, shared, request):
        await record(request, shared)

    async def test_second(self, shared, request):
        await record(request, shared)


class TestB:
    async def test_third(self, shared, request):
        await record(request, shared)


async def test_outside(shared, request):  # a class of its own, as for pytest's fixtures
    await record(request, shared)
"""
    )
    run(project).assert_outcomes(passed=4)
    found = read_pids(pids)
    assert found["test_first"] == found["test_second"]
    assert len({found["test_first"], found["test_third"], found["test_outside"]}) == 3
    assert all(gone(pid) for pid in found.values())


def test_a_shared_sidecar_that_exits_fails_its_test_and_the_later_ones(
    project: pytest.Pytester, pids: Path
) -> None:
    project.makepyprojecttoml(PYPROJECT)
    project.makeconftest(f"""
from trio_gotask.pytest_plugin import gotask_fixture

shared = gotask_fixture({str(EXAMPLE)!r}, process_scope="session")
""")
    project.makepyfile(
        test_exit="""
import contextlib
import os

import pytest
import trio
from record_pid import record

from trio_gotask import SidecarError


async def test_exits(shared, request):
    pid = await record(request, shared)
    with pytest.raises(SidecarError):
        await shared.call("App.Exit", 3)
    # Until it has exited, so that the fixture's teardown sees it: a zombie (left to be reaped),
    # or reaped already by the thread that started it.
    with contextlib.suppress(ChildProcessError):
        await trio.to_thread.run_sync(os.waitid, os.P_PID, pid, os.WEXITED | os.WNOWAIT)


async def test_later(shared):
    pass
"""
    )
    result = run(project)
    result.assert_outcomes(failed=2)
    # Both fail, saying why: at the first one's end, when the second one starts.
    message = (
        "Failed: fixture 'shared': the sidecar 'example' shared by the tests of this session "
        "(process_scope='session') exited with status 3; the later tests of this session that use it fail too"
    )
    # Each report is that line alone (the short summary, with -r, repeats it after the test's name).
    assert sum(line.startswith(message) for line in result.stdout.lines) == 2
    assert "ExceptionGroup" not in result.stdout.str()  # the reason, not the library's frames
    assert gone(read_pids(pids)["test_exits"])


def test_a_sidecar_that_does_not_build_fails_its_tests_with_gos_error(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOTASK_CACHE_DIR", str(project.path / "cache"))
    write_module(project.path / "broken", {"main.go": "package main\n\nfunc main() { undefinedThing() }\n"})
    project.makepyprojecttoml(PYPROJECT)
    project.makeconftest("""
from trio_gotask.pytest_plugin import gotask_fixture

broken = gotask_fixture("broken")  # relative to the rootdir
""")
    project.makepyfile(
        test_broken="async def test_one(broken):\n    pass\n\n\nasync def test_two(broken):\n    pass\n"
    )
    log = project.path / "build.log"
    result = run(project, f"--log-file={log}", "--log-file-level=INFO")
    result.assert_outcomes(failed=2)
    message = (
        f"Failed: fixture 'broken': the sidecar did not build: 'go build' failed in {project.path / 'broken'} "
        "(exit status 1):\n    | # example.com/broken\n    | ./main.go:3:15: undefined: undefinedThing\n"
    )
    assert result.stdout.str().count(message) == 2
    # Built once for the run, not once per test.
    assert len(re.findall(r"go build .*broken: starting", log.read_text())) == 1


@pytest.fixture
def running_sidecar(sidecar: str) -> Iterator[tuple[str, str, int]]:
    """A sidecar started by hand with a secret: its address, the secret and its pid."""
    secret = secrets.token_urlsafe(16)
    process = subprocess.Popen(
        [sidecar, "-standalone", "-address", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        env={**os.environ, "GOTASK_SECRET": secret},
    )
    try:
        assert process.stdout is not None
        handshake = process.stdout.readline().decode()
        process.stdout.close()
        yield handshake.strip().split("|")[3], secret, process.pid
        assert process.poll() is None  # the fixtures left it running
    finally:
        process.terminate()
        assert process.wait(HANG) == 0


def test_fixtures_connect_to_a_sidecar_running_at_an_address(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, running_sidecar: tuple[str, str, int]
) -> None:
    address, secret, pid = running_sidecar
    project.makepyprojecttoml(PYPROJECT)
    project.makeconftest(f"""
from trio_gotask.pytest_plugin import gotask_fixture

remote = gotask_fixture(address={address!r}, secret={secret!r})
""")
    project.makepyfile(
        test_remote=f"""
async def test_remote(remote):
    assert remote.pid is None
    assert await remote.call("App.Pid") == {pid}


async def test_the_gotask_fixture(gotask):
    assert await gotask.call("App.Pid") == {pid}
"""
    )
    monkeypatch.setenv("GOTASK_SECRET", secret)
    run(project, f"--gotask-address={address}").assert_outcomes(passed=2)


def test_a_sidecar_that_fails_to_start_fails_its_test_with_the_reason_alone(project: pytest.Pytester) -> None:
    project.makepyprojecttoml(PYPROJECT)
    project.makeconftest("""
from trio_gotask.pytest_plugin import gotask_fixture

dies = gotask_fixture(["/bin/sh", "-c", "echo 'cannot open the database' >&2; exit 4"])
""")
    project.makepyfile(test_dies="async def test_one(dies):\n    pass\n")
    result = run(project)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "Failed: fixture 'dies': the sidecar 'sh' exited with status 4 before its handshake" in out
    assert "cannot open the database" in out
    assert "ExceptionGroup" not in out and "Traceback" not in out


def test_an_address_without_its_secret_says_to_set_the_variable(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, running_sidecar: tuple[str, str, int]
) -> None:
    address, _, _ = running_sidecar
    monkeypatch.delenv("GOTASK_SECRET", raising=False)
    project.makepyprojecttoml(PYPROJECT)
    project.makepyfile(test_remote="async def test_remote(gotask):\n    pass\n")
    result = run(project, f"--gotask-address={address}")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "Failed: fixture 'gotask':" in out
    assert "(--gotask-address takes the sidecar's secret from $GOTASK_SECRET: set it to the value" in out


def test_a_fixture_not_assigned_to_a_name_is_an_error(project: pytest.Pytester) -> None:
    project.makepyprojecttoml(PYPROJECT)
    project.makeconftest(f"""
from trio_gotask.pytest_plugin import gotask_fixture

fixtures = [gotask_fixture({str(EXAMPLE)!r})]  # pytest defines no fixture from a list
""")
    project.makepyfile(test_plain="def test_plain():\n    pass\n")
    result = run(project)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: gotask_fixture() at *conftest.py:3 is not assigned to a name*"])


def test_the_plugin_costs_nothing_to_a_run_that_does_not_use_it(project: pytest.Pytester) -> None:
    # Its module imports no pytest-trio (which may be missing), and a run without pytest-trio
    # is undisturbed.
    code = f"import sys, {PLUGIN}; assert 'pytest_trio' not in sys.modules, 'pytest_trio imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    project.makepyfile(test_plain="def test_plain():\n    assert True\n")
    run(project, "-p", "no:trio").assert_outcomes(passed=1)


def test_arguments_that_cannot_work_fail_when_the_fixture_is_made() -> None:
    with pytest.raises(TypeError, match="takes either a sidecar"):
        gotask_fixture("go/app", address="127.0.0.1:6001")
    with pytest.raises(TypeError, match="takes either a sidecar"):
        gotask_fixture()
    with pytest.raises(TypeError, match=r"passes its keyword arguments to open_gotask\(\).*'transprot'"):
        gotask_fixture("go/app", transprot="tcp")
    with pytest.raises(TypeError, match=r"passes its keyword arguments to connect_gotask\(\).*'transport'"):
        gotask_fixture(address="127.0.0.1:6001", transport="tcp")
    with pytest.raises(ValueError, match="process_scope must be one of function, class"):
        gotask_fixture("go/app", process_scope="test")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="there is no process for process_scope to share"):
        gotask_fixture(address="127.0.0.1:6001", process_scope="session")
    with pytest.raises(
        TypeError, match=r"with process_scope=.module., gotask_fixture\(\) cannot take restart"
    ):
        gotask_fixture("go/app", process_scope="module", restart=None)
    with pytest.raises(ValueError, match="transport must be 'unix' or 'tcp', not 'pipe'"):
        gotask_fixture("go/app", process_scope="session", transport="pipe")
    with pytest.raises(ValueError, match="startup_timeout"):
        gotask_fixture("go/app", process_scope="session", startup_timeout=0)


def test_the_documented_project_has_every_file_its_page_shows() -> None:
    # The page's project is run by `nox -s plugin`; a block that lost its file name would be left out.
    assert sorted(documented_project.files()) == [
        "pyproject.toml",
        "sidecar/main.go",
        "tests/conftest.py",
        "tests/test_fixtures.py",
        "tests/test_text.py",
    ]
