"""``trio-gotask doctor``: whether this machine can build and run sidecars."""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, Literal

import msgpack
import trio

from .. import __version__
from .._address import TRANSPORTS, Transport
from .._build import find_go
from .._client import GoTask, open_gotask
from .._errors import GoTaskError, MethodNotFound, RemoteError
from .._golib import LIBRARY_ENV, MIN_GO, LibraryMissing, build_probe, find_library
from ._common import EXIT_FAILED, EXIT_OK, add_command, configure_logging, json_bytes, write_stdout

Status = Literal["ok", "failed", "skipped"]


@dataclass(frozen=True)
class Check:
    """One line of doctor's report."""

    name: str
    status: Status
    detail: str
    fix: str = ""


def add_doctor(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = add_command(
        commands,
        "doctor",
        common,
        "check that this machine can build and call sidecars",
        "Find Go, build a small sidecar with the Go library, and call it over each transport "
        "(unix, tcp, pipe); print the versions in use and what to fix.",
        """\
The Go library comes from --go-library, else $GOTASK_GO_LIBRARY, else the copy this package
carries, else the go folder beside it (a clone of the repository, or an editable install of one).
Go is $GOTASK_GO, else go on PATH.

exit status:
  0    every check passed
  1    a check failed or could not run: the report says what to fix
  2    the command line is wrong""",
    )
    parser.add_argument(
        "--go-library",
        metavar="DIR",
        help=f"the Go library's folder (go/ in a clone; default: ${LIBRARY_ENV})",
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON document")
    parser.set_defaults(run=_run_doctor)


def _run_doctor(options: argparse.Namespace) -> int:
    show = None if options.json else _print_check
    configure_logging(options.verbose - options.quiet)
    found, checks = trio.run(_doctor, options.go_library, show)
    passed = all(check.status == "ok" for check in checks)
    if options.json:
        report = {"ok": passed, "versions": found, "checks": [asdict(c) for c in checks]}
        write_stdout(json_bytes(report, pretty=True))
    else:
        lines = ["", "versions:"]
        lines += [f"  {name:<12} {value}" for name, value in found.items()]
        failed = sum(c.status == "failed" for c in checks)
        skipped = sum(c.status == "skipped" for c in checks)
        if failed or skipped:
            counts = f"{failed} of {len(checks)} checks failed" + (
                f", {skipped} could not run" if skipped else ""
            )
            lines += ["", f"{counts}: see 'fix' above."]
        else:
            lines += ["", f"All {len(checks)} checks passed."]
        write_stdout(("\n".join(lines) + "\n").encode("utf-8"))
    return EXIT_OK if passed else EXIT_FAILED


def _print_check(check: Check) -> None:
    mark = {"ok": "ok  ", "failed": "FAIL", "skipped": "skip"}[check.status]
    text = f"{mark}  {check.name:<16} {check.detail}".replace("\n", "\n" + " " * 23)
    if check.fix:
        text += f"\n{'':22} fix: {check.fix}"
    write_stdout((text + "\n").encode("utf-8"))


def versions(go: str) -> dict[str, str]:
    """The versions doctor and bench print."""
    return {
        "Python": f"{platform.python_version()} ({platform.python_implementation()}, {sys.executable})",
        "trio": trio.__version__,
        "msgpack": ".".join(map(str, msgpack.version)),
        "trio-gotask": f"{__version__} ({Path(__file__).resolve().parent})",
        "Go": go,
        "OS": f"{platform.platform()} ({platform.machine()})",
    }


async def _doctor(
    library_option: str | None, show: Callable[[Check], None] | None
) -> tuple[dict[str, str], list[Check]]:
    checks: list[Check] = []

    def record(check: Check) -> None:
        checks.append(check)
        if show is not None:
            show(check)

    go, check = await check_go()
    found = versions(go or "not found")
    if show is not None:
        write_stdout(b"checks:\n")
    record(check)

    library: Path | None = None
    try:
        library = find_library(library_option)
    except LibraryMissing as exc:
        record(Check("Go library", "failed", str(exc), exc.fix))
    else:
        record(Check("Go library", "ok", str(library)))

    binary: Path | None = None
    if go is None or library is None:
        record(Check("build", "skipped", "needs Go and the Go library: see above"))
    else:
        started = time.monotonic()
        try:
            binary = await build_probe(library)
        except (GoTaskError, OSError) as exc:
            record(
                Check(
                    "build",
                    "failed",
                    f"could not build the probe sidecar: {exc}",
                    "Go's output says what failed; a first build downloads the library's "
                    "requirements through the Go module proxy, so check GOPROXY and the network",
                )
            )
        else:
            record(Check("build", "ok", f"{binary} ({time.monotonic() - started:.1f} s)"))

    for transport in TRANSPORTS:
        name = f"{transport} transport"
        if binary is None:
            record(Check(name, "skipped", "needs the probe sidecar: see build"))
        else:
            record(await _check_transport(binary, transport))
    return found, checks


async def check_go() -> tuple[str | None, Check]:
    """Go's version ("go1.23.4 linux/amd64", or None if there is no Go), and the check of it."""
    minimum = ".".join(map(str, MIN_GO))
    try:
        go = find_go()
    except GoTaskError as exc:
        if os.environ.get("GOTASK_GO"):
            return None, Check("Go", "failed", str(exc), "unset GOTASK_GO to use the go on PATH")
        return None, Check(
            "Go",
            "failed",
            "no go command on PATH",
            f"install Go {minimum} or newer (https://go.dev/dl/, or your package manager's golang "
            "package), or set GOTASK_GO to the go binary",
        )
    try:
        with trio.fail_after(60):
            done = await trio.run_process(
                [go, "version"], capture_stdout=True, capture_stderr=True, check=False
            )
    except (OSError, trio.TooSlowError) as exc:
        return None, Check("Go", "failed", f"{go} version: {exc or 'no answer in 60 s'}", "reinstall Go")
    output = done.stdout.decode(errors="replace").strip()
    match = re.search(r"\bgo(\d+)\.(\d+)(\S*)(?: (\S+))?", output)
    if done.returncode != 0 or match is None:
        error = (done.stderr.decode(errors="replace") or output).strip()
        return None, Check(
            "Go", "failed", f"'{go} version' failed: {error}", f"reinstall Go {minimum} or newer"
        )
    version = f"go{match[1]}.{match[2]}{match[3]}" + (f" {match[4]}" if match[4] else "")
    if (int(match[1]), int(match[2])) < MIN_GO:
        return version, Check(
            "Go",
            "failed",
            f"{version} at {go} is older than Go {minimum}, which the Go library needs",
            f"install Go {minimum} or newer (https://go.dev/dl/), or set GOTASK_GO to a newer go binary",
        )
    return version, Check("Go", "ok", f"{version} at {go}")


_PROBE_VALUE: Final = {
    "text": "héllo, 世界",
    "int": -(2**63),
    "uint": 2**64 - 1,
    "float": 0.1,
    "bytes": bytes(range(256)),
    "list": [None, True, False, []],
    "map": {"nested": {"x": 1.5}},
}


_TRANSPORT_FIX: Final[dict[str, str]] = {
    "unix": "the socket lives in a fresh folder under TMPDIR: it must be writable, and its path short "
    "(under about 80 bytes)",
    "tcp": "the sidecar listens on 127.0.0.1 on a free port: loopback must work, and no firewall may "
    "refuse local connections",
    "pipe": "frames go over the sidecar's stdin and stdout: see the error",
}


async def _check_transport(binary: Path, transport: Transport) -> Check:
    name = f"{transport} transport"
    started = time.perf_counter()
    try:
        with trio.fail_after(30):
            async with open_gotask(binary, transport=transport) as gotask:
                echoed = await gotask.call("App.Echo", _PROBE_VALUE)
                missing = await _missing_method(gotask)
    except trio.TooSlowError:
        return Check(name, "failed", "no handshake or no reply within 30 s", _TRANSPORT_FIX[transport])
    except GoTaskError as exc:
        return Check(name, "failed", str(exc), _TRANSPORT_FIX[transport])
    elapsed = (time.perf_counter() - started) * 1000
    if echoed != _PROBE_VALUE:
        return Check(
            name,
            "failed",
            f"App.Echo returned {echoed!r}, not what was sent",
            "the sidecar and this package disagree on the wire format: rebuild against the same version",
        )
    if missing:
        return Check(name, "failed", missing, "rebuild the Go library and this package from one version")
    return Check(name, "ok", f"handshake, round trip and an error from Go in {elapsed:.0f} ms")


async def _missing_method(gotask: GoTask) -> str:
    """Calls a method that does not exist: "" if Go said so as it should, else what happened."""
    try:
        result = await gotask.call("App.NoSuchMethod")
    except MethodNotFound:
        return ""
    except RemoteError as exc:
        return f"App.NoSuchMethod failed with {exc.type!r}, not not_found: {exc}"
    return f"App.NoSuchMethod returned {result!r} instead of failing with not_found"
