"""Process supervision: keeps a sidecar running for a GoTask, notices its death, restarts it if
asked to."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, final

import trio

from ._errors import (
    ErrorFactory,
    GoTaskError,
    ProtocolError,
    SidecarError,
    error_factory,
    lost_without_explanation,
)
from ._handlers import Handlers
from ._opening import Connect
from ._pool import Pool
from ._settings import PoolSettings
from ._sidecar import Handshake
from ._statistics import Load
from ._stream import ItemStream

# After a connection is lost, how long to wait for the process to be seen exiting, so that callers
# get the exit status and stderr rather than a bare "connection lost". A dying process closes its
# connections a moment before it can be reaped; only a live one that closed a connection costs this.
_DEATH_NOTICE = 0.5


@dataclass(frozen=True)
class RestartPolicy:
    """Restart a sidecar that died, instead of failing every later call.

    Calls in flight when it died still fail with `SidecarError`: a call is never retried behind the
    caller's back, since the Go side may have done its work. Calls made while it restarts wait for
    the new process (under the caller's cancel scopes) and then run on it.

    The first restart waits ``backoff`` seconds, each consecutive one twice as long, up to
    ``max_backoff``. After ``max_restarts`` consecutive restarts the sidecar is left dead and calls
    fail. A sidecar that served for ``reset_after`` seconds before dying starts the count afresh.
    A start that fails (no handshake, an early exit) counts as a restart.
    """

    max_restarts: int = 5
    backoff: float = 0.1
    max_backoff: float = 5.0
    reset_after: float = 60.0

    def __post_init__(self) -> None:
        if type(self.max_restarts) is not int:
            raise TypeError(f"max_restarts must be an int, not {self.max_restarts!r}")
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts must be at least 0, not {self.max_restarts}")
        for name in ("backoff", "max_backoff", "reset_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number of seconds, not {value!r}")
            if math.isnan(value) or value < 0:
                raise ValueError(f"{name} must be at least 0 seconds, not {value}")


class Process(Protocol):
    """What a `Supervisor` needs of one run of a sidecar; `Sidecar` is the real one."""

    exited: trio.Event
    """Set once the process has exited (and been reaped), and its stderr read."""

    def has_exited(self) -> bool:
        """Whether the process has exited, though ``exited`` may not be set yet."""

    async def run(self, *, task_status: trio.TaskStatus[Handshake]) -> None:
        """Start, report the handshake, return when the process exits; cancelled, stop it."""

    def death_error(self) -> ErrorFactory:
        """The error for calls that the process's death cut off."""

    @property
    def pid(self) -> int | None: ...


P = TypeVar("P", bound=Process)


@dataclass(frozen=True)
class Generation(Generic[P]):
    """One run of the sidecar and the connection pool that talks to it."""

    sidecar: P
    pool: Pool


@final
class Supervisor(Generic[P]):
    """Runs sidecar after sidecar (per the restart policy) and publishes the current `Generation`.

    `run` reports through ``task_status`` once the first sidecar shook hands and its first
    connection is open; a failure before that is raised to the caller of ``nursery.start``.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        new_sidecar: Callable[[], P],
        new_connect: Callable[[P, Handshake], Connect],
        settings: PoolSettings,
        *,
        restart: RestartPolicy | None,
        handlers: Handlers | None = None,
    ) -> None:
        self._nursery = nursery
        self._new_sidecar = new_sidecar
        self._new_connect = new_connect
        self._settings = settings
        self._policy = restart
        self._handlers = handlers
        self._current: Generation[P] | None = None
        self.current_pool: Pool | None = None
        """The running sidecar's pool; ``None`` while none runs (looked up on every call)."""
        self._changed = trio.Event()
        self._failure: ErrorFactory | None = None
        self.closing = False
        self.restarts = 0
        self.address = ""

    @property
    def current(self) -> Generation[P] | None:
        return self._current

    @property
    def pid(self) -> int | None:
        """The running sidecar's process id; ``None`` while it restarts."""
        return self._current.sidecar.pid if self._current is not None else None

    def call(self, method: str, arg: Any, metadata: dict[str, str] | None = None) -> Awaitable[Any]:
        """Make the call on the running sidecar's pool, waiting while one restarts.

        A plain function that hands back the pool's own call while a sidecar runs: one
        coroutine frame less for every call in flight (docs/performance.md)."""
        pool = self.current_pool
        if pool is not None:
            return pool.call(method, arg, metadata)
        return self._call_after_restart(method, arg, metadata)

    async def open_stream(
        self, method: str, arg: Any, window: int, metadata: dict[str, str] | None = None
    ) -> ItemStream:
        """Open the stream on the running sidecar's pool, waiting while one restarts. A stream
        is not moved to the next sidecar when this one dies: its consumer gets the error."""
        pool = self.current_pool
        if pool is None:
            pool = await self.wait_pool()
        return await pool.open_stream(method, arg, window, metadata)

    async def _call_after_restart(self, method: str, arg: Any, metadata: dict[str, str] | None) -> Any:
        pool = await self.wait_pool()
        return await pool.call(method, arg, metadata)

    def statistics(self) -> Load:
        pool = self.current_pool
        if pool is None:
            return Load(0, 0, 0, self.restarts)
        return Load(
            pool.connections,
            pool.opened,
            pool.in_flight,
            self.restarts,
            abandoned=pool.abandoned,
            streams=pool.streams,
        )

    async def wait_pool(self) -> Pool:
        """The pool of the running sidecar, waiting while one restarts."""
        while True:
            if self._current is not None:
                return self._current.pool
            if self._failure is not None:
                raise self._failure()
            await self._changed.wait()

    def _publish(self, generation: Generation[P] | None) -> None:
        self._current = generation
        self.current_pool = generation.pool if generation is not None else None
        self._changed.set()
        self._changed = trio.Event()

    def close(self) -> None:
        self.closing = True
        if self._failure is None:
            self._failure = error_factory(GoTaskError, "the GoTask is closed")
        if self._current is not None:
            self._current.pool.close()
        self._publish(None)

    @trio.lowlevel.enable_ki_protection
    async def run(self, *, task_status: trio.TaskStatus[None]) -> None:
        consecutive = 0
        started = False
        while not self.closing:
            sidecar = self._new_sidecar()
            try:
                handshake: Handshake = await self._nursery.start(sidecar.run)
                pool = self._new_pool(sidecar, handshake)
                if not started:
                    await pool.warm_up()
            except SidecarError as exc:
                if not started:
                    raise
                death: ErrorFactory = error_factory(
                    SidecarError, f"restarting the sidecar failed: {exc}", cause=exc
                )
            else:
                if self.closing:  # closed while this one started: it serves nothing
                    pool.close()
                    return
                self.address = handshake.address
                self._publish(Generation(sidecar, pool))
                if not started:
                    started = True
                    task_status.started()
                began = trio.current_time()
                await sidecar.exited.wait()
                if self.closing:
                    return
                death = sidecar.death_error()
                pool.fail(death)
                if trio.current_time() - began >= (self._policy.reset_after if self._policy else 0):
                    consecutive = 0
            policy = self._policy
            if policy is None or consecutive >= policy.max_restarts:
                self._failure = death
                self._publish(None)
                return
            self._publish(None)
            await trio.sleep(min(policy.backoff * 2**consecutive, policy.max_backoff))
            if self.closing:
                return
            consecutive += 1
            self.restarts += 1

    def _new_pool(self, sidecar: P, handshake: Handshake) -> Pool:
        async def explain(cause: BaseException) -> ErrorFactory:
            if not isinstance(cause, ProtocolError):
                with trio.move_on_after(_DEATH_NOTICE):
                    await sidecar.exited.wait()
                # A starved event loop may reach the deadline before the task that reaps it runs.
                if (sidecar.exited.is_set() or sidecar.has_exited()) and not self.closing:
                    return sidecar.death_error()
            return await lost_without_explanation(cause)

        return Pool(
            self._nursery,
            self._new_connect(sidecar, handshake),
            self._settings,
            explain=explain,
            handlers=self._handlers,
        )
