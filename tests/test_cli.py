"""The command line, run as a user runs it: ``python -m trio_gotask`` in a child process, against
real sidecars. Independent runs of one test go at once, since each spends most of its time
starting Python."""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import trio
from standalone import standalone
from timing import HANG

import trio_gotask
from trio_gotask import open_gotask
from trio_gotask._cli import main
from trio_gotask._cli._common import from_json, to_json
from trio_gotask._cli.call import Target, classify_target
from trio_gotask._cli.new import module_name
from trio_gotask._golib import (
    LIBRARY_MODULE,
    MIN_GO,
    LibraryMissing,
    find_library,
    go_mod_requirements,
    probe_module,
)

pytestmark = pytest.mark.slow  # the command line's child processes: the newest Python only

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "go" / "example"
LIBRARY = ROOT / "go"
# The folder holding the trio_gotask this process imported: this tree, or site-packages when the
# suite runs against an installed wheel. The command runs there, so that it imports the same one.
PACKAGE_PARENT = Path(trio_gotask.__file__).resolve().parent.parent


async def cli(
    *args: str, stdin: bytes = b"", env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m trio_gotask ARGS``, importing the trio_gotask that this process imported."""
    return await trio.run_process(
        [sys.executable, "-m", "trio_gotask", *args],
        stdin=stdin,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=PACKAGE_PARENT,
        env=env,
    )


@dataclass(frozen=True)
class Command:
    args: Sequence[str]
    stdin: bytes = b""


async def cli_all(*commands: Sequence[str] | Command, env: Mapping[str, str] | None = None) -> list[Run]:
    """Run several command lines at once; their results in order."""
    results: dict[int, Run] = {}

    async def one(i: int, command: Command) -> None:
        results[i] = Run(list(command.args), await cli(*command.args, stdin=command.stdin, env=env))

    async with trio.open_nursery() as nursery:
        for i, command in enumerate(commands):
            nursery.start_soon(one, i, command if isinstance(command, Command) else Command(command))
    return [results[i] for i in range(len(commands))]


class Run:
    def __init__(self, args: list[str], done: subprocess.CompletedProcess[bytes]) -> None:
        self.args = args
        self.status = done.returncode
        self.out = done.stdout.decode(errors="replace")
        self.err = done.stderr.decode()
        self.raw = done.stdout

    def json(self) -> Any:
        return json.loads(self.out)

    def __repr__(self) -> str:  # what a failed assertion shows
        return f"<{' '.join(self.args)}: exit {self.status}\nstdout: {self.out}\nstderr: {self.err}>"


async def test_call_prints_results_as_json(sidecar: str) -> None:
    hi, pipe, reversed_, binary, raw, echo, from_folder = await cli_all(
        ["call", sidecar, "App.Hi", '"Reasno"', "--transport", "tcp", "--pretty"],
        ["call", sidecar, "App.Add", '{"a": 1, "b": 2}', "--transport", "pipe"],
        ["call", sidecar, "App.Bytes", '{"$bytes": "abc"}'],
        ["call", sidecar, "App.Large", "3"],
        ["call", sidecar, "App.Large", "300", "--raw"],
        Command(
            ["call", sidecar, "App.Echo", "-"],
            stdin=b'{"when": {"$time": "2024-05-01T12:00:00Z"}, "n": [1, 2.5, null, true]}',
        ),
        ["call", os.path.relpath(EXAMPLE, PACKAGE_PARENT), "App.Hi", '"folder"'],
    )
    for run in (hi, pipe, reversed_, binary, raw, echo, from_folder):
        assert run.status == 0, run
    assert hi.out == '{\n  "hello": "Reasno"\n}\n'  # --pretty
    assert pipe.out == "3\n"
    assert reversed_.json() == {"$bytes": "cba"}
    assert binary.json() == {"$base64": "AAEC"}
    assert raw.raw == bytes(i % 256 for i in range(300))
    assert echo.json() == {"when": {"$time": "2024-05-01T12:00:00+00:00"}, "n": [1, 2.5, None, True]}
    assert from_folder.json() == {"hello": "folder"}


async def test_call_errors_say_what_happened(sidecar: str) -> None:
    fail, panic, slow, raw_map = await cli_all(
        ["call", sidecar, "App.Fail", '"boom"'],
        ["call", sidecar, "App.Panic", '"oops"'],
        ["call", sidecar, "App.Slow", "3600000", "--timeout", "0.2"],
        ["call", sidecar, "App.Hi", '"x"', "--raw"],
    )
    assert fail.status == 1, fail
    assert "App.Fail failed: error: boom" in fail.err, fail
    assert fail.out == ""
    assert panic.status == 1, panic
    assert "App.Panic failed: panic: oops\nmain.(*App).Panic" in panic.err, panic  # and its stack
    # Slow would take an hour: only --timeout can end it, and the exit status says so.
    assert slow.status == 1, slow
    assert "did not return within 0.2 s (--timeout)" in slow.err, slow
    assert raw_map.status == 1, raw_map
    assert "--raw writes a bytes or str result, and App.Hi returned dict" in raw_map.err, raw_map


async def test_call_connects_to_running_sidecars(sidecar: str, tmp_path: Path) -> None:
    secret = {"GOTASK_SECRET": "cli-secret"}
    path = str(tmp_path / "s.sock")
    async with (
        standalone(sidecar, "-address", path, env=secret),
        standalone(sidecar, "-address", "127.0.0.1:0", env=secret) as tcp,
    ):
        with_env = {**os.environ, **secret}
        by_path, by_port, both, timed_out = await cli_all(
            ["call", path, "App.Hi", '"unix"'],
            ["call", tcp.address, "App.Hi", '"tcp"'],
            ["call", f"{path},{tcp.address}", "App.Hi", '"both"'],
            ["call", tcp.address, "App.Slow", "3600000", "--timeout", "0.2"],
            env=with_env,
        )
        assert by_path.json() == {"hello": "unix"}, by_path
        assert by_port.json() == {"hello": "tcp"}, by_port
        assert both.json() == {"hello": "both"}, both
        assert timed_out.status == 1, timed_out
        # The timeout reached Go: the handler's context was cancelled.
        cancelled, wrong = await cli_all(
            ["call", tcp.address, "App.WaitCancelled", "1", "--timeout", f"{HANG:g}"],
            ["call", path, "App.Hi", '"x"', "--secret", "wrong"],
            env=with_env,
        )
        assert cancelled.status == 0, cancelled
        assert cancelled.json() >= 1
        assert wrong.status == 3, wrong
        assert "wrong secret" in wrong.err, wrong
        assert "--secret (or $GOTASK_SECRET)" in wrong.err, wrong


LIBRARY_ENV = {**os.environ, "GOTASK_GO_LIBRARY": str(LIBRARY)}


async def test_doctor_passes_here() -> None:
    [report] = await cli_all(["doctor", "--json"], env=LIBRARY_ENV)
    assert report.status == 0, report
    document = report.json()
    assert document["ok"] is True
    assert [c["name"] for c in document["checks"]] == [
        "Go",
        "Go library",
        "build",
        "unix transport",
        "tcp transport",
        "pipe transport",
    ]
    assert all(c["status"] == "ok" for c in document["checks"]), document
    assert set(document["versions"]) == {"Python", "trio", "msgpack", "trio-gotask", "Go", "OS"}
    assert document["versions"]["Go"].startswith("go1.")


async def test_doctor_says_what_to_fix(tmp_path: Path) -> None:
    go_dirs = {os.path.dirname(p) for p in [shutil.which("go")] if p}
    path = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep) if d not in go_dirs)
    env = {k: v for k, v in os.environ.items() if k != "GOTASK_GO"}
    assert shutil.which("go", path=path) is None
    no_go, no_library = await cli_all(
        ["doctor", "--go-library", str(LIBRARY)],
        ["doctor", "--go-library", str(tmp_path)],
        env={**env, "PATH": path},
    )
    assert no_go.status == 1, no_go
    assert "FAIL  Go               no go command on PATH" in no_go.out, no_go
    assert "install Go 1.22 or newer" in no_go.out, no_go
    assert "skip  build" in no_go.out, no_go
    assert "could not run" in no_go.out, no_go
    assert no_library.status == 1, no_library
    assert f"holds no go.mod of the module {LIBRARY_MODULE}" in no_library.out, no_library
    assert "fix: point --go-library at the go folder of a clone" in no_library.out, no_library


async def test_bench_measures_each_transport() -> None:
    table, document = await cli_all(
        ["bench", "--seconds", "0.05", "--callers", "4", "--go-library", str(LIBRARY)],
        ["bench", "--seconds", "0.05", "--callers", "2,4", "--transport", "pipe", "--json"],
        env=LIBRARY_ENV,
    )
    assert table.status == 0, table
    rows = [
        line.split()[0]
        for line in table.out.splitlines()
        if line.split()[:1] in (["unix"], ["tcp"], ["pipe"])
    ]
    assert rows == ["unix", "tcp", "pipe"], table
    assert "[6/6] pipe, 4 callers:" in table.err, table  # progress, one line per step
    assert document.status == 0, document
    results = document.json()
    [pipe] = results["results"]
    assert pipe["transport"] == "pipe"
    assert set(pipe["calls_per_second"]) == {"1", "2", "4"}
    assert pipe["p50_us"] <= pipe["p99_us"]


async def test_bench_measures_a_running_sidecar_where_it_is(sidecar: str, tmp_path: Path) -> None:
    secret = {"GOTASK_SECRET": "bench-secret"}
    async with standalone(sidecar, "-address", "127.0.0.1:0", env=secret) as tcp:
        [run] = await cli_all(
            ["bench", "--seconds", "0.05", "--callers", "4", "--sidecar", tcp.address, "--json"],
            env={**os.environ, **secret},
        )
    assert run.status == 0, run
    [result] = run.json()["results"]
    assert result["transport"] == tcp.address  # measured once, over its own address
    assert set(result["calls_per_second"]) == {"1", "4"}


async def test_bench_with_a_failing_method(sidecar: str) -> None:
    [run] = await cli_all(
        ["bench", "--seconds", "0.05", "--sidecar", sidecar, "--method", "App.Fail", "--arg", '"no"']
    )
    assert run.status == 1, run
    assert "App.Fail failed: error: no" in run.err


# -- in this process: the command line's own checks, and the pieces -------------------------------


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`main` here, for what fails or ends before any sidecar is started (nothing global changes)."""
    try:
        status = main(list(args))
    except SystemExit as exc:  # argparse's own: --help, an unknown option
        assert isinstance(exc.code, int)
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


def test_help_for_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    helps = {
        command: run_main(capsys, *command, "--help")
        for command in [(), ("call",), ("doctor",), ("bench",), ("new",)]
    }
    for status, out, _ in helps.values():
        assert status == 0
        assert "exit status:" in out
    top, call, doctor, bench, new = (out for _, out, _ in helps.values())
    assert all(name in top for name in ("call", "doctor", "bench", "new"))
    assert "--module" in new
    assert "--go-library" in new
    for option in (
        "TARGET",
        "METHOD",
        "JSON_ARG",
        "--timeout",
        "--secret",
        "--tls-ca",
        "--transport",
        "--raw",
    ):
        assert option in call
    assert "--go-library" in doctor
    assert "--json" in doctor
    assert "--seconds" in bench
    assert "--sidecar" in bench


def test_command_line_mistakes(capsys: pytest.CaptureFixture[str], sidecar: str, tmp_path: Path) -> None:
    plain = tmp_path / "not-executable"
    plain.write_text("")
    for args, says in [
        (
            ["call", sidecar, "App.Hi", "Reasno"],
            """JSON_ARG is not JSON: Expecting value at line 1 column 1; a string is quoted in JSON: '"Reasno"'""",
        ),
        (["call", sidecar, "App.Hi", '{"$base64": "!"}'], "which is not base64"),
        (["call", sidecar, "Hi"], "METHOD 'Hi' is not Service.Method"),
        (["call", str(plain), "App.Hi"], "is a file but not an executable"),
        (["call", str(tmp_path / "gone.sock"), "App.Hi"], "no folder, executable or socket is named"),
        (["call", sidecar, "App.Hi", "--secret", "s"], "--secret: for connecting to a running sidecar"),
        (["call", "localhost:6001", "App.Hi", "--transport", "tcp"], "--transport is for starting a sidecar"),
        (["call", "localhost:6001", "App.Hi", "--server-hostname", "a"], "add --tls or --tls-ca FILE"),
        (["call", "localhost:6001", "App.Hi", "--tls-ca", str(tmp_path / "none.pem")], "--tls-ca"),
        (["call", sidecar, "App.Hi", "--timeout", "0"], "not a number of seconds above 0"),
        (["call", sidecar], "the following arguments are required: METHOD"),
        (["bench", "--arg", "x"], "--arg is not JSON"),
        (["bench", "--callers", "0"], "between 1 and 10000"),
        (
            ["bench", "--sidecar", "localhost:6001", "--transport", "tcp"],
            "--transport is for starting a sidecar",
        ),
        (["bench", "--secret", "s"], "--secret: for connecting to a running sidecar"),
        (["call", sidecar, "App.Hi", "--transport", "tcp", "--transport", "pipe"], "give one"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ]:
        status, out, err = run_main(capsys, *args)
        assert (status, out) == (2, ""), (args, err)
        assert says in err, (args, err)


def test_json_out() -> None:
    when = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    value = {1: b"text\n", "b": b"\xff\x00", "t": when, "l": (None, 1.5), b"k": [b"\x1b[31m"]}
    assert to_json(value) == {
        "1": {"$bytes": "text\n"},
        "b": {"$base64": "/wA="},
        "t": {"$time": "2024-05-01T12:00:00+00:00"},
        "l": [None, 1.5],
        '{"$bytes":"k"}': [{"$base64": "G1szMW0="}],  # an escape sequence is not printable
    }
    # A map of the reply that looks like a marker is wrapped, so a script can always tell.
    assert to_json({"$bytes": "x"}) == {"$map": {"$bytes": "x"}}
    assert to_json({"$map": {"$time": 1}}) == {"$map": {"$map": {"$map": {"$time": 1}}}}
    assert to_json({"$bytes": "x", "y": 1}) == {"$bytes": "x", "y": 1}  # two keys: no marker
    assert to_json([math.nan, math.inf, -math.inf, 1.5]) == [
        {"$float": "NaN"},
        {"$float": "Infinity"},
        {"$float": "-Infinity"},
        1.5,
    ]
    # Every value goes out as JSON proper, and comes back as itself.
    values: list[object] = [
        {"$bytes": "x"},
        {"$map": {"$bytes": b"y"}},
        [math.inf, b"\xff", {"$float": "NaN"}],
    ]
    for item in values:
        text = json.dumps(to_json(item), allow_nan=False)
        assert from_json(text) == item
    assert math.isnan(from_json('{"$float": "NaN"}'))


def test_json_in() -> None:
    assert from_json('{"$base64": "/wA="}') == b"\xff\x00"
    assert from_json('[{"$bytes": "é"}]') == ["é".encode()]
    assert from_json('{"$time": "2024-05-01T12:00:00Z"}') == datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    assert from_json('{"$bytes": "x", "other": 1}') == {"$bytes": "x", "other": 1}  # not a marker
    for bad, says in [
        ('{"$base64": "!!"}', "not base64"),
        ('{"$time": "2024-05-01T12:00:00"}', "no time zone"),
        ('{"$time": "yesterday"}', "not an ISO 8601 time"),
        ('{"$float": "1e999"}', 'use "NaN", "Infinity" or "-Infinity"'),
        ('{"$repr": "<object>"}', "cannot be sent back"),
        ("{", "is not JSON"),
    ]:
        with pytest.raises(ValueError, match=says):
            from_json(bad)


def test_targets(tmp_path: Path, sidecar: str) -> None:
    assert classify_target(str(EXAMPLE)) == Target(start=str(EXAMPLE))
    assert classify_target(sidecar) == Target(start=sidecar)
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(tmp_path / "s.sock"))
        assert classify_target(str(tmp_path / "s.sock")) == Target(connect=str(tmp_path / "s.sock"))
    assert classify_target("localhost:6001") == Target(connect="localhost:6001")
    assert classify_target("[::1]:6001") == Target(connect="[::1]:6001")
    assert classify_target("dns:sidecars.test:6001") == Target(connect="dns:sidecars.test:6001")
    assert classify_target("a:1, /b.sock") == Target(connect=["a:1", "/b.sock"])
    (tmp_path / "plain").write_text("")
    for bad, says in [
        (str(tmp_path / "plain"), "not an executable"),
        (str(tmp_path / "missing.sock"), "no folder, executable or socket"),
        ("a:1,", "empty address"),
        ("::1:6001", "in brackets"),
    ]:
        with pytest.raises(ValueError, match=says):
            classify_target(bad)


def test_probe_module_uses_the_library() -> None:
    version, requires = go_mod_requirements((ROOT / "go" / "go.mod").read_text())
    assert tuple(map(int, version.split(".")[:2])) == MIN_GO  # MIN_GO is go.mod's go line
    assert ("github.com/vmihailenco/msgpack/v5", "v5.4.1") in requires
    if PACKAGE_PARENT == ROOT:  # a source tree: the library is found beside the package
        assert find_library(None) == LIBRARY
    else:  # a wheel, which carries the library's source
        carried = PACKAGE_PARENT / "trio_gotask" / "go"
        assert find_library(None) == carried
        assert (carried / "gotask" / "server.go").read_text() == (
            LIBRARY / "gotask" / "server.go"
        ).read_text()
        assert not list(carried.rglob("*_test.go"))
    library = find_library(str(LIBRARY))
    files = probe_module(library)
    assert f"replace {LIBRARY_MODULE} => {library}\n" in files["go.mod"]
    assert "\tgithub.com/vmihailenco/msgpack/v5 v5.4.1 // indirect\n" in files["go.mod"]
    assert files["go.sum"] == (library / "go.sum").read_text()
    assert find_library(str(ROOT)) == library  # a clone's root will do
    with pytest.raises(LibraryMissing, match=r"holds no go\.mod"):
        find_library(str(ROOT / "docs"))


async def test_new_writes_a_sidecar_module_that_builds_and_answers(tmp_path: Path) -> None:
    hello = tmp_path / "my hello"
    wrote = await cli("new", str(hello))
    assert wrote.returncode == 0, wrote.stderr
    assert 'async with open_gotask("' in wrote.stdout.decode()
    assert sorted(p.name for p in hello.iterdir()) == ["go.mod", "go.sum", "main.go"]
    go_mod = (hello / "go.mod").read_text()
    assert go_mod.startswith("module my-hello\n")
    assert f"replace {LIBRARY_MODULE} => " in go_mod
    for command in (["go", "vet", "./..."], ["gofmt", "-l", "."], ["go", "list", "-deps", "-test", "./..."]):
        done = await trio.run_process(
            command, cwd=hello, capture_stdout=True, capture_stderr=True, check=False
        )
        assert done.returncode == 0, (command, done.stderr)
        assert command[0] != "gofmt" or done.stdout == b""
    async with open_gotask(hello) as gt:
        assert await gt.call("App.Hello", "world") == {"hello": "world"}

    again, elsewhere, bad = await cli_all(
        ["new", str(hello)], ["new", str(tmp_path)], ["new", str(tmp_path / "x"), "--module", "no spaces"]
    )
    assert again.status == 1
    assert f"go mod edit -require={LIBRARY_MODULE}@v0.0.0 -replace={LIBRARY_MODULE}=" in again.err
    assert elsewhere.status == 1
    assert "is not empty" in elsewhere.err
    assert bad.status == 2
    assert "'no spaces' is not a Go module path" in bad.err


def test_module_names_from_folders() -> None:
    assert module_name(Path("/a/hello")) == "hello"
    assert module_name(Path("/a/my sidecar!")) == "my-sidecar"
    assert module_name(Path("/a/_x")) == "x"
    assert module_name(Path("/a/~~")) == "sidecar"


def test_go_mod_forms() -> None:
    text = (
        "module m // c\n\ngo 1.23.1\n\nrequire a.test/x v1.0.0\nrequire (\n\tb.test/y v2.1.0 // indirect\n)\n"
    )
    text += "exclude (\n\tc.test/z v0.1.0\n)\nreplace d.test/w => ../w\n"
    assert go_mod_requirements(text) == ("1.23.1", [("a.test/x", "v1.0.0"), ("b.test/y", "v2.1.0")])


def test_console_script_is_installed() -> None:
    """The package as installed (editable, or the wheel of nox -s compiled) declares the command."""
    (script,) = importlib.metadata.entry_points(group="console_scripts", name="trio-gotask")
    assert script.value == "trio_gotask._cli:main"
    assert script.load() is main
