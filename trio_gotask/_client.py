"""The public entry points: `open_gotask`, `connect_gotask` and the `GoTask` handle they give."""

from __future__ import annotations

import os
import secrets
import ssl
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, final

import trio

from ._build import build_sidecar
from ._connection import lost_without_explanation
from ._errors import SidecarError
from ._pool import Connect, Pool
from ._protocol import DEFAULT_MAX_FRAME_SIZE, Encoder, frame_header
from ._sidecar import Handshake, Sidecar
from ._supervisor import RestartPolicy, Supervisor
from ._transport import TRANSPORTS, Transport, enlarge_pipe, open_stream, split_host_port

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

# One connection carries everything best: its writer batches all queued frames into one write
# (measured: 64 callers, 1 connection ~40% faster than 2). More connections isolate failures and
# keep one huge frame from delaying small calls behind it.
DEFAULT_POOL_SIZE: Final = 1
DEFAULT_MAX_INFLIGHT: Final = 1024
SIDECAR_ENV: Final = "GOTASK_SIDECAR"
SECRET_ENV: Final = "GOTASK_SECRET"

SidecarSpec = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


@dataclass(frozen=True)
class GoTaskStatistics:
    """A snapshot of a `GoTask`, from `GoTask.statistics`."""

    restarts: int
    """Times the sidecar was restarted (see `RestartPolicy`)."""
    connections: int
    """Open connections to the running sidecar."""
    in_flight: int
    """Calls running now (including callers waiting for a free slot)."""
    calls_done: int
    """Calls that returned a result."""
    calls_failed: int
    """Calls that raised an error (from Go, the sidecar's death, bad arguments...)."""
    calls_cancelled: int
    """Calls that the caller's cancel scopes cancelled."""


@final
class GoTask:
    """A sidecar to call. Get one from `open_gotask` or `connect_gotask`; don't construct it."""

    def __init__(
        self, *, pool: Pool | None = None, supervisor: Supervisor | None = None, address: str = ""
    ) -> None:
        self._pool = pool
        self._address = address
        self._supervisor = supervisor
        self._done = 0
        self._failed = 0
        self._cancelled = 0

    async def call(self, method: str, arg: Any = None) -> Any:
        """Call the Go method ``method`` (``"Service.Method"``) with ``arg``; return its reply.

        ``arg`` and the reply are carried as msgpack (docs/protocol.md, section 3). The call runs under
        the caller's cancel scopes: when they cancel it, it returns at once (raising `trio.Cancelled`),
        the Go handler's context is cancelled, and the connection stays usable; the caller's deadline
        becomes the Go context's deadline. A call is never retried.

        Raises `RemoteError` (or a subclass) for an error from Go, `SidecarError` when the sidecar dies
        or its connection is lost, `ProtocolError` for malformed replies, and `TypeError`,
        `ValueError` or `OverflowError` for an argument msgpack cannot carry (or one larger than
        ``max_frame_size``).
        """
        pool = self._pool
        try:
            if pool is None:
                assert self._supervisor is not None
                current = self._supervisor.current
                pool = current.pool if current is not None else await self._supervisor.pool()
            connection = pool.only or await pool.choose()
            result = await connection.call(method, arg)
        except trio.Cancelled:
            self._cancelled += 1
            raise
        except BaseException:
            self._failed += 1
            raise
        self._done += 1
        return result

    def service(self, name: str) -> Service:
        """A proxy whose attributes are the methods of the Go service ``name``:
        ``await gt.service("App").Hi("Reasno")`` is ``await gt.call("App.Hi", "Reasno")``."""
        return Service(self, name)

    def statistics(self) -> GoTaskStatistics:
        """Counters and gauges of this GoTask, as a frozen record."""
        pool = self._current_pool()
        return GoTaskStatistics(
            restarts=self._supervisor.restarts if self._supervisor else 0,
            connections=pool.connections if pool else 0,
            in_flight=pool.in_flight if pool else 0,
            calls_done=self._done,
            calls_failed=self._failed,
            calls_cancelled=self._cancelled,
        )

    def _current_pool(self) -> Pool | None:
        if self._supervisor is None:
            return self._pool
        current = self._supervisor.current
        return current.pool if current else None

    @property
    def address(self) -> str:
        """Where the sidecar listens: a socket path, ``host:port``, or ``-`` for the pipe transport."""
        if self._supervisor is None:
            return self._address
        return self._supervisor.address

    @property
    def pid(self) -> int | None:
        """The running sidecar's process id, or ``None`` when it was started elsewhere (or is
        restarting)."""
        current = self._supervisor.current if self._supervisor else None
        if current is None or current.sidecar.process is None:
            return None
        return current.sidecar.process.pid


@final
class Service:
    """Calls the methods of one Go service by attribute: see `GoTask.service`."""

    def __init__(self, gotask: GoTask, name: str) -> None:
        self._gotask = gotask
        self._name = name

    def __getattr__(self, method: str) -> _Method:
        if method.startswith("_"):
            raise AttributeError(method)
        return _Method(self._gotask, f"{self._name}.{method}")

    def __repr__(self) -> str:
        return f"<Service {self._name!r}>"


@final
class _Method:
    __slots__ = ("_gotask", "_name")

    def __init__(self, gotask: GoTask, name: str) -> None:
        self._gotask = gotask
        self._name = name

    async def __call__(self, arg: Any = None) -> Any:
        return await self._gotask.call(self._name, arg)


@asynccontextmanager
async def open_gotask(
    sidecar: SidecarSpec | None = None,
    *,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    transport: Transport = "unix",
    pool_size: int = DEFAULT_POOL_SIZE,
    startup_timeout: float = 10.0,
    restart: RestartPolicy | None = None,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    max_inflight: int = DEFAULT_MAX_INFLIGHT,
    shutdown_grace: float = 2.0,
) -> AsyncIterator[GoTask]:
    """Start a sidecar, wait for its handshake, and yield a `GoTask` to call it.

    ``sidecar`` is an executable, a command list (the program and its own arguments), or a folder
    holding a Go main package, which is built with ``go build`` into a per-user cache (rebuilt only
    when its module's sources, go.mod/go.sum or the Go toolchain change). Without it, the
    ``GOTASK_SIDECAR`` environment variable names one. ``args`` are appended to the command, and the
    protocol's flags (``-address``, ``-listen-on-pipe``, ``-max-frame-size``) after them: since Go's
    flag package stops at the first positional argument, give the sidecar flags only. ``env`` adds
    to the inherited environment.

    ``transport`` is ``"unix"`` (a socket in a private temporary folder, which the sidecar makes and
    removes), ``"tcp"`` (loopback, a free port, and a fresh shared secret that every connection must
    present) or ``"pipe"`` (the child's stdin and stdout, one connection). Up to ``pool_size``
    connections are opened as load needs them (always one for the pipe), each carrying up to
    ``max_inflight`` calls at once; further callers wait. One connection is fastest, since its
    writer batches every queued frame into one write; more isolate a broken connection's calls and
    keep a huge frame from delaying small calls behind it. No frame larger than ``max_frame_size``
    bytes is sent or accepted, on either side.

    ``startup_timeout`` bounds the wait for the handshake: it is the one deadline that is an
    argument, since start-up happens before the caller can scope it. Raises `SidecarError` if the
    program is missing, fails to build, exits early, is too slow, or speaks another protocol.

    If the sidecar dies, the calls in flight fail with `SidecarError`, and so does every later
    call, unless ``restart`` (a `RestartPolicy`) says to start a new one.

    On exit, calls still running fail, the connections close, the sidecar's stdin is closed (its
    signal to exit), and after ``shutdown_grace`` seconds it is terminated, then killed. The process
    is always reaped and its socket folder removed. An error in the body reaches the caller as
    itself, not wrapped in an exception group.
    """
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")
    command = await _resolve_command(sidecar)
    extra_env = dict(env or {})
    secret = None
    if transport == "unix":
        # No -address: the sidecar makes a private folder for its socket and removes it when it
        # exits, even after this process was killed (see Sidecar for one that dies first).
        flags = []
    elif transport == "tcp":
        flags = ["-address", "127.0.0.1:0"]
        secret = secrets.token_urlsafe(32)
        extra_env[SECRET_ENV] = secret
    else:
        flags = ["-listen-on-pipe"]
    flags += ["-max-frame-size", str(max_frame_size)]

    def new_sidecar() -> Sidecar:
        return Sidecar(
            [*command, *args, *flags],
            transport=transport,
            env=extra_env,
            startup_timeout=startup_timeout,
            grace=shutdown_grace,
        )

    def new_connect(process: Sidecar, handshake: Handshake) -> Connect:
        if transport == "pipe":
            return _pipe_connect(process, handshake)
        return _socket_connect(handshake.address, secret=secret)

    async with _background() as nursery:
        supervisor = Supervisor(
            nursery,
            new_sidecar,
            new_connect,
            pool_size=1 if transport == "pipe" else pool_size,
            max_frame_size=max_frame_size,
            max_inflight=max_inflight,
            restart=restart,
        )
        await nursery.start(supervisor.run)
        try:
            yield GoTask(supervisor=supervisor)
        finally:
            supervisor.close()


@asynccontextmanager
async def connect_gotask(
    address: str,
    *,
    secret: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    pool_size: int = DEFAULT_POOL_SIZE,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    max_inflight: int = DEFAULT_MAX_INFLIGHT,
) -> AsyncIterator[GoTask]:
    """Yield a `GoTask` for a sidecar started elsewhere (``./app -address ADDR -standalone``).

    ``address`` is a Unix socket path or a TCP ``host:port``. ``secret`` is presented first on every
    connection, for a sidecar started with ``GOTASK_SECRET`` set; a sidecar that refuses it closes
    the connection, and calls fail with `SidecarError`. ``ssl_context`` makes TCP connections speak
    TLS (to a sidecar started with ``-tls-cert`` and ``-tls-key``), checking the certificate against
    ``server_hostname`` (by default the address's host).

    One connection is opened at once (so a wrong address fails here, with `SidecarError`), more as
    load needs them. The process is not ours: leaving the block closes the connections and nothing
    else.
    """
    async with _background() as nursery:
        pool = Pool(
            nursery,
            _socket_connect(address, secret=secret, ssl_context=ssl_context, server_hostname=server_hostname),
            size=pool_size,
            max_frame_size=max_frame_size,
            max_inflight=max_inflight,
            explain=lost_without_explanation,
        )
        await pool.warm_up()
        try:
            yield GoTask(pool=pool, address=address)
        finally:
            pool.close()


def _socket_connect(
    address: str,
    *,
    secret: str | None,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> Connect:
    hello = b""
    if secret is not None:
        payload = Encoder().auth(secret)
        hello = frame_header(len(payload)) + payload

    async def connect() -> tuple[trio.abc.Stream, bytes]:
        stream = await open_stream(address)
        try:
            if ssl_context is not None:
                host = server_hostname or split_host_port(address)[0]
                stream = trio.SSLStream(stream, ssl_context, server_hostname=host, https_compatible=False)
                await stream.do_handshake()
            if hello:
                # Sent before the connection is shared: a cancel here discards the whole stream.
                await stream.send_all(hello)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return stream, b""

    return connect


def _pipe_connect(process: Sidecar, handshake: Handshake) -> Connect:
    used = False

    async def connect() -> tuple[trio.abc.Stream, bytes]:
        nonlocal used
        if used:
            raise SidecarError("the pipe to the sidecar broke, and a pipe cannot be reopened")
        used = True
        child = process.process
        assert child is not None and child.stdin is not None and child.stdout is not None
        for pipe in (child.stdin, child.stdout):
            if isinstance(pipe, trio.lowlevel.FdStream):
                enlarge_pipe(pipe)
        return trio.StapledStream(child.stdin, child.stdout), handshake.rest

    return connect


async def _resolve_command(sidecar: SidecarSpec | None) -> list[str]:
    if sidecar is None:
        sidecar = os.environ.get(SIDECAR_ENV)
        if not sidecar:
            raise SidecarError(
                "no sidecar named: pass open_gotask() an executable, a command list or a folder "
                f"holding a Go main package, or set the {SIDECAR_ENV} environment variable to one"
            )
    if isinstance(sidecar, (str, os.PathLike)):
        if await trio.Path(sidecar).is_dir():
            return [str(await build_sidecar(sidecar))]
        return [os.fspath(sidecar)]
    command = [os.fspath(part) for part in sidecar]
    if not command:
        raise ValueError("the sidecar command list is empty")
    return command


@asynccontextmanager
async def _background() -> AsyncIterator[trio.Nursery]:
    """A nursery for internal tasks that shows the caller one exception, not a group of ours."""
    try:
        async with trio.open_nursery() as nursery:
            try:
                yield nursery
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        errors = _leaves(group)
        if len(errors) != 1:
            raise
        (error,) = errors
        raise error from error.__cause__


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out += _leaves(exc)
        elif not isinstance(exc, trio.Cancelled):
            out.append(exc)
    return out
