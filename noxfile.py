"""Every check this project runs: `nox` runs the default sessions, `nox -l` lists them all."""

from __future__ import annotations

import glob
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nox

ROOT = Path(__file__).parent
GO = ROOT / "go"
GO_EXAMPLES = sorted(p.parent for p in (ROOT / "examples").glob("*/go.mod"))
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
DEFAULT_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"

nox.options.sessions = [
    "go",
    "lint",
    "typing",
    "tests",
    "compiled",
    "plugin",
    "install",
    "docs",
    "fuzz",
    "pythons",
]
nox.options.default_venv_backend = "venv"
# A missing interpreter is reported as skipped by nox; the default one is checked below.
nox.options.error_on_missing_interpreters = False


def _add_pyenv_pythons() -> None:
    """Make interpreters that pyenv installed but did not activate findable as `python3.X`."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    dirs = []
    for version in PYTHONS:
        if shutil.which(f"python{version}") and not _is_pyenv_shim(f"python{version}"):
            continue
        found = sorted(glob.glob(str(root / "versions" / f"{version}.*" / "bin")))
        if found:
            dirs.append(found[-1])
    if dirs:
        os.environ["PATH"] = os.pathsep.join([*dirs, os.environ.get("PATH", "")])


def _is_pyenv_shim(name: str) -> bool:
    path = shutil.which(name)
    return path is not None and "/shims/" in path


_add_pyenv_pythons()
_MISSING = [v for v in PYTHONS if not shutil.which(f"python{v}")]
# Tests marked slow (Go builds, examples, deploy files, the CLI's child processes, several sidecars)
# exercise little that changes with the interpreter: they run once, on the newest Python found.
SLOW_PYTHON = (
    [v for v in PYTHONS if v not in _MISSING][-1] if len(_MISSING) < len(PYTHONS) else DEFAULT_PYTHON
)

# One hypothesis seed for the whole run, printed by every session that uses it, so that a failure
# can be replayed: HYPOTHESIS_SEED=<seed> python3 -m nox -s <session>.
HYPOTHESIS_SEED = os.environ.get("HYPOTHESIS_SEED") or str(random.SystemRandom().randrange(1 << 32))

# The oldest Go the README promises (go.mod's go line, at its last patch release) and the newest,
# the machine's: the go session tests both. Any Go toolchain comes from the module proxy.
OLDEST_GO = "go1.22.12"


@nox.session(python=False)
def go(session: nox.Session) -> None:
    """go vet, race-enabled tests and a fuzz run with this Go; vet and -short with the oldest.

    The machine's Go (the newest) runs go vet over the library and the examples, the tests with
    the race detector, and the fuzz targets; the oldest Go the README promises (OLDEST_GO, from
    the module proxy) runs go vet and the tests with -short."""
    oldest = OLDEST_GO.removeprefix("go").rpartition(".")[0]
    promises = {
        "go/go.mod": re.findall(r"^go (\d+\.\d+)$", (GO / "go.mod").read_text(), re.M),
        "README.md": re.findall(r"Go ≥ (\d+\.\d+)", (ROOT / "README.md").read_text()),
    }
    for where, found in promises.items():
        if found != [oldest]:
            session.error(f"OLDEST_GO is {OLDEST_GO}, but {where} promises Go {found}")
    for module in GO_EXAMPLES:
        session.chdir(module)
        session.run("go", "vet", "./...", external=True)
    # go/otelgotask is a module of its own (OpenTelemetry stays out of go/go.mod), on a Go that
    # OpenTelemetry supports: the machine's, not the oldest.
    session.chdir(GO / "otelgotask")
    session.run("go", "vet", "./...", external=True)
    session.run("go", "test", "-race", "-count=1", "./...", external=True)
    session.chdir(GO)
    session.run("go", "version", external=True)
    session.run("go", "vet", "./...", external=True)
    session.run("go", "test", "-race", "-count=1", "./...", external=True)
    # The seed corpus ran above as plain tests; a short real fuzz run catches new crashers early.
    # A count of inputs, not a duration: with a duration, Go before 1.27 may fail a run whose time
    # ran out while a worker was busy ("context deadline exceeded", golang/go#75804), which a
    # loaded machine makes likely. Five to fifteen seconds on an idle machine.
    fuzz_time = os.environ.get("GOTASK_FUZZTIME", "100000x")
    session.run(
        "go",
        "test",
        "-run=NONE",
        "-fuzz=FuzzReadMessage",
        f"-fuzztime={fuzz_time}",
        "./gotask",
        external=True,
    )
    # Admission: each input that stops short waits for the handshake timeout, so fewer inputs.
    session.run(
        "go",
        "test",
        "-run=NONE",
        "-fuzz=FuzzAdmission",
        f"-fuzztime={os.environ.get('GOTASK_ADMISSION_FUZZTIME', '2000x')}",
        "./gotask",
        external=True,
    )
    oldest = {"GOTOOLCHAIN": OLDEST_GO}
    session.run("go", "version", external=True, env=oldest)
    session.run("go", "vet", "./...", external=True, env=oldest)
    session.run("go", "test", "-short", "-count=1", "./...", external=True, env=oldest)


@nox.session(python=DEFAULT_PYTHON)
def lint(session: nox.Session) -> None:
    """ruff (lint and format) and gofmt."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    unformatted = session.run("gofmt", "-l", str(GO), *map(str, GO_EXAMPLES), external=True, silent=True)
    if unformatted and unformatted.strip():
        session.error(f"gofmt would change:\n{unformatted}")


@nox.session(python=DEFAULT_PYTHON)
def typing(session: nox.Session) -> None:
    """mypy --strict over the package, the tests, the examples and the benchmarks."""
    session.install("-e", ".[test]", "mypy", "trio-parallel")
    session.run("mypy", "--strict")


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """pytest on each CPython 3.10-3.13 found; slow tests on the newest only.

    The oldest Python runs against the oldest trio and msgpack pyproject.toml allows (its lower
    bounds, pinned exactly), the newest against the newest releases of everything (an eager
    upgrade), and the others against what pip picks. The newest Python found runs every test;
    the others leave out those marked slow, which depend on Go and child processes more than on
    the interpreter."""
    if session.python == PYTHONS[0]:
        session.install("-e", ".[test]", *_lower_bounds())
    elif session.python == PYTHONS[-1]:
        session.install("--upgrade", "--upgrade-strategy", "eager", "-e", ".[test]")
    else:
        session.install("-e", ".[test]")
    session.run("python", "-c", _VERSIONS, silent=False)
    session.run(
        "pytest", *_pytest_args(session, select=None if session.python == SLOW_PYTHON else "not slow")
    )


def _pytest_args(session: nox.Session, *, select: str | None, workers: bool = True) -> list[str]:
    """pytest's arguments: the tests ``select`` picks (a marker expression; None for all), on as
    many workers as the machine has cores, with the run's hypothesis seed; then the session's own
    (``nox -s tests -- -k cancel``)."""
    session.log(f"hypothesis seed {HYPOTHESIS_SEED}: replay with HYPOTHESIS_SEED={HYPOTHESIS_SEED}")
    which = [] if select is None else ["-m", select]
    parallel = ["-n", "auto"] if workers else []
    return [*which, *parallel, f"--hypothesis-seed={HYPOTHESIS_SEED}", *session.posargs]


_VERSIONS = (
    "import sys, trio, msgpack; "
    "print('Python', sys.version.split()[0], '| trio', trio.__version__, '| msgpack', "
    "'.'.join(map(str, msgpack.version)))"
)


def _lower_bounds() -> list[str]:
    """The package's runtime dependencies pinned to their lower bounds: ``trio >= 0.25`` gives
    ``trio==0.25``."""
    import tomllib  # here: the noxfile itself may run on a Python without it (3.10)

    with (ROOT / "pyproject.toml").open("rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    pins = []
    for dependency in dependencies:
        name, _, low = dependency.partition(">=")
        if not low:
            raise ValueError(f"{dependency!r} in pyproject.toml has no lower bound (>=) to test")
        pins.append(f"{name.strip()}=={low.split(',')[0].strip()}")
    return pins


@nox.session(python=DEFAULT_PYTHON)
def compiled(session: nox.Session) -> None:
    """pytest, slow tests aside, against the sans-I/O core compiled with mypyc (the fast build).

    The tests marked slow exercise no more of the core than the others, so they are left out.

    The wheel is built from a copy of the tree, since the mypyc build hook leaves compiled modules
    beside the sources, where they would shadow the .py files of an editable install.
    """
    # Not session.create_tmp(): it points TMPDIR into .nox, too deep for the tests' socket paths.
    with tempfile.TemporaryDirectory(prefix="trio-gotask-compiled-") as tmp:
        source = Path(tmp) / "source"
        shutil.copytree(
            ROOT,
            source,
            ignore=shutil.ignore_patterns(
                ".git", ".nox", ".venv", "*.so", "__pycache__", ".mypy_cache", "build", "dist"
            ),
        )
        wheels = Path(tmp) / "wheels"
        session.run(
            "python",
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-w",
            str(wheels),
            str(source),
            env={"HATCH_BUILD_HOOK_ENABLE_MYPYC": "true"},
        )
        (wheel,) = wheels.glob("*.whl")
        session.install(f"{wheel}[test]")
    # The `pytest` program (not `python -m pytest`) keeps the source tree off sys.path, so the
    # installed, compiled package is the one imported; tests/test_core.py checks that it is.
    session.run("pytest", *_pytest_args(session, select="not slow"), env={"TRIO_GOTASK_EXPECT_COMPILED": "1"})


@nox.session(python=DEFAULT_PYTHON)
def docs(session: nox.Session) -> None:
    """The docs site into build/docs/html, warnings as errors; `nox -s docs -- web` checks web links too.

    MyST resolves every link between pages, and to headings and files, while building the HTML:
    one that points nowhere is a warning, so an error. The linkcheck builder then checks the links
    left as URIs; web links only with `web`, since CI has no network.
    """
    session.install("-e", ".[docs,pytest]")  # pytest: the API page documents the plugin
    out = ROOT / "build" / "docs"
    common = ["-W", "--keep-going", "-q", "-d", str(out / "doctrees"), str(ROOT / "docs")]
    session.run("sphinx-build", "-b", "html", *common, str(out / "html"))
    env = {"TRIO_GOTASK_DOCS_CHECK_WEB": "1"} if "web" in session.posargs else {}
    session.run("sphinx-build", "-b", "linkcheck", *common, str(out / "linkcheck"), env=env)


@nox.session(python=DEFAULT_PYTHON)
def plugin(session: nox.Session) -> None:
    """The pytest plugin as a user gets it: docs/testing.md's project, from a wheel.

    The example project of docs/testing.md, written out of the page into a folder outside the
    repository, and its tests run with the package installed from a wheel (the plugin loaded by
    its entry point), pytest and pytest-trio."""
    sys.path.insert(0, str(ROOT / "tests"))
    import documented_project

    with tempfile.TemporaryDirectory(prefix="trio-gotask-plugin-") as tmp:
        wheels = Path(tmp) / "wheels"
        session.run("python", "-m", "pip", "wheel", "--no-deps", "-w", str(wheels), str(ROOT))
        (wheel,) = wheels.glob("*.whl")
        session.install(f"{wheel}[pytest]")
        project = Path(tmp) / "text-service"
        documented_project.write_project(project)
        session.chdir(project)
        # Its sidecar's builds go with the folder, not into the user's cache.
        session.run("pytest", env={"GOTASK_CACHE_DIR": str(Path(tmp) / "cache")})


@nox.session(python=False)
def install(session: nox.Session) -> None:
    """From `pip install` to a working sidecar, as a new user goes, outside the repository.

    A wheel is built, installed into a fresh venv in a temporary folder (not this session's), and
    used there exactly as docs/getting-started.md says: `trio-gotask new hello` writes a sidecar
    module wired to the Go library the wheel carries; `go vet`, `go build` and `go list` (what
    gopls loads) pass in it; a Trio program calls it through `open_gotask("hello")`, which builds
    it with nothing but the Go module proxy; `trio-gotask call` calls it from the shell."""
    with tempfile.TemporaryDirectory(prefix="trio-gotask-install-") as tmp:
        home = Path(tmp)
        wheels = home / "wheels"
        session.run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT))
        (wheel,) = wheels.glob("*.whl")
        venv = home / "venv"
        session.run(sys.executable, "-m", "venv", str(venv))
        python = str(venv / "bin" / "python")
        session.run(python, "-m", "pip", "install", "-q", str(wheel))
        work = home / "work"
        work.mkdir()
        session.chdir(work)
        # Nothing from this repository: no GOTASK_GO_LIBRARY, and builds cached in the folder.
        env = {"GOTASK_GO_LIBRARY": None, "GOTASK_CACHE_DIR": str(home / "cache"), "PYTHONPATH": None}
        session.run(str(venv / "bin" / "trio-gotask"), "new", "hello", env=env)
        go_mod = (work / "hello" / "go.mod").read_text()
        if str(venv) not in go_mod:
            session.error(f"hello/go.mod does not use the Go library in the installed wheel:\n{go_mod}")
        session.chdir(work / "hello")
        session.run("go", "vet", "./...", external=True, env=env)
        session.run("go", "build", "-o", os.devnull, ".", external=True, env=env)
        session.run("go", "list", "-deps", "-test", "./...", external=True, env=env, silent=True)
        session.chdir(work)
        program = (
            "import trio\n"
            "from trio_gotask import open_gotask\n"
            "async def main():\n"
            '    async with open_gotask("hello") as gt:\n'
            '        assert await gt.call("App.Hello", "world") == {"hello": "world"}\n'
            "trio.run(main)\n"
        )
        session.run(python, "-c", program, env=env)
        session.run(str(venv / "bin" / "trio-gotask"), "call", "hello", "App.Hello", '"again"', env=env)


@nox.session(python=DEFAULT_PYTHON)
def fuzz(session: nox.Session) -> None:
    """The client's decoders fuzzed for 20 s (tests/fuzz_decoders.py); `nox -s fuzz -- 600` for 600 s.

    Hypothesis makes byte streams of both wire formats (valid and mutated frames, the golden
    vectors, random bytes) and feeds them in random chunkings to `ClientProtocol` after a
    greeting (host calls on and off), to the greeting itself, and to `GoridgeProtocol`; they may
    raise nothing but ProtocolError, hand out only documented events for calls in flight, and
    hold no more memory than they were fed. Seeded with the run's hypothesis seed; arguments
    after the seconds go to the script (`--target goridge`)."""
    session.install("-e", ".[test]")
    seconds, *extra = session.posargs or ["20"]
    session.run("python", "tests/fuzz_decoders.py", seconds, "--seed", HYPOTHESIS_SEED, *extra)


@nox.session(python=False, name="pythons")
def report_pythons(session: nox.Session) -> None:
    """Fail if the default interpreter is missing; report the others that are."""
    if DEFAULT_PYTHON in _MISSING:
        session.error(f"the default Python {DEFAULT_PYTHON} was not found")
    for version in _MISSING:
        session.warn(f"Python {version} was not found on this machine: its tests did not run")


@nox.session(python=DEFAULT_PYTHON, reuse_venv=True)
def fast(session: nox.Session) -> None:
    """The deterministic tests alone, in seconds: no process, no Go; for the edit-and-test loop.

    The sans-I/O protocol, memory streams, fake sidecars on the autojump clock, the vectors.
    `python3 -m nox -R -s fast` reuses the environment without reinstalling."""
    session.install("-e", ".[test]")
    # One process: starting workers would take longer than these tests.
    session.run("pytest", *_pytest_args(session, select="fast", workers=False))


@nox.session(python=DEFAULT_PYTHON)
def stress(session: nox.Session) -> None:
    """Every test, three times, with a busy-loop process per core: nothing may depend on speed.

    Each run is the Go tests (with the race detector) and then the whole pytest suite, slow tests
    included. `nox -s stress -- idle` does the same on the idle machine; `runs=N` changes the
    count and `busy=N` the busy loops; other arguments go to pytest. Every run is made and
    reported before the session fails.
    """
    runs, busy, extra = 3, os.cpu_count() or 1, []
    for arg in session.posargs:
        if arg == "idle":
            busy = 0
        elif arg.startswith("runs="):
            runs = int(arg.removeprefix("runs="))
        elif arg.startswith("busy="):
            busy = int(arg.removeprefix("busy="))
        else:
            extra.append(arg)
    session.install("-e", ".[test]")
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    results = []
    try:
        for run in range(1, runs + 1):
            session.log(f"stress run {run} of {runs}: {busy} busy-loop processes on {os.cpu_count()} cores")
            seed = str(random.SystemRandom().randrange(1 << 32))
            outcome = "passed"
            for command, where in (
                (["go", "test", "-race", "-count=1", "./..."], GO),
                (["pytest", "-n", "auto", f"--hypothesis-seed={seed}", *extra], ROOT),
            ):
                session.chdir(where)
                try:
                    session.run(*command, external=command[0] == "go")
                except nox.command.CommandFailed:
                    outcome = f"FAILED in {command[0]}"
            results.append(f"run {run}: {outcome} (hypothesis seed {seed})")
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
    for line in results:
        session.log(line)
    passed = sum(": passed " in line for line in results)
    if passed < runs:
        session.error(f"{passed} of {runs} runs passed, {busy} busy loops")
    session.log(f"{passed} of {runs} runs passed, {busy} busy loops")


@nox.session(python=DEFAULT_PYTHON)
def bench(session: nox.Session) -> None:
    """The benchmark suite (not run by default): tables and plots in benchmarks/results/."""
    session.install("-e", ".", "trio-parallel", "matplotlib", "grpcio", "protobuf")
    session.run("python", "benchmarks/bench.py", *session.posargs)


@nox.session(python=DEFAULT_PYTHON)
def demo(session: nox.Session) -> None:
    """GoTask's classic App.Hi example through open_gotask."""
    session.install("-e", ".")
    session.run("python", "examples/hello.py")
