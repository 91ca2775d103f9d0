"""The public entry points: `open_gotask`, `connect_gotask` and the `GoTask` handle they give."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, final

import trio

from ._build import build_sidecar
from ._connection import ErrorFactory, lost_without_explanation
from ._errors import ProtocolError, SidecarError
from ._pool import Connect, Pool
from ._protocol import DEFAULT_MAX_FRAME_SIZE
from ._sidecar import Handshake, Sidecar
from ._transport import TRANSPORTS, Transport, open_stream

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

DEFAULT_POOL_SIZE: Final = 2
DEFAULT_MAX_INFLIGHT: Final = 1024
SIDECAR_ENV: Final = "GOTASK_SIDECAR"
# After a connection is lost, how long to wait for the process to be seen exiting, so that callers
# get the exit status and stderr rather than a bare "connection lost".
_DEATH_NOTICE: Final = 0.1

SidecarSpec = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


@final
class GoTask:
    """A sidecar to call. Get one from `open_gotask` or `connect_gotask`; don't construct it."""

    def __init__(self, pool: Pool, sidecar: Sidecar | None, address: str) -> None:
        self._pool = pool
        self._sidecar = sidecar
        self.address = address
        """Where the sidecar listens: a socket path, ``host:port``, or ``-`` for the pipe transport."""

    async def call(self, method: str, arg: Any = None) -> Any:
        """Call the Go method ``method`` (``"Service.Method"``) with ``arg``; return its reply.

        ``arg`` and the reply are carried as msgpack (docs/protocol.md, section 3). The call runs under
        the caller's cancel scopes: when they cancel it, it returns at once (raising `trio.Cancelled`),
        the Go handler's context is cancelled, and the connection stays usable; the caller's deadline
        becomes the Go context's deadline.

        Raises `RemoteError` (or a subclass) for an error from Go, `SidecarError` when the sidecar dies
        or its connection is lost, `ProtocolError` for malformed replies, and `TypeError`,
        `ValueError` or `OverflowError` for an argument msgpack cannot carry.
        """
        return await self._pool.call(method, arg)

    def service(self, name: str) -> Service:
        """A proxy whose attributes are the methods of the Go service ``name``:
        ``await gt.service("App").Hi("Reasno")`` is ``await gt.call("App.Hi", "Reasno")``."""
        return Service(self, name)

    @property
    def pid(self) -> int | None:
        """The sidecar's process id, or ``None`` when it was started elsewhere."""
        if self._sidecar is None or self._sidecar.process is None:
            return None
        return self._sidecar.process.pid


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
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    max_inflight: int = DEFAULT_MAX_INFLIGHT,
    shutdown_grace: float = 2.0,
) -> AsyncIterator[GoTask]:
    """Start a sidecar, wait for its handshake, and yield a `GoTask` to call it.

    ``sidecar`` is an executable, a command list (the program and its own arguments), or a folder
    holding a Go main package, which is built with ``go build`` into a per-user cache (rebuilt only
    when its module's sources, go.mod/go.sum or the Go toolchain change). Without it, the
    ``GOTASK_SIDECAR`` environment variable names one. ``args`` are appended to the command, and the
    transport flags (``-address``, ``-listen-on-pipe``) after them: since Go's flag package stops at
    the first positional argument, give the sidecar flags only. ``env`` adds to the inherited
    environment.

    ``transport`` is ``"unix"`` (a socket in a private temporary folder), ``"tcp"`` (loopback, a
    free port) or ``"pipe"`` (the child's stdin and stdout, one connection). Up to ``pool_size``
    connections are opened as load needs them (always one for the pipe), each carrying up to
    ``max_inflight`` calls at once; further callers wait. Frames larger than ``max_frame_size``
    bytes from the sidecar are refused.

    ``startup_timeout`` bounds the wait for the handshake: it is the one deadline that is an
    argument, since start-up happens before the caller can scope it. Raises `SidecarError` if the
    program is missing, fails to build, exits early, is too slow, or speaks another protocol.

    On exit, calls still running fail, the connections close, the sidecar's stdin is closed (its
    signal to exit), and after ``shutdown_grace`` seconds it is terminated, then killed. The process
    is always reaped and the temporary folder removed. An error in the body reaches the caller as
    itself, not wrapped in an exception group.
    """
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")
    command = await _resolve_command(sidecar)
    folder = tempfile.mkdtemp(prefix="gotask-") if transport == "unix" else None
    try:
        if folder is not None:
            flags = ["-address", os.path.join(folder, "gotask.sock")]
        elif transport == "tcp":
            flags = ["-address", "127.0.0.1:0"]
        else:
            flags = ["-listen-on-pipe"]
        process = Sidecar(
            [*command, *args, *flags],
            transport=transport,
            env=dict(env) if env else None,
            startup_timeout=startup_timeout,
            grace=shutdown_grace,
        )
        async with _background() as nursery:
            handshake: Handshake = await nursery.start(process.run)
            closing = False

            async def explain(cause: BaseException) -> ErrorFactory:
                if not isinstance(cause, ProtocolError):
                    with trio.move_on_after(_DEATH_NOTICE):
                        await process.exited.wait()
                    if process.exited.is_set() and not closing:
                        return process.death_error()
                return await lost_without_explanation(cause)

            pool = Pool(
                nursery,
                _pipe_connect(process, handshake)
                if transport == "pipe"
                else _socket_connect(handshake.address),
                size=1 if transport == "pipe" else pool_size,
                max_frame_size=max_frame_size,
                max_inflight=max_inflight,
                explain=explain,
            )

            async def fail_calls_when_it_dies() -> None:
                await process.exited.wait()
                if not closing:
                    pool.fail(process.death_error())

            nursery.start_soon(fail_calls_when_it_dies)
            await pool.warm_up()
            try:
                yield GoTask(pool, process, handshake.address)
            finally:
                closing = True
                pool.close()
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


@asynccontextmanager
async def connect_gotask(
    address: str,
    *,
    pool_size: int = DEFAULT_POOL_SIZE,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    max_inflight: int = DEFAULT_MAX_INFLIGHT,
) -> AsyncIterator[GoTask]:
    """Yield a `GoTask` for a sidecar started elsewhere (``./app -address ADDR -standalone``).

    ``address`` is a Unix socket path or a TCP ``host:port``. One connection is opened at once (so a
    wrong address fails here, with `SidecarError`), more as load needs them. The process is not
    ours: leaving the block closes the connections and nothing else.
    """
    async with _background() as nursery:
        pool = Pool(
            nursery,
            _socket_connect(address),
            size=pool_size,
            max_frame_size=max_frame_size,
            max_inflight=max_inflight,
            explain=lost_without_explanation,
        )
        await pool.warm_up()
        try:
            yield GoTask(pool, None, address)
        finally:
            pool.close()


def _socket_connect(address: str) -> Connect:
    async def connect() -> tuple[trio.abc.Stream, bytes]:
        return await open_stream(address), b""

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
