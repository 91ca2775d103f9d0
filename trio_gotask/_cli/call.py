"""``trio-gotask call``: one method of a sidecar, its result printed as JSON."""

from __future__ import annotations

import argparse
import os
import ssl
import stat
import sys
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from typing import Any

import trio

from .._address import TRANSPORTS, Transport, parse_address
from .._client import GoTask, connect_gotask, open_gotask
from .._dialect import DIALECTS, SECRET_ENV
from .._names import dns_name
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_STATUS_HELP,
    EXIT_UNAVAILABLE,
    Exit,
    UsageError,
    add_command,
    from_json,
    json_bytes,
    seconds_arg,
    to_json,
    trio_run,
    write_stdout,
)


def add_call(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = add_command(
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
        + EXIT_STATUS_HELP,
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
        type=seconds_arg,
        metavar="SECONDS",
        help="cancel the call after this long (the Go handler's context is cancelled too); exit 1",
    )
    add_target_options(parser, transport_help="how to reach it (default: unix)")
    output = parser.add_argument_group("output")
    output.add_argument("--raw", action="store_true", help="write a bytes or str result as it is, no JSON")
    output.add_argument("--pretty", action="store_true", help="indent the JSON")
    parser.set_defaults(run=_run_call)


def add_target_options(parser: argparse.ArgumentParser, *, transport_help: str) -> None:
    """The options that say how to reach a TARGET, which ``call`` and ``bench`` share."""
    parser.add_argument(
        "--protocol",
        choices=tuple(DIALECTS),
        default="gotask",
        help="goridge: a sidecar built with the original GoTask library (default: gotask)",
    )
    start = parser.add_argument_group("starting a sidecar")
    start.add_argument("--transport", choices=TRANSPORTS, action="append", help=transport_help)
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
        raise UsageError(f"METHOD {options.method!r} is not Service.Method, such as App.Hi")
    try:
        target = classify_target(options.target)
    except ValueError as exc:
        raise UsageError(f"TARGET: {exc}") from None
    text = options.json_arg
    if text == "-":
        text = sys.stdin.read()
    try:
        arg = None if text is None else from_json(text)
    except ValueError as exc:
        raise UsageError(f"JSON_ARG {exc}") from None
    if options.transport is not None and len(options.transport) > 1:
        raise UsageError("--transport: give one, the call goes over one transport")
    transport: Transport = options.transport[0] if options.transport else "unix"
    opener = target_opener(target, options, options.target, transport)
    try:
        result = trio_run(options, _call, opener, options.method, arg, options.timeout)
    except Exit as exc:
        if exc.status == EXIT_UNAVAILABLE and target.connect is not None:
            raise Exit(exc.status, _in_cli_terms(str(exc))) from None
        raise
    if options.raw:
        if isinstance(result, (bytes, bytearray)):
            write_stdout(bytes(result))
        elif isinstance(result, str):
            write_stdout(result.encode("utf-8"))
        else:
            raise Exit(
                EXIT_FAILED,
                f"--raw writes a bytes or str result, and {options.method} returned {type(result).__name__}: "
                "drop --raw to print it as JSON",
            )
    else:
        write_stdout(json_bytes(to_json(result), pretty=options.pretty))
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


def target_opener(
    target: Target, options: argparse.Namespace, given: str, transport: Transport
) -> AbstractAsyncContextManager[GoTask]:
    """How to get a `GoTask` for ``target`` (the TARGET ``given``) with the options
    `add_target_options` added: `open_gotask` over ``transport``, or `connect_gotask`."""
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
            raise UsageError(
                f"{', '.join(remote_options)}: for connecting to a running sidecar, and TARGET "
                f"{given!r} is started here (a sidecar started here gets a fresh secret of its own)"
            )
        return open_gotask(target.start, transport=transport, protocol=options.protocol)
    assert target.connect is not None
    if options.transport is not None:
        raise UsageError(
            f"--transport is for starting a sidecar, and TARGET {given!r} is an address to "
            "connect to (a folder or an executable is started)"
        )
    secret = options.secret
    if secret is None and DIALECTS[options.protocol].takes_secret:
        secret = os.environ.get(SECRET_ENV) or None
    context = None
    if options.server_hostname is not None and not (options.tls or options.tls_ca is not None):
        raise UsageError(
            "--server-hostname is the name a TLS certificate must hold: add --tls or --tls-ca FILE"
        )
    if options.tls or options.tls_ca is not None:
        try:
            context = ssl.create_default_context(cafile=options.tls_ca)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"--tls-ca {options.tls_ca}: {exc}") from None
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
            raise UsageError(str(exc)) from None
        try:
            with trio.fail_after(limit) if limit is not None else trio.CancelScope():
                return await gotask.call(method, arg)
        except trio.TooSlowError:
            raise Exit(
                EXIT_FAILED,
                f"{method} did not return within {limit:g} s (--timeout): the call was cancelled, "
                "and so was the Go handler's context",
            ) from None
        except OverflowError as exc:  # refused before anything was sent, as are the next
            raise UsageError(f"JSON_ARG cannot be sent: {exc} (integers must fit in 64 bits)") from None
        except (TypeError, ValueError) as exc:
            raise UsageError(f"JSON_ARG cannot be sent: {exc}") from None
