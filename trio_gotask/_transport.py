"""Transports: what an address means, how each kind of stream is opened and greeted, and the
`Channel` a connection moves its bytes through."""

from __future__ import annotations

import abc
import contextlib
import fcntl
import os
import secrets
import socket
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, final

import trio

from ._errors import GoTaskError, ProtocolError, SidecarError
from ._goridge import FrameDecoder, GoridgeProtocol, Replies, encode_call
from ._protocol import ClientProtocol, Refused, greeting, read_greeting
from ._wire import HANDSHAKE_MARKER, Decoder, Hello

Transport = Literal["unix", "tcp", "pipe"]
TRANSPORTS: Final = ("unix", "tcp", "pipe")

# Larger kernel buffers than the defaults (docs/performance.md, "Payload sizes"); the kernel caps
# them at its limits. TCP is left to the kernel's own tuning.
SOCKET_BUFFER_SIZE: Final = 1 << 20
PIPE_BUFFER_SIZE: Final = 256 * 1024
# sun_path holds 108 bytes on Linux, 104 on macOS, with the terminating NUL.
_MAX_SOCKET_PATH: Final = 103
_GREETING_READ: Final = 64 * 1024
SECRET_ENV: Final = "GOTASK_SECRET"

TCP_DEAD_PEER: Final = tuple(
    (level, getattr(socket, name), value)
    for level, name, value in [
        (socket.SOL_SOCKET, "SO_KEEPALIVE", 1),
        (socket.IPPROTO_TCP, "TCP_KEEPIDLE", 10),  # seconds idle before the first probe
        (socket.IPPROTO_TCP, "TCP_KEEPINTVL", 5),  # seconds between probes
        (socket.IPPROTO_TCP, "TCP_KEEPCNT", 3),  # probes unanswered before the connection fails
        (socket.IPPROTO_TCP, "TCP_USER_TIMEOUT", 30_000),  # ms that sent data may go unacknowledged
    ]
    if hasattr(socket, name)
)
"""Socket options of a TCP connection to a sidecar, so that a peer that vanished without closing
it fails its calls with `SidecarError` within about 30 s: an idle connection by keepalive probes,
one with data unacknowledged by ``TCP_USER_TIMEOUT``. A sidecar that is only slow still
acknowledges (its kernel does), so neither fires for it. Options the system lacks are skipped."""


# -- addresses (docs/protocol.md, section 5, "Addresses") ------------------------------------------


@dataclass(frozen=True)
class Address:
    """An address read by the rule both sides share."""

    kind: Literal["unix", "tcp"]
    host: str = ""
    """The TCP host (brackets removed), ``""`` for the local machine."""
    port: int = 0


def parse_address(address: str) -> Address:
    """Read ``address`` as a Unix socket path or a TCP ``host:port``; raise `ValueError`, naming
    it and saying why, for one that can be neither."""
    if not address or "\0" in address:
        raise ValueError(f"{address!r} is not an address: give a Unix socket path or host:port")
    if "/" in address:
        return Address("unix")
    host, _, port = address.rpartition(":")
    if not (port.isascii() and port.isdigit()):
        return Address("unix")
    number = int(port)
    if number > 65535:
        raise ValueError(f"the port of {address!r} is above 65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if "[" in host or "]" in host:
            raise ValueError(f"{address!r} is not host:port: stray brackets in its host")
    elif ":" in host or "[" in host or "]" in host:
        raise ValueError(f"{address!r} is not host:port: an IPv6 host goes in brackets, as in [::1]:{port}")
    return Address("tcp", host, number)


def check_address(address: str) -> Address:
    """`parse_address`, for an address to connect to: a port must not be 0, a socket path must
    fit in ``sun_path``."""
    parsed = parse_address(address)
    if parsed.kind == "tcp" and parsed.port == 0:
        raise ValueError(f"the port of {address!r} must be between 1 and 65535")
    if parsed.kind == "unix" and len(os.fsencode(address)) > _MAX_SOCKET_PATH:
        raise ValueError(
            f"{address!r} is too long for a Unix socket path ({_MAX_SOCKET_PATH} bytes at most): "
            "use a shorter path, or TCP (host:port)"
        )
    return parsed


async def open_stream(address: str) -> trio.abc.Stream:
    """Connect to a sidecar listening at ``address`` (a socket path or ``host:port``). A TCP
    connection notices a peer that vanished (a host powered off, a network cut) in about half a
    minute rather than the kernel's quarter of an hour: see `TCP_DEAD_PEER`."""
    parsed = parse_address(address)
    if parsed.kind == "tcp":
        stream = await trio.open_tcp_stream(parsed.host or "localhost", parsed.port)
        for level, option, value in TCP_DEAD_PEER:
            with contextlib.suppress(OSError):  # an option this system lacks: the kernel's default
                stream.socket.setsockopt(level, option, value)
        return stream
    stream = await trio.open_unix_socket(address)
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):  # only a speed-up
            stream.socket.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_SIZE)
    return stream


def enlarge_pipe(stream: trio.lowlevel.FdStream) -> None:
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
    if set_size is not None:
        with contextlib.suppress(OSError):  # over the user's pipe quota: only a speed-up
            fcntl.fcntl(stream.fileno(), set_size, PIPE_BUFFER_SIZE)


# -- channels --------------------------------------------------------------------------------------


class Channel(abc.ABC):
    """A stream as a `Connection` uses it: one task writes whole chunks with `send_all`, and one
    task reads. `send_now` lets a caller write without waking the writer when it is idle.

    Two implementations: `FdChannel` reads and writes the descriptors of a socket or a pair of
    pipes directly, which pays on every call (docs/performance.md, "The descriptor fast path");
    `StreamChannel` works with any `trio.abc.Stream` (TLS, memory streams in tests).
    """

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream: Final = stream

    @abc.abstractmethod
    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of ``data``; a checkpoint."""

    @abc.abstractmethod
    def send_now(self, data: bytes | bytearray | memoryview) -> int:
        """Write what can be written of ``data`` without blocking, and return how much; 0 when
        nothing can (an error included: `send_all` meets it and says so)."""

    @abc.abstractmethod
    async def receive_some(self, max_bytes: int) -> bytes | bytearray:
        """Read up to ``max_bytes``; ``b""`` at the end of the stream."""

    @abc.abstractmethod
    async def receive_into(self, buffer: memoryview) -> int:
        """Read into the start of ``buffer``; return the byte count, 0 at the end of the stream."""

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


def open_channel(stream: trio.abc.Stream) -> Channel:
    """The fastest `Channel` over ``stream``."""
    if isinstance(stream, trio.SocketStream):
        fileno = stream.socket.fileno
        return FdChannel(stream, fileno, fileno)
    if (
        isinstance(stream, trio.StapledStream)
        and isinstance(stream.receive_stream, trio.lowlevel.FdStream)
        and isinstance(stream.send_stream, trio.lowlevel.FdStream)
    ):
        return FdChannel(stream, stream.receive_stream.fileno, stream.send_stream.fileno)
    return StreamChannel(stream)


@final
class StreamChannel(Channel):
    """A `Channel` over any Trio stream."""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    def send_now(self, data: bytes | bytearray | memoryview) -> int:
        return 0

    async def receive_some(self, max_bytes: int) -> bytes | bytearray:
        return await self.stream.receive_some(max_bytes)

    async def receive_into(self, buffer: memoryview) -> int:
        data = await self.stream.receive_some(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@final
class FdChannel(Channel):
    """A `Channel` that reads and writes non-blocking descriptors itself.

    Trio's streams try a read first and wait for the descriptor on ``EAGAIN``; after a read that
    took all there was, this waits first, saving a system call between a reply and its caller.
    A large frame is read straight into its own buffer. Descriptors are looked up on every use:
    once the stream is closed the number is -1 and I/O fails, rather than reaching a file that
    has since reused the number.
    """

    def __init__(
        self, stream: trio.abc.Stream, read_fd: Callable[[], int], write_fd: Callable[[], int]
    ) -> None:
        super().__init__(stream)
        self._read_fd = read_fd
        self._write_fd = write_fd
        self._drained = True

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        with memoryview(data) as view:
            sent = 0
            while sent < len(view):
                try:
                    sent += os.write(self._write_fd(), view[sent:])
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(self._write_fd())
        await trio.lowlevel.cancel_shielded_checkpoint()

    def send_now(self, data: bytes | bytearray | memoryview) -> int:
        try:
            return os.write(self._write_fd(), data)
        except OSError:
            return 0

    async def receive_some(self, max_bytes: int) -> bytes:
        if self._drained:
            await trio.lowlevel.wait_readable(self._read_fd())
        else:
            await trio.lowlevel.checkpoint()
        while True:
            try:
                data = os.read(self._read_fd(), max_bytes)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._read_fd())
                continue
            self._drained = len(data) < max_bytes
            return data

    async def receive_into(self, buffer: memoryview) -> int:
        await trio.lowlevel.checkpoint()  # more of the frame is on its way: read first
        while True:
            try:
                count = os.readv(self._read_fd(), [buffer])
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._read_fd())
                continue
            self._drained = count < len(buffer)
            return count


# -- opening and greeting --------------------------------------------------------------------------


class PeerClosed(Exception):
    def __str__(self) -> str:
        return "the sidecar closed the connection"


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


def goridge_protocol(opened: Opened, max_frame_size: int, max_inflight: int) -> SansIO:
    """GoTask's goridge frames: no greeting, and the client's own limits."""
    return GoridgeProtocol(max_frame_size=max_frame_size, max_inflight=max_inflight)


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
        data = await stream.receive_some(_GREETING_READ)
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
        stream = await _open_or_explain(address, "sidecar", connect_timeout)
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


def goridge_connect(
    address: str, *, max_frame_size: int, max_inflight: int, connect_timeout: float
) -> Connect:
    """How to open a connection to a GoTask sidecar at ``address``: goridge has no greeting, so
    the connection is ready once the socket accepts."""

    async def connect() -> Opened:
        stream = await _open_or_explain(address, "GoTask sidecar", connect_timeout)
        return Opened(stream, Hello(0, max_frame_size, max_inflight), b"", speaks=goridge_protocol)

    return connect


PROBE_METHOD: Final = "trio_gotask.Probe"
"""A method no sidecar registers: net/rpc answers a call to it with an error, which proves that
the peer reads and writes goridge frames."""


async def goridge_probe(send: trio.abc.SendStream, receive: trio.abc.ReceiveStream) -> None:
    """Check that the peer speaks GoTask's format: one call to `PROBE_METHOD`, whose error reply
    must come back whole. Raises `ProtocolError` (saying what the peer seems to be) or `PeerClosed`."""
    await send.send_all(encode_call(PROBE_METHOD, 0, None))
    decoder = FrameDecoder(_GREETING_READ)
    replies = Replies()
    received = b""
    while True:
        data = await receive.receive_some(_GREETING_READ)
        if not data:
            raise PeerClosed("the sidecar closed the connection before answering")
        if not received and data.startswith(HANDSHAKE_MARKER.encode() + b"|"):
            raise ProtocolError(
                "handshake",
                "the sidecar speaks trio-gotask's own protocol (it printed a handshake line), not "
                "GoTask's goridge format: drop protocol='goridge'",
            )
        received += data
        decoder.receive_data(data)
        while (frame := decoder.next_frame()) is not None:
            if (reply := replies.feed(frame)) is not None:
                if reply.seq != 0 or reply.error is None:
                    raise ProtocolError(
                        "bad_message", f"the sidecar answered a call to {PROBE_METHOD} with {reply}"
                    )
                return


def free_local_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, for a sidecar that cannot pick its own
    and report it (GoTask's prints no handshake). Another process may take it first; the sidecar
    then fails to start, saying so on stderr."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _open_or_explain(address: str, what: str, connect_timeout: float) -> trio.abc.Stream:
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

    return _once(stdin, stdout, greet_pipe)


def goridge_pipe_connect(
    stdin: trio.abc.SendStream,
    stdout: trio.abc.ReceiveStream,
    initial_data: bytes,
    *,
    max_frame_size: int,
    max_inflight: int,
) -> Connect:
    """`pipe_connect` for a GoTask sidecar: no greeting; ``max_inflight`` is the client's own."""

    async def open_pipe() -> Opened:
        send = stdin
        if isinstance(send, trio.lowlevel.FdStream):
            # A descriptor of the connection's own: closing the connection leaves the pipe open,
            # since a GoTask sidecar takes its end as an error ("pipe is closed", status 1). It is
            # stopped with SIGTERM, and the pipe closed after.
            send = trio.lowlevel.FdStream(os.dup(send.fileno()))
        stream = trio.StapledStream(send, stdout)
        hello = Hello(0, max_frame_size, max_inflight)
        return Opened(stream, hello, initial_data, speaks=goridge_protocol)

    return _once(stdin, stdout, open_pipe)


def _once(stdin: trio.abc.SendStream, stdout: trio.abc.ReceiveStream, open_pipe: Connect) -> Connect:
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


# -- launching -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Launch:
    """What a launched sidecar needs to serve one transport: its flags, and the secret this
    client sets in its ``GOTASK_SECRET`` (``None``: none, and none inherited either)."""

    transport: Transport
    flags: tuple[str, ...]
    secret: str | None

    @staticmethod
    def plan(transport: Transport) -> Launch:
        if transport == "unix":
            # No -address: the sidecar makes a private folder for its socket and removes it when
            # it exits, even after this process was killed.
            return Launch(transport, (), secrets.token_urlsafe(32))
        if transport == "tcp":
            return Launch(transport, ("-address", "127.0.0.1:0"), secrets.token_urlsafe(32))
        # The pipe reaches only the child: nothing to authenticate.
        return Launch(transport, ("-listen-on-pipe",), None)

    def environment(self, inherited: Mapping[str, str]) -> dict[str, str]:
        """The sidecar's environment: ``inherited``, with ``GOTASK_SECRET`` set to this launch's
        secret, or removed (a secret the user exported must not stop the client connecting)."""
        env = {k: v for k, v in inherited.items() if k != SECRET_ENV}
        if self.secret is not None:
            env[SECRET_ENV] = self.secret
        return env


def goridge_address(transport: Transport) -> str:
    """Where a GoTask sidecar, which cannot pick its own address and report it, is told to
    listen: a socket in a new private folder (removed with the socket when the sidecar is
    stopped), a free loopback port, or nowhere (``""``: the pipe alone)."""
    if transport == "unix":
        folder = tempfile.mkdtemp(prefix="gotask-")
        if len(folder) + len("/gotask.sock") > _MAX_SOCKET_PATH:  # a long TMPDIR
            os.rmdir(folder)
            folder = tempfile.mkdtemp(prefix="gotask-", dir="/tmp")
        return os.path.join(folder, "gotask.sock")
    if transport == "tcp":
        return f"127.0.0.1:{free_local_port()}"
    return ""


def goridge_flags(transport: Transport, address: str) -> list[str]:
    """A GoTask sidecar's flags for ``transport``: ``-listen-on-pipe`` keeps the ``-address``
    listener too unless the address is empty."""
    if transport == "pipe":
        return ["-listen-on-pipe", "-address", ""]
    return ["-address", address]
