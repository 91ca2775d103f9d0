"""What the commands share: exit statuses, the parser's value types, JSON in and out, running
Trio, logging."""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import logging
import math
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Final, TypeVar

import trio

from .._errors import GoTaskError, RemoteError

EXIT_OK: Final = 0


EXIT_FAILED: Final = 1


EXIT_USAGE: Final = 2


EXIT_UNAVAILABLE: Final = 3


EXIT_INTERRUPTED: Final = 130


EXIT_STATUS_HELP: Final = """\
exit status:
  0    done
  1    the call failed: an error from Go, or --timeout passed
  2    the command line is wrong (an unknown option, JSON_ARG that is not JSON...)
  3    the sidecar could not be built, started or reached, or it stopped serving
  130  interrupted (Ctrl-C)"""


TOP_EXIT_STATUS_HELP: Final = """\
exit status:
  0    done
  1    the call failed (call, bench), a check did not pass (doctor), the file is out of date (stubs --check)
  2    the command line is wrong
  3    the sidecar could not be built, started or reached, or it stopped serving
  130  interrupted (Ctrl-C)"""


T = TypeVar("T")


class Exit(Exception):
    """Ends the command with ``status``, after printing ``message`` on stderr."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class UsageError(Exception):
    """The command line is wrong (found after argparse read it): exit 2 with this message."""


def add_command(
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


def seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def callers_arg(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of numbers such as 16,128") from None
    if not levels or min(levels) < 1 or max(levels) > 10_000:
        raise argparse.ArgumentTypeError(f"{text!r}: each number of callers must be between 1 and 10000")
    return sorted(set(levels))


_WHITESPACE: Final = str.maketrans("", "", "\t\n\r")


MARKERS: Final = ("$bytes", "$base64", "$time", "$float", "$map", "$repr")
"""The keys of the one-key objects that stand for what JSON lacks (docs/cli.md, "JSON_ARG and the
result"). A map of the reply that looks like one is written inside ``{"$map": ...}``."""


def to_json(value: object) -> object:
    """``value``, as the sidecar's reply decoded it, made into something `json.dumps` writes with
    ``allow_nan=False``. Bytes become ``{"$bytes": text}`` when they are UTF-8 text that prints
    (tabs and newlines allowed), else ``{"$base64": ...}``; a time becomes ``{"$time": ISO 8601}``;
    a NaN or infinite float ``{"$float": "NaN"}`` (``"Infinity"``, ``"-Infinity"``); a map with
    one key that is one of `MARKERS` is wrapped, ``{"$map": {...}}``, so that it cannot be taken
    for one; map keys that are not strings are written as their JSON text (``1`` as ``"1"``).
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return {"$float": "NaN"}
        if math.isinf(value):
            return {"$float": "Infinity" if value > 0 else "-Infinity"}
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
        mapped = {_key_text(k): to_json(v) for k, v in value.items()}
        if len(mapped) == 1 and next(iter(mapped)) in MARKERS:
            return {"$map": mapped}
        return mapped
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return {"$repr": repr(value)}


def _key_text(key: object) -> str:
    if isinstance(key, str):
        return key
    return json.dumps(to_json(key), ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def from_json(text: str) -> Any:
    """The value a JSON argument stands for: JSON, where an object whose one key is ``$bytes``
    (UTF-8 text), ``$base64``, ``$time`` (ISO 8601 with a time zone) or ``$float`` (``NaN``,
    ``Infinity``, ``-Infinity``) stands for bytes, a time or a float, and ``{"$map": {...}}`` for
    that object as it is. Raises `ValueError` saying what is wrong."""
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = ""
        word = text.strip()
        bare = word and word[0] not in '{["-0123456789' and word not in ("true", "false", "null")
        if bare and len(word) <= 60 and not any(c in word for c in "\"'\n"):
            hint = f"; a string is quoted in JSON: '\"{word}\"'"
        raise ValueError(f"is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}{hint}") from None
    return _unmarked(parsed)


def _unmarked(value: Any) -> Any:
    """``value`` with its marked objects made into what they stand for, from the top down: the
    inside of a ``$map`` is taken as it is, though its values are read as usual."""
    if isinstance(value, list):
        return [_unmarked(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        [(key, inner)] = value.items()
        if key == "$map" and isinstance(inner, dict):
            return {k: _unmarked(v) for k, v in inner.items()}
        if key in MARKERS and key != "$map" and isinstance(inner, str):
            return _marked(key, inner)
    return {k: _unmarked(v) for k, v in value.items()}


def _marked(key: str, value: str) -> Any:
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
    if key == "$float":
        if value not in ("NaN", "Infinity", "-Infinity"):
            raise ValueError(f'holds {{"$float": {value!r}}}: use "NaN", "Infinity" or "-Infinity"')
        return float(value.lower().replace("infinity", "inf"))
    if key == "$repr":
        raise ValueError(
            f'holds {{"$repr": {value[:40]!r}}}: a value msgpack had no type for cannot be sent back'
        )
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f'holds {{"$time": {value!r}}}: not an ISO 8601 time, such as 2024-05-01T12:00:00Z'
        ) from None
    if when.tzinfo is None:
        raise ValueError(f'holds {{"$time": {value!r}}}, which has no time zone: end it with Z or +02:00')
    return when


def write_stdout(data: bytes) -> None:
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def json_bytes(value: object, *, pretty: bool = False) -> bytes:
    text = json.dumps(value, ensure_ascii=False, indent=2 if pretty else None, allow_nan=False)
    return (text + "\n").encode("utf-8")


def trio_run(options: argparse.Namespace, function: Callable[..., Awaitable[T]], *args: Any) -> T:
    """`trio.run`, with the library's messages on stderr (once the command line is known to be
    right) and its errors turned into exit statuses and messages."""
    configure_logging(options.verbose - options.quiet)
    try:
        return trio.run(function, *args)
    except RemoteError as exc:
        text = f"{exc.method} failed: {exc.type}: {exc.message}"
        if exc.stack:
            text += f"\n{exc.stack}"
        raise Exit(EXIT_FAILED, text) from None
    except GoTaskError as exc:
        raise Exit(EXIT_UNAVAILABLE, str(exc)) from None


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        where = record.name.removeprefix("trio_gotask").lstrip(".") or "trio_gotask"
        return f"[{where}] {super().format(record)}"


_handler = logging.StreamHandler()


def configure_logging(verbosity: int) -> None:
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
