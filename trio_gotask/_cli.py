"""The command line, ``trio-gotask`` or ``python -m trio_gotask`` (docs/cli.md).

``call`` calls one method of a sidecar and prints the result as JSON, ``doctor`` checks that this
machine can build and run sidecars, ``bench`` measures calls on each transport. Exit status: 0
done, 1 the call or a check failed, 2 the command line is wrong, 3 the sidecar could not be
started or reached (or stopped serving), 130 interrupted.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import logging
import os
import platform
import re
import ssl
import stat
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import msgpack
import trio

from . import __version__
from ._address import TRANSPORTS, Transport, parse_address
from ._build import build_sidecar, cache_dir, find_go
from ._client import GoTask, connect_gotask, open_gotask
from ._dialect import DIALECTS, SECRET_ENV
from ._errors import GoTaskError, MethodNotFound, RemoteError
from ._names import dns_name

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNAVAILABLE: Final = 3
EXIT_INTERRUPTED: Final = 130

MIN_GO: Final = (1, 22)
"""The oldest Go that builds the Go library (the ``go`` line of go/go.mod; a test keeps them equal)."""
LIBRARY_MODULE: Final = "github.com/trio-gotask/trio-gotask/go"
LIBRARY_ENV: Final = "GOTASK_GO_LIBRARY"
CLONE_URL: Final = "https://github.com/trio-gotask/trio-gotask"
PROBE_NAME: Final = "trio-gotask-probe"
"""The sidecar ``doctor`` and ``bench`` build: its folder under the cache, and its binary's name."""

_EXIT_STATUS_HELP: Final = """\
exit status:
  0    done
  1    the call failed: an error from Go, or --timeout passed
  2    the command line is wrong (an unknown option, JSON_ARG that is not JSON...)
  3    the sidecar could not be built, started or reached, or it stopped serving
  130  interrupted (Ctrl-C)"""

_TOP_EXIT_STATUS_HELP: Final = """\
exit status:
  0    done
  1    the call failed (call, bench), or a check did not pass (doctor)
  2    the command line is wrong
  3    the sidecar could not be built, started or reached, or it stopped serving
  130  interrupted (Ctrl-C)"""

T = TypeVar("T")


class _Exit(Exception):
    """Ends the command with ``status``, after printing ``message`` on stderr."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Usage(Exception):
    """The command line is wrong (found after argparse read it): exit 2 with this message."""


def main(argv: Sequence[str] | None = None, *, prog: str = "trio-gotask") -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``) and return its exit status."""
    parser = _parser(prog)
    options = parser.parse_args(argv)
    command: argparse.ArgumentParser = options.command_parser
    try:
        status: int = options.run(options)
    except _Usage as exc:
        print(f"{command.prog}: error: {exc}\n(run '{command.prog} --help' for help)", file=sys.stderr)
        status = EXIT_USAGE
    except _Exit as exc:
        print(f"{command.prog}: {exc}", file=sys.stderr)
        status = exc.status
    except KeyboardInterrupt:
        print(f"{command.prog}: interrupted", file=sys.stderr)
        status = EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of stdout went away (`| head`): not worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = EXIT_FAILED
    return status


# -- the parser --------------------------------------------------------------------------------------


def _parser(prog: str) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="say more: -v shows the library's info messages, -vv its debug messages",
    )
    common.add_argument(
        "-q",
        "--quiet",
        action="count",
        default=0,
        help="say less: no build messages, no progress, only errors",
    )
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Call Go sidecars from the shell, check a machine, measure calls.",
        epilog=f"Run '{prog} COMMAND --help' for a command's options. Documentation: docs/cli.md.\n\n"
        + _TOP_EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_call(commands, common)
    _add_doctor(commands, common)
    _add_bench(commands, common)
    return parser


def _command(
    commands: Any, name: str, common: argparse.ArgumentParser, summary: str, description: str, epilog: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog=epilog,
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(command_parser=parser)
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def _callers(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of numbers such as 16,128") from None
    if not levels or min(levels) < 1 or max(levels) > 10_000:
        raise argparse.ArgumentTypeError(f"{text!r}: each number of callers must be between 1 and 10000")
    return sorted(set(levels))


# -- JSON in and out ---------------------------------------------------------------------------------

_WHITESPACE: Final = str.maketrans("", "", "\t\n\r")


def to_json(value: object) -> object:
    """``value``, as the sidecar's reply decoded it, made into something `json.dumps` writes.

    Bytes become ``{"$bytes": text}`` when they are UTF-8 text that prints (tabs and newlines
    allowed), else ``{"$base64": ...}``; a time becomes ``{"$time": ISO 8601}``; map keys that are
    not strings are written as their JSON text (``1`` as ``"1"``, as `json` does).
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            if text.translate(_WHITESPACE).isprintable():
                return {"$bytes": text}
        return {"$base64": base64.b64encode(data).decode("ascii")}
    if isinstance(value, datetime):
        return {"$time": value.isoformat()}
    if isinstance(value, dict):
        return {_key_text(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return {"$repr": repr(value)}


def _key_text(key: object) -> str:
    if isinstance(key, str):
        return key
    return json.dumps(to_json(key), ensure_ascii=False, separators=(",", ":"))


def from_json(text: str) -> Any:
    """The value a JSON argument stands for: JSON, where an object whose one key is ``$bytes``
    (UTF-8 text), ``$base64`` or ``$time`` (ISO 8601 with a time zone) stands for bytes or a
    time. Raises `ValueError` saying what is wrong."""
    try:
        return json.loads(text, object_hook=_marked)
    except json.JSONDecodeError as exc:
        hint = ""
        word = text.strip()
        bare = word and word[0] not in '{["-0123456789' and word not in ("true", "false", "null")
        if bare and len(word) <= 60 and not any(c in word for c in "\"'\n"):
            hint = f"; a string is quoted in JSON: '\"{word}\"'"
        raise ValueError(f"is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}{hint}") from None


def _marked(obj: dict[str, Any]) -> Any:
    if len(obj) != 1:
        return obj
    [(key, value)] = obj.items()
    if not isinstance(value, str) or key not in ("$bytes", "$base64", "$time"):
        return obj
    if key == "$bytes":
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f'holds {{"$bytes": ...}} with text that is not Unicode: {exc}') from None
    if key == "$base64":
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error as exc:
            raise ValueError(f'holds {{"$base64": {value[:40]!r}}}, which is not base64: {exc}') from None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f'holds {{"$time": {value!r}}}: not an ISO 8601 time, such as 2024-05-01T12:00:00Z'
        ) from None
    if when.tzinfo is None:
        raise ValueError(f'holds {{"$time": {value!r}}}, which has no time zone: end it with Z or +02:00')
    return when


def _write_stdout(data: bytes) -> None:
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _dumps(value: object, *, pretty: bool = False) -> bytes:
    return (json.dumps(value, ensure_ascii=False, indent=2 if pretty else None) + "\n").encode("utf-8")


# -- call --------------------------------------------------------------------------------------------


def _add_call(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = _command(
        commands,
        "call",
        common,
        "call one method of a sidecar and print the result as JSON",
        "Call METHOD of the sidecar TARGET with JSON_ARG, and print the result as JSON on stdout.",
        """\
TARGET is read in this order:
  an existing folder        a Go main package: built (cached), started, stopped after the call
  an existing executable    a built sidecar: started, stopped after the call
  an existing socket        a running sidecar's Unix socket: connected to
  a,b,c                     several running sidecars (connect_gotask with a list)
  dns:host:port             every address the DNS name resolves to
  host:port, [::1]:port     a running sidecar over TCP
Anything else is an error: a socket that does not exist yet cannot be told from a typo.

JSON_ARG is the argument as JSON ('-' reads it from stdin); omitted, the method gets nil.
Bytes are {"$base64": "AAEC"} or {"$bytes": "UTF-8 text"}, a time {"$time": "2024-05-01T12:00:00Z"}.
The result is printed the same way: bytes as {"$bytes": text} when they are printable UTF-8,
else {"$base64": ...}; times as {"$time": ...}. --raw writes a bytes or str result as it is.

examples:
  trio-gotask call go/example App.Hi '"Reasno"'
  trio-gotask call ./sidecar App.Add '{"a": 1, "b": 2}' --transport pipe
  GOTASK_SECRET=s3cret trio-gotask call 10.0.0.2:6001 App.Hi '"x"' --tls-ca ca.pem
  trio-gotask call /run/app.sock App.Large 1000 --raw > out.bin

"""
        + _EXIT_STATUS_HELP,
    )
    parser.add_argument(
        "target", metavar="TARGET", help="the sidecar to start, or the address of a running one"
    )
    parser.add_argument("method", metavar="METHOD", help="the method to call, Service.Method (App.Hi)")
    parser.add_argument(
        "json_arg", metavar="JSON_ARG", nargs="?", help="the argument, as JSON; '-' reads it from stdin"
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="cancel the call after this long (the Go handler's context is cancelled too); exit 1",
    )
    parser.add_argument(
        "--protocol",
        choices=tuple(DIALECTS),
        default="gotask",
        help="goridge: a sidecar built with the original GoTask library (default: gotask)",
    )
    start = parser.add_argument_group("starting a sidecar")
    start.add_argument("--transport", choices=TRANSPORTS, help="how to reach it (default: unix)")
    remote = parser.add_argument_group("connecting to a running sidecar")
    remote.add_argument(
        "--secret",
        help=f"the sidecar's GOTASK_SECRET (default: ${SECRET_ENV}; the variable keeps it out of ps)",
    )
    remote.add_argument("--tls", action="store_true", help="speak TLS, trusting the system's CAs")
    remote.add_argument(
        "--tls-ca", metavar="FILE", help="speak TLS, trusting the CA certificates in FILE (PEM)"
    )
    remote.add_argument(
        "--server-hostname", metavar="NAME", help="the name the certificate must hold (default: the host)"
    )
    output = parser.add_argument_group("output")
    output.add_argument("--raw", action="store_true", help="write a bytes or str result as it is, no JSON")
    output.add_argument("--pretty", action="store_true", help="indent the JSON")
    parser.set_defaults(run=_run_call)


@dataclass(frozen=True)
class Target:
    """What ``call``'s TARGET names: a sidecar to start, or the address(es) of running ones."""

    start: str | None = None
    connect: str | list[str] | None = None


def classify_target(target: str) -> Target:
    """Read TARGET: an existing folder or executable is started, an existing socket or anything
    else that is an address is connected to. Raises `ValueError` for one that is neither."""
    try:
        mode = os.stat(target).st_mode
    except OSError:
        mode = None
    if mode is not None:
        if stat.S_ISDIR(mode):
            return Target(start=os.path.abspath(target))
        if stat.S_ISSOCK(mode):
            return Target(connect=target)
        if stat.S_ISREG(mode) and os.access(target, os.X_OK):
            return Target(start=os.path.abspath(target))
        raise ValueError(
            f"{target!r} is a file but not an executable: give a Go main package's folder, a built "
            "sidecar (executable), a running sidecar's socket, or host:port"
        )
    if "," in target:
        parts = [part.strip() for part in target.split(",")]
        if not all(parts):
            raise ValueError(f"{target!r} has an empty address in its list: write a,b,c")
        return Target(connect=parts)
    if dns_name(target) is not None:  # raises ValueError for a dns: address without host:port
        return Target(connect=target)
    if parse_address(target).kind == "tcp":
        return Target(connect=target)
    raise ValueError(
        f"no folder, executable or socket is named {target!r}, and it is not host:port: give a Go main "
        "package's folder, a built sidecar, a running sidecar's socket path, or host:port"
    )


def _run_call(options: argparse.Namespace) -> int:
    if "." not in options.method.strip(".") or options.method != options.method.strip():
        raise _Usage(f"METHOD {options.method!r} is not Service.Method, such as App.Hi")
    try:
        target = classify_target(options.target)
    except ValueError as exc:
        raise _Usage(f"TARGET: {exc}") from None
    text = options.json_arg
    if text == "-":
        text = sys.stdin.read()
    try:
        arg = None if text is None else from_json(text)
    except ValueError as exc:
        raise _Usage(f"JSON_ARG {exc}") from None
    opener = _opener(target, options)
    try:
        result = _trio_run(options, _call, opener, options.method, arg, options.timeout)
    except _Exit as exc:
        if exc.status == EXIT_UNAVAILABLE and target.connect is not None:
            raise _Exit(exc.status, _in_cli_terms(str(exc))) from None
        raise
    if options.raw:
        if isinstance(result, (bytes, bytearray)):
            _write_stdout(bytes(result))
        elif isinstance(result, str):
            _write_stdout(result.encode("utf-8"))
        else:
            raise _Exit(
                EXIT_FAILED,
                f"--raw writes a bytes or str result, and {options.method} returned {type(result).__name__}: "
                "drop --raw to print it as JSON",
            )
    else:
        _write_stdout(_dumps(to_json(result), pretty=options.pretty))
    return EXIT_OK


def _in_cli_terms(message: str) -> str:
    """A connection error, with a note naming the options that stand for the API's arguments."""
    named = [
        (api, option)
        for api, option in [
            ("secret=", f"--secret (or ${SECRET_ENV})"),
            ("ssl_context", "--tls or --tls-ca FILE"),
            ("server_hostname", "--server-hostname"),
        ]
        if api in message
    ]
    if not named:
        return message
    return message + "\n(here " + ", ".join(f"{api.rstrip('=')} is {option}" for api, option in named) + ")"


def _opener(target: Target, options: argparse.Namespace) -> AbstractAsyncContextManager[GoTask]:
    remote_options = [
        name
        for name, given in [
            ("--secret", options.secret is not None),
            ("--tls", options.tls),
            ("--tls-ca", options.tls_ca is not None),
            ("--server-hostname", options.server_hostname is not None),
        ]
        if given
    ]
    if target.start is not None:
        if remote_options:
            raise _Usage(
                f"{', '.join(remote_options)}: for connecting to a running sidecar, and TARGET "
                f"{options.target!r} is started here (a sidecar started here gets a fresh secret of its own)"
            )
        return open_gotask(target.start, transport=options.transport or "unix", protocol=options.protocol)
    assert target.connect is not None
    if options.transport is not None:
        raise _Usage(
            f"--transport is for starting a sidecar, and TARGET {options.target!r} is an address to "
            "connect to (a folder or an executable is started)"
        )
    secret = options.secret
    if secret is None and DIALECTS[options.protocol].takes_secret:
        secret = os.environ.get(SECRET_ENV) or None
    context = None
    if options.server_hostname is not None and not (options.tls or options.tls_ca is not None):
        raise _Usage("--server-hostname is the name a TLS certificate must hold: add --tls or --tls-ca FILE")
    if options.tls or options.tls_ca is not None:
        try:
            context = ssl.create_default_context(cafile=options.tls_ca)
        except (OSError, ssl.SSLError) as exc:
            raise _Usage(f"--tls-ca {options.tls_ca}: {exc}") from None
    return connect_gotask(
        target.connect,
        secret=secret,
        ssl_context=context,
        server_hostname=options.server_hostname,
        protocol=options.protocol,
    )


async def _call(
    opener: AbstractAsyncContextManager[GoTask], method: str, arg: Any, limit: float | None
) -> Any:
    async with AsyncExitStack() as stack:
        try:
            gotask = await stack.enter_async_context(opener)
        except (TypeError, ValueError) as exc:  # an argument the library refused before starting
            raise _Usage(str(exc)) from None
        try:
            with trio.fail_after(limit) if limit is not None else trio.CancelScope():
                return await gotask.call(method, arg)
        except trio.TooSlowError:
            raise _Exit(
                EXIT_FAILED,
                f"{method} did not return within {limit:g} s (--timeout): the call was cancelled, "
                "and so was the Go handler's context",
            ) from None
        except OverflowError as exc:  # refused before anything was sent, as are the next
            raise _Usage(f"JSON_ARG cannot be sent: {exc} (integers must fit in 64 bits)") from None
        except (TypeError, ValueError) as exc:
            raise _Usage(f"JSON_ARG cannot be sent: {exc}") from None


def _trio_run(options: argparse.Namespace, function: Callable[..., Awaitable[T]], *args: Any) -> T:
    """`trio.run`, with the library's messages on stderr (once the command line is known to be
    right) and its errors turned into exit statuses and messages."""
    _configure_logging(options.verbose - options.quiet)
    try:
        return trio.run(function, *args)
    except RemoteError as exc:
        text = f"{exc.method} failed: {exc.type}: {exc.message}"
        if exc.stack:
            text += f"\n{exc.stack}"
        raise _Exit(EXIT_FAILED, text) from None
    except GoTaskError as exc:
        raise _Exit(EXIT_UNAVAILABLE, str(exc)) from None


# -- the probe sidecar that doctor and bench build ---------------------------------------------------

_PROBE_MAIN: Final = """\
// Command trio-gotask-probe is the sidecar that trio-gotask doctor and bench build
// and call. It is written by trio-gotask; edits are overwritten.
package main

import (
	"fmt"
	"os"

	"github.com/trio-gotask/trio-gotask/go/gotask"
)

// App is the service doctor and bench call.
type App struct{}

// Echo returns its argument unchanged.
func (a *App) Echo(v any, r *any) error {
	*r = v
	return nil
}

func main() {
	if err := gotask.Register(new(App)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	gotask.Run()
}
"""


class LibraryMissing(Exception):
    """The Go library is not where we looked; ``fix`` says what to do."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


def find_library(explicit: str | None) -> Path:
    """The folder of the Go library (the module `LIBRARY_MODULE`): ``explicit`` (a clone's ``go``
    folder, or the clone itself), else ``$GOTASK_GO_LIBRARY``, else the ``go`` folder beside this
    package in a source checkout. A wheel carries the Python side only: raises `LibraryMissing`."""
    named = explicit or os.environ.get(LIBRARY_ENV)
    if named:
        folder = Path(named).expanduser().resolve()
        for candidate in (folder, folder / "go"):
            if _library_module(candidate) == LIBRARY_MODULE:
                return candidate
        source = "--go-library" if explicit else LIBRARY_ENV
        raise LibraryMissing(
            f"{source} names {str(folder)!r}, which holds no go.mod of the module {LIBRARY_MODULE}",
            f"point {source} at the go folder of a clone of {CLONE_URL}",
        )
    beside = Path(__file__).resolve().parent.parent / "go"
    if _library_module(beside) == LIBRARY_MODULE:
        return beside
    raise LibraryMissing(
        f"the Go library ({LIBRARY_MODULE}) is not beside this installed package: "
        "a wheel carries the Python side only",
        f"clone {CLONE_URL} and pass its go folder: --go-library trio-gotask/go (or set {LIBRARY_ENV}); "
        "your own sidecars need it too, through a replace line in their go.mod",
    )


def _library_module(folder: Path) -> str | None:
    try:
        text = (folder / "go.mod").read_text()
    except (OSError, UnicodeDecodeError):
        return None
    match = re.search(r"^module\s+(\S+)", text, re.MULTILINE)
    return match[1] if match else None


def go_mod_requirements(text: str) -> tuple[str, list[tuple[str, str]]]:
    """The ``go`` version and the ``require`` lines (module, version) of a go.mod."""
    version = ""
    requires: list[tuple[str, str]] = []
    block = ""
    for raw in text.splitlines():
        line = raw.split("//", 1)[0].strip()
        if not line:
            continue
        if block:
            if line == ")":
                block = ""
            elif block == "require" and len(words := line.split()) >= 2:
                requires.append((words[0], words[1]))
            continue
        words = line.split()
        if len(words) == 2 and words[1] == "(":
            block = words[0]
        elif words[0] == "go" and len(words) == 2:
            version = words[1]
        elif words[0] == "require" and len(words) >= 3:
            requires.append((words[1], words[2]))
    return version, requires


def probe_module(library: Path) -> dict[str, str]:
    """The files of the probe sidecar's module, which uses ``library`` through a replace line."""
    version, requires = go_mod_requirements((library / "go.mod").read_text())
    lines = [f"\t{LIBRARY_MODULE} v0.0.0"] + [f"\t{module} {v} // indirect" for module, v in requires]
    go_mod = (
        f"module {PROBE_NAME}\n\ngo {version or '.'.join(map(str, MIN_GO))}\n\n"
        + "require (\n"
        + "\n".join(lines)
        + f"\n)\n\nreplace {LIBRARY_MODULE} => {_go_mod_path(library)}\n"
    )
    try:
        go_sum = (library / "go.sum").read_text()
    except FileNotFoundError:
        go_sum = ""
    return {"main.go": _PROBE_MAIN, "go.mod": go_mod, "go.sum": go_sum}


def _go_mod_path(path: Path) -> str:
    text = str(path)
    return json.dumps(text) if any(c.isspace() or c in '"`' for c in text) else text  # a quoted Go string


def _write_probe(library: Path) -> Path:
    folder = cache_dir() / "sources" / PROBE_NAME
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in probe_module(library).items():
        path = folder / name
        try:
            unchanged = path.read_text() == text
        except (OSError, UnicodeDecodeError):
            unchanged = False
        if not unchanged:  # an unchanged file keeps its stat, and the build cache its fast path
            fd, partial_file = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
            with os.fdopen(fd, "w") as file:
                file.write(text)
            os.replace(partial_file, path)  # whole: doctors running at once write the same text
    return folder


async def build_probe(library: Path) -> Path:
    """Build (or find in the cache) the probe sidecar, using the Go library in ``library``."""
    folder = await trio.to_thread.run_sync(_write_probe, library)
    return await build_sidecar(folder)


# -- doctor ------------------------------------------------------------------------------------------

Status = Literal["ok", "failed", "skipped"]


@dataclass(frozen=True)
class Check:
    """One line of doctor's report."""

    name: str
    status: Status
    detail: str
    fix: str = ""


def _add_doctor(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = _command(
        commands,
        "doctor",
        common,
        "check that this machine can build and call sidecars",
        "Find Go, build a small sidecar with the Go library, and call it over each transport "
        "(unix, tcp, pipe); print the versions in use and what to fix.",
        """\
The Go library comes from --go-library, else $GOTASK_GO_LIBRARY, else the go folder beside this
package (a clone of the repository, or an editable install of one). A wheel carries the Python
side only: doctor says so and what to do. Go is $GOTASK_GO, else go on PATH.

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
    _configure_logging(options.verbose - options.quiet)
    found, checks = trio.run(_doctor, options.go_library, show)
    passed = all(check.status == "ok" for check in checks)
    if options.json:
        report = {"ok": passed, "versions": found, "checks": [asdict(c) for c in checks]}
        _write_stdout(_dumps(report, pretty=True))
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
        _write_stdout(("\n".join(lines) + "\n").encode("utf-8"))
    return EXIT_OK if passed else EXIT_FAILED


def _print_check(check: Check) -> None:
    mark = {"ok": "ok  ", "failed": "FAIL", "skipped": "skip"}[check.status]
    text = f"{mark}  {check.name:<16} {check.detail}".replace("\n", "\n" + " " * 23)
    if check.fix:
        text += f"\n{'':22} fix: {check.fix}"
    _write_stdout((text + "\n").encode("utf-8"))


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

    go, check = await _check_go()
    found = versions(go or "not found")
    if show is not None:
        _write_stdout(b"checks:\n")
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


async def _check_go() -> tuple[str | None, Check]:
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


# -- bench -------------------------------------------------------------------------------------------


def _add_bench(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = _command(
        commands,
        "bench",
        common,
        "measure calls: latency, and calls per second by concurrent callers, on each transport",
        "Start the sidecar on each transport and measure a trivial call: the latency of one call "
        "at a time (p50, p99), and calls per second with several callers at once. Progress goes "
        "to stderr, the table to stdout.",
        """\
By default the probe sidecar doctor builds is measured with App.Echo(1); --sidecar measures your own
(a Go main package's folder or an executable) with --method and --arg.
A fuller benchmark against the floor and the peers is benchmarks/bench.py in the repository.

exit status:
  0    done
  1    a call failed (an error from Go)
  2    the command line is wrong
  3    the sidecar could not be built or started, or it stopped serving""",
    )
    parser.add_argument(
        "--seconds",
        type=_seconds,
        default=1.0,
        metavar="SECONDS",
        help="how long each measurement runs (default: 1; 0.1 for a smoke test)",
    )
    parser.add_argument(
        "--callers",
        type=_callers,
        default=[16, 128],
        metavar="N,N",
        help="the numbers of concurrent callers to measure besides one (default: 16,128)",
    )
    parser.add_argument(
        "--transport",
        choices=TRANSPORTS,
        action="append",
        help="measure only this transport (repeat for several; default: all)",
    )
    parser.add_argument(
        "--sidecar", metavar="TARGET", help="a Go main package's folder or a built sidecar to measure"
    )
    parser.add_argument("--method", default="App.Echo", help="the method to call (default: App.Echo)")
    parser.add_argument("--arg", default="1", metavar="JSON", help="its argument, as JSON (default: 1)")
    parser.add_argument("--go-library", metavar="DIR", help="the Go library, to build the probe sidecar")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON document")
    parser.set_defaults(run=_run_bench)


@dataclass
class BenchResult:
    """One transport's measurements."""

    transport: str
    calls: int
    p50_us: float
    p99_us: float
    calls_per_second: dict[int, float] = field(default_factory=dict)
    """By number of concurrent callers; 1 is the latency measurement's own rate."""


class _Counter:
    calls = 0


class _Progress:
    """Progress on stderr: a line per finished step, and on a terminal a live line in between."""

    def __init__(self, total: int, *, quiet: bool) -> None:
        self._total = total
        self._done = 0
        self._quiet = quiet
        self._live = not quiet and sys.stderr.isatty()

    def say(self, text: str) -> None:
        if not self._quiet:
            self._clear()
            print(text, file=sys.stderr, flush=True)

    async def step(self, label: str, seconds: float, measure: Callable[[_Counter], Awaitable[T]]) -> T:
        counter = _Counter()
        async with trio.open_nursery() as nursery:
            if self._live:
                nursery.start_soon(self._refresh, label, seconds, counter)
            result = await measure(counter)
            nursery.cancel_scope.cancel()
        self._done += 1
        return result

    def done(self, label: str, outcome: str) -> None:
        self.say(f"[{self._done}/{self._total}] {label}: {outcome}")

    async def _refresh(self, label: str, seconds: float, counter: _Counter) -> None:
        started = time.monotonic()
        while True:
            elapsed = min(time.monotonic() - started, seconds)
            sys.stderr.write(
                f"\r\x1b[K[{self._done + 1}/{self._total}] {label}: {counter.calls:,} calls, "
                f"{elapsed:.1f} of {seconds:g} s"
            )
            sys.stderr.flush()
            await trio.sleep(0.1)

    def _clear(self) -> None:
        if self._live:
            sys.stderr.write("\r\x1b[K")


async def _latency(call: Callable[[], Awaitable[object]], seconds: float, counter: _Counter) -> list[float]:
    durations: list[float] = []
    deadline = time.perf_counter() + seconds
    while True:
        before = time.perf_counter()
        await call()
        after = time.perf_counter()
        durations.append(after - before)
        counter.calls += 1
        if after >= deadline:
            return durations


async def _throughput(
    call: Callable[[], Awaitable[object]], callers: int, seconds: float, counter: _Counter
) -> float:
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        while time.perf_counter() < deadline:
            await call()
            counter.calls += 1

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(callers):
            nursery.start_soon(caller)
    return counter.calls / (time.perf_counter() - started)


def _run_bench(options: argparse.Namespace) -> int:
    try:
        arg = from_json(options.arg)
    except ValueError as exc:
        raise _Usage(f"--arg {exc}") from None
    sidecar: str | None = None
    if options.sidecar is not None:
        try:
            target = classify_target(options.sidecar)
        except ValueError as exc:
            raise _Usage(f"--sidecar: {exc}") from None
        if target.start is None:
            raise _Usage(f"--sidecar {options.sidecar!r}: give a folder or an executable to start")
        sidecar = target.start
    transports: list[Transport] = list(dict.fromkeys(options.transport or TRANSPORTS))
    progress = _Progress(len(transports) * (1 + len(options.callers)), quiet=options.quiet > 0)
    results, go_version = _trio_run(
        options, _bench, sidecar, options.go_library, transports, options, arg, progress
    )
    header = versions(go_version)
    if options.json:
        document = {
            "method": options.method,
            "arg": to_json(arg),
            "seconds": options.seconds,
            "versions": header,
            "results": [asdict(r) for r in results],
        }
        _write_stdout(_dumps(document, pretty=True))
    else:
        _write_stdout(_bench_table(results, options, header).encode("utf-8"))
    return EXIT_OK


async def _bench(
    sidecar: str | None,
    library_option: str | None,
    transports: list[Transport],
    options: argparse.Namespace,
    arg: Any,
    progress: _Progress,
) -> tuple[list[BenchResult], str]:
    go_version = "not checked (--sidecar)"
    if sidecar is None:
        go, check = await _check_go()
        if check.status != "ok":
            raise _Exit(EXIT_UNAVAILABLE, f"{check.detail}: {check.fix}")
        assert go is not None
        go_version = go
        try:
            library = find_library(library_option)
        except LibraryMissing as exc:
            raise _Exit(
                EXIT_UNAVAILABLE, f"{exc}: {exc.fix}; or measure a sidecar of yours with --sidecar"
            ) from None
        sidecar = str(await build_probe(library))
    results = []
    seconds = options.seconds
    for transport in transports:
        async with open_gotask(sidecar, transport=transport) as gotask:
            call = partial(gotask.call, options.method, arg)
            try:
                await call()  # a method that fails, fails here, once
            except (OverflowError, TypeError, ValueError) as exc:  # refused before it was sent
                raise _Usage(f"--arg cannot be sent: {exc}") from None
            await _throughput(call, max(options.callers), min(seconds, 0.2), _Counter())  # warm up
            label = f"{transport}, one caller at a time"
            durations = await progress.step(label, seconds, partial(_latency, call, seconds))
            total = sum(durations)
            result = BenchResult(
                transport,
                len(durations),
                statistics.median(durations) * 1e6,
                sorted(durations)[int(0.99 * (len(durations) - 1))] * 1e6,
                {1: len(durations) / total},
            )
            progress.done(label, f"p50 {result.p50_us:.0f} µs, p99 {result.p99_us:.0f} µs")
            for callers in options.callers:
                label = f"{transport}, {callers} callers"
                rate = await progress.step(label, seconds, partial(_throughput, call, callers, seconds))
                result.calls_per_second[callers] = rate
                progress.done(label, f"{rate:,.0f} calls/s")
            results.append(result)
    return results, go_version


def _bench_table(results: list[BenchResult], options: argparse.Namespace, header: dict[str, str]) -> str:
    levels = [1, *options.callers]
    titles = ["transport", "p50 µs", "p99 µs", *[f"{n} caller{'s' if n > 1 else ''}/s" for n in levels]]
    rows = [
        [
            r.transport,
            f"{r.p50_us:.1f}",
            f"{r.p99_us:.1f}",
            *[f"{r.calls_per_second[n]:,.0f}" for n in levels],
        ]
        for r in results
    ]
    widths = [max(len(row[i]) for row in [titles, *rows]) for i in range(len(titles))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    arg_text = json.dumps(to_json(from_json(options.arg)), ensure_ascii=False)
    out = [
        f"{options.method}({arg_text}), {options.seconds:g} s per measurement; latency of one call at a "
        "time, then calls per second by concurrent callers",
        "",
        line(titles),
        *map(line, rows),
        "",
        *[f"{name}: {value}" for name, value in header.items()],
    ]
    return "\n".join(out) + "\n"


# -- logging -----------------------------------------------------------------------------------------


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        where = record.name.removeprefix("trio_gotask").lstrip(".") or "trio_gotask"
        return f"[{where}] {super().format(record)}"


_handler = logging.StreamHandler()


def _configure_logging(verbosity: int) -> None:
    """The library's messages on stderr: warnings (and a sidecar's stderr lines, which are logged
    as warnings) and build messages by default, more with -v, errors only with -q."""
    _handler.setStream(sys.stderr)
    _handler.setFormatter(_Formatter("%(message)s"))
    top = logging.getLogger("trio_gotask")
    if _handler not in top.handlers:
        top.addHandler(_handler)
    top.propagate = False
    levels = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}
    top.setLevel(levels[max(-1, verbosity)] if verbosity < 2 else logging.DEBUG)
    logging.getLogger("trio_gotask.build").setLevel(logging.INFO if verbosity >= 0 else logging.ERROR)
