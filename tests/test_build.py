"""Building a sidecar from Go sources: every input `go build` reads is noticed, nothing stale runs.

Each case writes a real Go module into tmp_path, starts it through open_gotask, edits it, and starts
it again. The builds share Go's own build cache, so only the changed packages are compiled.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
from gomodule import LIBRARY, ROOT, write, write_module

from trio_gotask import SidecarError, _build, build_sidecar, open_gotask
from trio_gotask._build import KEEP_BUILDS, _settled

pytestmark = pytest.mark.slow  # Go builds of users' module layouts: the newest Python only

MAIN_GO = """package main

import "github.com/trio-gotask/trio-gotask/go/gotask"

type App struct{}

// Hi returns value(), which each test defines in value.go (or in files next to it).
func (a *App) Hi(_ string, r *string) error {
	*r = value()
	return nil
}

func main() {
	if err := gotask.Register(new(App)); err != nil {
		panic(err)
	}
	gotask.Run()
}
"""


def sidecar_module(folder: Path, value_go: str, *, requires: str = "", replaces: str = "") -> Path:
    """A sidecar module in ``folder``: main.go, the given value.go, go.mod using the library here."""
    return write_module(
        folder, {"main.go": MAIN_GO, "value.go": value_go}, requires=requires, replaces=replaces
    )


def library_module(folder: Path, value: str) -> Path:
    write(folder / "go.mod", "module example.com/lib\n\ngo 1.22\n")
    write(folder / "lib.go", f'package lib\n\nfunc Value() string {{ return "{value}" }}\n')
    return folder


USES_LIB = """package main

import "example.com/lib"

func value() string { return lib.Value() }
"""


def settle(folder: Path) -> None:
    """Date every file and folder under ``folder`` ten seconds back, as if written a while ago.

    A file written in the last instant is surveyed again on the next start (its stat cannot be
    trusted yet, see `_settled`); the tests that count Go runs start from settled files.
    """
    past = time.time_ns() - 10 * 10**9
    for path in [folder, *folder.rglob("*")]:
        os.utime(path, ns=(past, past))


async def hi(sidecar: Path) -> str:
    async with open_gotask(sidecar) as gt:
        reply = await gt.call("App.Hi", "")
    assert isinstance(reply, str)
    return reply


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("GOTASK_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def module_copy(tmp_path: Path) -> Path:
    """A private copy of the Go module of this repository."""
    shutil.copytree(LIBRARY, tmp_path / "go", ignore=shutil.ignore_patterns("testdata"))
    return tmp_path / "go" / "example"


@pytest.fixture
def go_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file listing every go command run from now on (GOTASK_GO names a wrapper that logs them)."""
    real_go = shutil.which("go")
    assert real_go is not None
    calls = tmp_path / "go-calls"
    calls.touch()
    wrapper = write(tmp_path / "bin" / "go", f'#!/bin/sh\necho "$1" >> "{calls}"\nexec "{real_go}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("GOTASK_GO", str(wrapper))
    return calls


def builds_of(cache: Path) -> list[Path]:
    return sorted(
        p for p in cache.glob("*/*/*") if p.is_file() and re.fullmatch("[0-9a-f]{32}", p.parent.name)
    )


async def test_build_is_cached_and_redone_when_sources_change(module_copy: Path) -> None:
    first = await build_sidecar(module_copy)
    assert await build_sidecar(module_copy) == first
    main = module_copy / "main.go"
    main.write_text(main.read_text().replace('"hello"', '"bonjour"'))
    second = await build_sidecar(module_copy)
    assert second != first
    async with open_gotask(module_copy) as gt:
        assert await gt.call("App.Hi", "x") == {"bonjour": "x"}


@pytest.mark.fault(fault="Go sources that do not compile", sees="SidecarError with the compiler's output")
async def test_build_failure_shows_compiler_output(module_copy: Path) -> None:
    (module_copy / "broken.go").write_text("package main\n\nfunc broken() { undefinedThing() }\n")
    with pytest.raises(SidecarError, match="go build' failed") as info:
        async with open_gotask(module_copy):
            pass
    assert "undefinedThing" in str(info.value)


async def test_missing_go_toolchain(module_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOTASK_GO", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SidecarError, match="needs the Go toolchain"):
        await build_sidecar(module_copy)


async def test_module_brought_in_by_a_local_replace(tmp_path: Path) -> None:
    lib = library_module(tmp_path / "lib", "one")
    app = sidecar_module(
        tmp_path / "app",
        USES_LIB,
        requires="example.com/lib v0.0.0",
        replaces="replace example.com/lib => ../lib\n",
    )
    assert await hi(app) == "one"
    library_module(lib, "two")
    assert await hi(app) == "two"


async def test_module_of_a_go_work_workspace(tmp_path: Path) -> None:
    lib = library_module(tmp_path / "lib", "one")
    app = sidecar_module(tmp_path / "app", USES_LIB)
    write(tmp_path / "go.work", "go 1.22\n\nuse (\n\t./app\n\t./lib\n)\n")
    assert await hi(app) == "one"
    library_module(lib, "two")
    assert await hi(app) == "two"


async def test_go_work_that_appears_later_in_a_parent_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    library_module(tmp_path / "lib-a", "from the replace")
    library_module(tmp_path / "lib-b", "from the workspace")
    app = sidecar_module(
        tmp_path / "app",
        USES_LIB,
        requires="example.com/lib v0.0.0",
        replaces="replace example.com/lib => ../lib-a\n",
    )
    assert await hi(app) == "from the replace"
    write(tmp_path / "go.work", "go 1.22\n\nuse ./app\n\nreplace example.com/lib => ./lib-b\n")
    assert await hi(app) == "from the workspace"
    monkeypatch.setenv("GOWORK", "off")
    assert await hi(app) == "from the replace"


async def test_embedded_file_and_a_file_added_to_an_embedded_folder(tmp_path: Path) -> None:
    app = sidecar_module(
        tmp_path / "app",
        """package main

import (
	"embed"
	"io/fs"
	"strings"
)

//go:embed data.txt
var data string

//go:embed static
var static embed.FS

func value() string {
	names, _ := fs.Glob(static, "static/*")
	return strings.TrimSpace(data) + ": " + strings.Join(names, " ")
}
""",
    )
    write(app / "data.txt", "one\n")
    write(app / "static" / "a.txt", "a\n")
    assert await hi(app) == "one: static/a.txt"
    write(app / "data.txt", "two\n")
    assert await hi(app) == "two: static/a.txt"
    write(app / "static" / "b.txt", "b\n")
    assert await hi(app) == "two: static/a.txt static/b.txt"


async def test_cgo_c_file_and_header(tmp_path: Path) -> None:
    app = sidecar_module(
        tmp_path / "app",
        """package main

// int c_value(void);
import "C"

import "strconv"

func value() string { return strconv.Itoa(int(C.c_value())) }
""",
    )
    write(app / "value.h", "#define BASE 10\n")
    write(app / "value.c", '#include "value.h"\n\nint c_value(void) { return BASE + 1; }\n')
    assert await hi(app) == "11"
    write(app / "value.c", '#include "value.h"\n\nint c_value(void) { return BASE + 2; }\n')
    assert await hi(app) == "12"
    write(app / "value.h", "#define BASE 20\n")
    assert await hi(app) == "22"


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the assembly is for amd64")
async def test_assembly_file(tmp_path: Path) -> None:
    app = sidecar_module(
        tmp_path / "app",
        """package main

import "strconv"

func asmValue() int64 // in value_amd64.s

func value() string { return strconv.FormatInt(asmValue(), 10) }
""",
    )
    asm = '#include "textflag.h"\n\nTEXT ·asmValue(SB), NOSPLIT, $0-8\n\tMOVQ $%d, ret+0(FP)\n\tRET\n'
    write(app / "value_amd64.s", asm % 1)
    assert await hi(app) == "1"
    write(app / "value_amd64.s", asm % 2)
    assert await hi(app) == "2"


async def test_build_tags_from_goflags_and_a_file_its_constraint_excluded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = sidecar_module(
        tmp_path / "app",
        "package main\n\nvar suffix string\n\nfunc value() string { return kind() + suffix }\n",
    )
    write(app / "plain.go", '//go:build !special\n\npackage main\n\nfunc kind() string { return "plain" }\n')
    write(
        app / "special.go", '//go:build special\n\npackage main\n\nfunc kind() string { return "special" }\n'
    )
    extra = write(app / "extra.go", '//go:build never\n\npackage main\n\nfunc init() { suffix = "+extra" }\n')
    assert await hi(app) == "plain"
    monkeypatch.setenv("GOFLAGS", "-buildvcs=false -tags=special")
    assert await hi(app) == "special"
    extra.write_text(extra.read_text().replace("//go:build never\n\n", ""))
    assert await hi(app) == "special+extra"


async def test_setting_written_by_go_env_w(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOENV", str(tmp_path / "go-env"))
    monkeypatch.delenv("GOFLAGS", raising=False)
    app = sidecar_module(tmp_path / "app", "package main\n\nfunc value() string { return kind() }\n")
    write(app / "plain.go", '//go:build !special\n\npackage main\n\nfunc kind() string { return "plain" }\n')
    write(
        app / "special.go", '//go:build special\n\npackage main\n\nfunc kind() string { return "special" }\n'
    )
    assert await hi(app) == "plain"
    go = shutil.which("go")
    assert go is not None
    await trio.run_process([go, "env", "-w", "GOFLAGS=-tags=special"])
    assert await hi(app) == "special"


async def test_nothing_changed_runs_no_go(tmp_path: Path, go_calls: Path) -> None:
    app = sidecar_module(tmp_path / "app", 'package main\n\nfunc value() string { return "one" }\n')
    settle(tmp_path)
    assert await hi(app) == "one"
    assert "build" in go_calls.read_text().split()
    before = go_calls.read_text()
    assert await hi(app) == "one"
    assert go_calls.read_text() == before  # not even go list
    # Touched but unchanged: Go is asked what the build reads, and nothing is rebuilt.
    os.utime(app / "value.go")
    assert await hi(app) == "one"
    assert "build" not in go_calls.read_text()[len(before) :].split()


async def test_build_logs_its_start_and_end(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_build, "NOTICE_AFTER", 3600.0)  # however slow this machine is today
    app = sidecar_module(tmp_path / "app", 'package main\n\nfunc value() string { return "one" }\n')
    with caplog.at_level(logging.INFO, logger="trio_gotask.build"):
        await build_sidecar(app)
    assert [r.name for r in caplog.records] == ["trio_gotask.build"] * 2
    start, end = (r.getMessage() for r in caplog.records)
    assert start == f"go build {app}: starting (a first build can take a minute)"
    assert re.fullmatch(rf"go build {re.escape(str(app))}: done in \d+\.\d s", end)


@pytest.mark.fault(
    fault="a first build that takes long (modules to download, a big dependency)",
    sees="a warning after 2 s, then every 10 s: time so far, the step, the modules downloaded",
)
async def test_a_slow_build_says_so_visibly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Any build is slow once the notice is due at once; the next report never comes.
    monkeypatch.setattr(_build, "NOTICE_AFTER", 0.0)
    monkeypatch.setattr(_build, "PROGRESS_EVERY", 3600.0)
    app = sidecar_module(tmp_path / "app", 'package main\n\nfunc value() string { return "one" }\n')
    with caplog.at_level(logging.WARNING, logger="trio_gotask.build"):
        await build_sidecar(app)
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 2, said
    # Its first report comes as go list starts, after go env: how long that took is this machine's.
    assert re.fullmatch(
        rf"building the sidecar in {re.escape(str(app))}: \d+ s so far, finding its modules; a first build "
        "fetches the modules it needs through the Go module proxy, later builds come from the cache",
        said[0],
    )
    assert re.fullmatch(rf"built the sidecar in {re.escape(str(app))} in \d+ s", said[1])


async def test_build_progress_counts_the_modules_go_downloads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    output = tmp_path / "list.err"
    output.write_text("go: downloading go.mongodb.org/mongo-driver/v2 v2.10.0\ngo: finding something\n")
    progress = _build._Progress(tmp_path)
    with caplog.at_level(logging.WARNING, logger="trio_gotask.build"):
        progress.report("list", output)
        output.write_text(output.read_text() + "go: downloading golang.org/x/text v0.41.0\n")
        progress.report("build", output)
    first, second = (r.getMessage() for r in caplog.records)
    assert ", 1 module(s) downloaded so far (the last: go.mongodb.org/mongo-driver/v2 v2.10.0);" in first
    assert second.endswith("compiling, 2 module(s) downloaded so far (the last: golang.org/x/text v0.41.0)")
    assert progress.next_report() == progress.started + _build.NOTICE_AFTER + 2 * _build.PROGRESS_EVERY


async def test_old_builds_are_pruned(tmp_path: Path, private_cache: Path) -> None:
    app = sidecar_module(tmp_path / "app", 'package main\n\nfunc value() string { return "v0" }\n')
    built = []
    for version in range(KEEP_BUILDS + 1):
        write(app / "value.go", f'package main\n\nfunc value() string {{ return "v{version}" }}\n')
        built.append(await build_sidecar(app))
    assert len(set(built)) == KEEP_BUILDS + 1
    assert builds_of(private_cache) == sorted(built[1:])
    assert await hi(app) == f"v{KEEP_BUILDS}"


@pytest.mark.fault(
    fault="a sidecar folder holding a Go package that is not main",
    sees="SidecarError naming the package found",
)
async def test_folder_that_holds_no_main_package(tmp_path: Path) -> None:
    lib = library_module(tmp_path / "lib", "one")
    with pytest.raises(SidecarError, match="holds the Go package 'lib', which is not a main package"):
        await build_sidecar(lib)


def tool_barrier(tmp_path: Path) -> tuple[dict[str, str], int]:
    """Settings under which go build reports the first tool it runs (through -toolexec) on the
    returned descriptor, a FIFO: by then the build is under way and its work folder exists. That
    tool never runs, and never ends until it is killed: the build stays under way."""
    fifo, once = tmp_path / "tool-started", tmp_path / "tool-started.once"
    os.mkfifo(fifo)
    toolexec = write(
        tmp_path / "bin" / "toolexec",
        f'#!/bin/sh\nmkdir "{once}" 2>/dev/null && echo started > "{fifo}" && exec sleep 3600\nexec "$@"\n',
    )
    toolexec.chmod(toolexec.stat().st_mode | stat.S_IXUSR)
    started = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # read-write: the writer never waits
    # A cold build cache, so that go build runs tools.
    return {"GOFLAGS": f"-buildvcs=false -toolexec={toolexec}", "GOCACHE": str(tmp_path / "gocache")}, started


@pytest.mark.fault(
    fault="Ctrl-C (SIGINT) during the first go build",
    sees="a bare KeyboardInterrupt; go killed, no temporary or partial file left",
)
@pytest.mark.parametrize("to", ["process group", "process"])
def test_ctrl_c_during_the_first_build_leaves_nothing(tmp_path: Path, private_cache: Path, to: str) -> None:
    """SIGINT from a terminal reaches the whole process group; from kill(1), the process only."""
    app = sidecar_module(tmp_path / "app", 'package main\n\nfunc value() string { return "one" }\n')
    temp = tmp_path / "tmp"
    temp.mkdir()
    settings, started = tool_barrier(tmp_path)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import logging, sys, trio, trio_gotask\n"
            "logging.basicConfig(level=logging.INFO)\n"
            "trio.run(trio_gotask.build_sidecar, sys.argv[1])\n",
            str(app),
        ],
        cwd=ROOT,
        env={**os.environ, **settings, "TMPDIR": str(temp)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    with child:
        assert child.stderr is not None
        stderr = b""
        try:
            while True:
                ready, _, _ = select.select([started, child.stderr.fileno()], [], [])
                if started in ready:
                    break
                chunk = os.read(child.stderr.fileno(), 1 << 16)
                if not chunk:
                    pytest.fail(f"the build ended before it ran a tool:\n{stderr.decode()}")
                stderr += chunk
        finally:
            if to == "process group":
                os.killpg(child.pid, signal.SIGINT)
            else:
                os.kill(child.pid, signal.SIGINT)
            os.close(started)
        stderr += child.stderr.read()
        assert child.wait() != 0
    text = stderr.decode()
    assert f"go build {app}: starting" in text, text
    assert text.rstrip().endswith("\nKeyboardInterrupt"), text
    assert "ExceptionGroup" not in text
    assert list(temp.iterdir()) == []
    assert [p for p in private_cache.rglob("*") if not p.is_dir() or p.name.startswith(".tmp-")] == []


@pytest.mark.fault(fault="the first go build cancelled", sees="Cancelled; go killed, nothing left behind")
async def test_cancelled_first_build_leaves_nothing(
    tmp_path: Path, private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = sidecar_module(tmp_path / "app", 'package main\n\nfunc value() string { return "one" }\n')
    temp = tmp_path / "tmp"
    temp.mkdir()
    settings, started = tool_barrier(tmp_path)
    for name, value in {**settings, "TMPDIR": str(temp)}.items():
        monkeypatch.setenv(name, value)
    finished = []
    try:
        async with trio.open_nursery() as nursery:

            async def build() -> None:
                await build_sidecar(app)
                finished.append(True)
                nursery.cancel_scope.cancel()

            nursery.start_soon(build)
            await trio.lowlevel.wait_readable(started)
            nursery.cancel_scope.cancel()
    finally:
        os.close(started)
    assert not finished
    assert list(temp.iterdir()) == []
    assert [p for p in private_cache.rglob("*") if not p.is_dir() or p.name.startswith(".tmp-")] == []


def test_a_stat_is_trusted_once_older_than_a_clock_tick() -> None:
    now = time.time_ns()
    assert _settled(None, now)
    assert _settled([1, now - 10**9 + 1, now - 10**9 + 1, 1], now)
    assert not _settled([1, now - 1, now - 1, 1], now)
    # Backdated (touch -d): its mtime is old, so a write now changes it.
    assert _settled([1, now - 10**9 + 1, now, 1], now)
    # Whole seconds: a filesystem that keeps no fractions needs two seconds to be sure.
    whole = now - now % 10**9 - 10**9
    assert not _settled([1, whole, whole, 1], now)
    assert _settled([1, whole - 2 * 10**9, whole - 2 * 10**9, 1], now)
