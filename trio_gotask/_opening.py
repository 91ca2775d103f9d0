"""Opening a connection in this project's dialect: a stream to a sidecar, over a socket or its
pipe, greeted (``$auth``, the two ``$hello``s) and ready for a `Connection`; and, when it cannot be,
an error that says why."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import trio

from ._address import open_stream, parse_address
from ._channel import PeerClosed, enlarge_pipe
from ._errors import GoTaskError, ProtocolError, SidecarError
from ._goridge import GoridgeProtocol
from ._protocol import ClientProtocol, Refused, greeting, read_greeting
from ._wire import Decoder, Hello

GREETING_READ: Final = 64 * 1024


SansIO = ClientProtocol | GoridgeProtocol
"""The client side of a connection, free of I/O, in either wire dialect."""


Speaks = Callable[["Opened", int, int], SansIO]
"""Makes an opened stream's sans-I/O protocol, given ``max_frame_size`` and ``max_inflight``."""


def gotask_protocol(opened: Opened, max_frame_size: int, max_inflight: int) -> SansIO:
    """This project's protocol, after the greeting that `opened` holds."""
    return ClientProtocol(
        opened.hello,
        max_frame_size=max_frame_size,
        max_inflight=max_inflight,
        max_host_calls=opened.max_host_calls,
        initial_data=opened.initial_data,
    )


@dataclass(frozen=True)
class Opened:
    """A stream to the sidecar after the greeting, ready for a `Connection`."""

    stream: trio.abc.Stream
    hello: Hello
    initial_data: bytes
    """Bytes that arrived after the sidecar's ``$hello``."""
    max_host_calls: int = 0
    """The host calls the client's ``$hello`` said it runs at once (0: it takes none)."""
    speaks: Speaks = gotask_protocol
    """The sans-I/O protocol of the stream's wire dialect: `gotask_protocol` or `goridge_protocol`."""


Connect = Callable[[], Awaitable[Opened]]
"""Opens a new stream to the sidecar and greets it; raises `SidecarError` saying why it cannot."""


async def greet(
    stream: trio.abc.Stream,
    *,
    max_frame_size: int,
    secret: str | None,
    initial_data: bytes = b"",
    max_host_calls: int = 0,
    seen: bytearray | None = None,
) -> Opened:
    """Open the protocol on a fresh ``stream``: present ``secret`` (if any) and the client's
    ``$hello``, then read up to the sidecar's ``$hello``.

    Raises `Refused` when the sidecar says why it turns the connection away, `PeerClosed` when it
    closes the stream first, and `ProtocolError` when it sends anything else. The stream is not
    shared yet, so a cancelled greeting leaves nothing to clean up but the stream itself. The
    first bytes read (up to `SEEN_BYTES`) are added to ``seen``, for an error to show.
    """
    await stream.send_all(greeting(max_frame_size, secret, max_host_calls))
    decoder = Decoder(max_frame_size)
    decoder.receive_data(initial_data)
    while (hello := read_greeting(decoder)) is None:
        data = await stream.receive_some(GREETING_READ)
        if not data:
            raise PeerClosed
        if seen is not None and len(seen) < SEEN_BYTES:
            seen += data[: SEEN_BYTES - len(seen)]
        decoder.receive_data(data)
    return Opened(stream, hello, decoder.unconsumed(), max_host_calls)


SEEN_BYTES: Final = 32
"""How many of a peer's first bytes a connect error shows."""


def socket_connect(
    address: str,
    *,
    secret: str | None,
    max_frame_size: int,
    connect_timeout: float,
    launched: bool,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    max_host_calls: int = 0,
) -> Connect:
    """How to open and greet a connection to the sidecar at ``address``; ``launched`` says
    whether this client started it (and so knows its secret and that it speaks TLS only if
    asked)."""
    parsed = parse_address(address)

    async def connect() -> Opened:
        stream = await open_or_explain(address, "sidecar", connect_timeout)
        seen = bytearray()
        in_tls_handshake = False
        try:
            with trio.fail_after(connect_timeout):
                if ssl_context is not None:
                    host = server_hostname or parsed.host
                    stream = trio.SSLStream(stream, ssl_context, server_hostname=host, https_compatible=False)
                    in_tls_handshake = True
                    try:
                        await stream.do_handshake()
                    except trio.BrokenResourceError as exc:
                        raise SidecarError(
                            f"the TLS handshake with the sidecar at {address!r} failed: "
                            f"{exc.__cause__ or exc}. Was it started with -tls-cert and -tls-key, and "
                            "does ssl_context trust its certificate?"
                        ) from exc
                    in_tls_handshake = False
                return await greet(
                    stream,
                    max_frame_size=max_frame_size,
                    secret=secret,
                    max_host_calls=max_host_calls,
                    seen=seen,
                )
        except BaseException as exc:
            await trio.aclose_forcefully(stream)
            if isinstance(exc, SidecarError):
                raise
            if isinstance(exc, trio.TooSlowError) and in_tls_handshake:
                raise SidecarError(
                    f"the sidecar at {address!r} did not answer the TLS handshake within "
                    f"{connect_timeout:g} s (connect_timeout): {_SILENT}"
                ) from exc
            if isinstance(
                exc, (ProtocolError, Refused, PeerClosed, trio.TooSlowError, trio.BrokenResourceError)
            ):
                raise _greeting_error(
                    exc, address, secret, ssl_context, connect_timeout, launched, bytes(seen)
                ) from exc
            raise

    return connect


async def open_or_explain(address: str, what: str, connect_timeout: float) -> trio.abc.Stream:
    """`open_stream` within ``connect_timeout``; a failure is a `SidecarError` saying where and why."""
    if parse_address(address).kind == "tcp":
        kind = "TCP"
    elif "/" in address:
        kind = "Unix socket"
    else:
        kind = "read as a Unix socket path; a TCP address is host:port"
    try:
        with trio.fail_after(connect_timeout):
            return await open_stream(address)
    except trio.TooSlowError:
        raise SidecarError(
            f"cannot connect to the {what} at {address!r} ({kind}): no answer within {connect_timeout} s"
        ) from None
    except OSError as exc:
        raise SidecarError(
            f"cannot connect to the {what} at {address!r} ({kind}): {_os_reason(exc)}"
        ) from exc


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such socket file: is the sidecar running, with this -address?"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: nothing listens there; is the sidecar running, with this -address?"
    return str(exc) or type(exc).__name__


_SILENT: Final = (
    "it may be stopped or hung, too busy, or out of file descriptors (its log then says "
    '"too many open files"), or it is not a trio-gotask sidecar but a server that waits for more '
    "than the client sent"
)
"""What keeps a peer that accepted a connection from saying anything."""


def _greeting_error(
    exc: BaseException,
    address: str,
    secret: str | None,
    ssl_context: ssl.SSLContext | None,
    timeout: float,
    launched: bool,
    seen: bytes = b"",
) -> GoTaskError:
    """Say what went wrong when a connection ended before the sidecar's $hello, from what was
    seen: ``exc``, and ``seen``, the first bytes the peer sent."""
    where = f"the sidecar at {address!r}"
    if isinstance(exc, Refused):
        reason = str(exc)
        if launched:
            hint = ""
        elif secret is None and "requires a secret" in reason:
            hint = ": it was started with GOTASK_SECRET set; pass the same value as secret="
        elif secret is not None and "wrong secret" in reason:
            hint = ": secret= differs from the GOTASK_SECRET the sidecar was started with"
        elif reason.startswith("too many connections"):
            hint = ": try again later, open fewer connections (pool_size=), or raise its -max-conns"
        else:
            hint = ""
        return SidecarError(f"{where} refused the connection ({reason}){hint}")
    if isinstance(exc, ProtocolError) and exc.code == "handshake":
        return SidecarError(f"{where}: {exc}")  # a $hello, of another version
    first = f"its first bytes were {seen!r}" + ("..." if len(seen) == SEEN_BYTES else "")
    if isinstance(exc, trio.TooSlowError):
        if not seen:  # a TLS server would have answered or closed at once: it reads first
            silent = f"{where} accepted the connection but did not answer within {timeout:g} s"
            return SidecarError(silent if launched else f"{silent} (connect_timeout): {_SILENT}")
        cause = f"it sent no whole $hello within {timeout:g} s (connect_timeout); {first}"
    elif isinstance(exc, ProtocolError):
        cause = f"it sent something other than a $hello ({exc}); {first}"
    else:
        cause = "it closed the connection before its $hello" + (f"; {first}" if seen else "")
    if launched:
        return SidecarError(f"{where} did not greet the client: {cause}")
    likely = []
    # A Go TLS server closes at once, saying nothing, on reading the client's first frame; others
    # answer with a TLS alert record (content type 21, version 3.x).
    if ssl_context is None and (not seen or (seen[0] in (21, 22) and seen[1:2] == b"\x03")):
        likely.append("it speaks TLS (started with -tls-cert): pass ssl_context=")
    if seen.startswith(b"HTTP/"):
        likely.append("it is an HTTP server")
    likely.append(
        "it is not a trio-gotask sidecar of protocol version 2 (another server, or one built with an "
        "older gotask package)"
    )
    if isinstance(exc, PeerClosed) and secret is None:
        likely.append("it requires a secret: pass secret=")
    return SidecarError(
        f"{where}: {cause}. Most likely: " + "; or ".join(likely) + ". The sidecar's log says why."
    )


def pipe_connect(
    stdin: trio.abc.SendStream,
    stdout: trio.abc.ReceiveStream,
    initial_data: bytes,
    *,
    max_frame_size: int,
    timeout: float,
    max_host_calls: int = 0,
) -> Connect:
    """How to greet a launched sidecar over its ``stdin`` and ``stdout``: once, since a pipe
    cannot be reopened. ``initial_data`` is what followed the handshake line on stdout."""

    async def greet_pipe() -> Opened:
        stream = trio.StapledStream(stdin, stdout)
        try:
            with trio.fail_after(timeout):
                return await greet(
                    stream,
                    max_frame_size=max_frame_size,
                    secret=None,
                    initial_data=initial_data,
                    max_host_calls=max_host_calls,
                )
        except (Refused, PeerClosed, ProtocolError, trio.TooSlowError, trio.BrokenResourceError) as exc:
            raise SidecarError(f"the sidecar did not greet over its pipe: {exc}") from exc

    return once_per_pipe(stdin, stdout, greet_pipe)


def once_per_pipe(stdin: trio.abc.SendStream, stdout: trio.abc.ReceiveStream, open_pipe: Connect) -> Connect:
    """``open_pipe`` the first time, with the pipes enlarged; an error after that."""
    used = False

    async def connect() -> Opened:
        nonlocal used
        if used:
            raise SidecarError("the pipe to the sidecar broke, and a pipe cannot be reopened")
        used = True
        for pipe in (stdin, stdout):
            if isinstance(pipe, trio.lowlevel.FdStream):
                enlarge_pipe(pipe)
        return await open_pipe()

    return connect
