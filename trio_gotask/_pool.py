"""A pool of multiplexed connections, opened as load needs them, least-loaded first."""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol, final

import trio

from ._connection import Connection, Unsent
from ._errors import ErrorFactory, Explain, GoTaskError, SidecarError, error_factory
from ._handlers import Handlers
from ._opening import Connect
from ._settings import PoolSettings
from ._statistics import Load
from ._stream import ItemStream

logger: Final = logging.getLogger("trio_gotask")

# After a connection failed to open while others serve, how long before trying again.
_RETRY_AFTER: Final = 1.0
HEAVY: Final = 64 * 1024
"""A call whose argument is `bytes` of at least this size is heavy (see `Pool`)."""
_BINARY: Final = (bytes, bytearray, memoryview)


@final
class Pool:
    """Up to ``size`` connections; each call goes to the least-loaded one with a free slot.

    A call whose argument is large `bytes` (`HEAVY` bytes or more) is heavy: it holds its connection's
    stream for as long as its frame takes to cross. Light calls go to connections that carry no
    heavy call if there are any, and heavy calls join those that carry one already, so that
    with ``size`` 2 or more the small calls are not queued behind big frames.

    A caller that finds every connection busy starts opening another (if the pool is not full) in
    the background and goes on with the least-loaded connection that has room; a burst therefore
    opens the pool's connections at once and spreads over them as they come up. Callers wait for
    a connection to open only when none has room. A broken connection fails just its own calls
    and is dropped; the next call opens a replacement. Tasks run in ``nursery``.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        connect: Connect,
        settings: PoolSettings,
        *,
        explain: Explain,
        handlers: Handlers | None = None,
    ) -> None:
        self._nursery = nursery
        self._connect = connect
        self._settings = settings
        self._size = settings.pool_size
        self._explain = explain
        self._handlers = handlers
        self._connections: list[Connection] = []
        self._heavy: collections.Counter[Connection] = collections.Counter()
        """The heavy calls in flight on each connection."""
        self._opening = 0
        self._opened_event = trio.Event()
        self._open_error: GoTaskError | None = None
        self._retry_at = -float("inf")
        self._failure: ErrorFactory | None = None
        self.opened = 0
        """Connections opened over the pool's life."""
        self.on_going_away: Callable[[], None] | None = None
        """Called when a connection says the sidecar is shutting down (``$goaway``)."""
        self.address = ""
        """Where the sidecar listens, as given (for `GoTask.address`)."""
        self.pid: Final = None
        self.only: Connection | None = None
        """The connection for every call, when the pool may hold just one and it works: the
        common case, looked up on every call. Otherwise `choose` a connection."""

    @property
    def connections(self) -> int:
        return len(self._connections)

    def statistics(self) -> Load:
        return Load(
            self.connections, self.opened, self.in_flight, abandoned=self.abandoned, streams=self.streams
        )

    @property
    def streams(self) -> int:
        """Streams open on the pool's connections (each also counted in `in_flight`)."""
        return sum(c.streams for c in self._connections)

    @property
    def abandoned(self) -> int:
        """Calls whose callers gave up that still hold a slot: the sidecar has not answered them."""
        return sum(c.given_up for c in self._connections)

    @property
    def in_flight(self) -> int:
        only = self.only
        if only is not None:
            return only.load
        return sum(c.load for c in self._connections)

    async def warm_up(self) -> None:
        """Open the first connection now, so that a bad address fails early."""
        if not self._connections:
            self._opening += 1
            await self._open()

    async def call(self, method: str, arg: Any, metadata: dict[str, str] | None = None) -> Any:
        """Make a call on the only connection, or on the one `choose` picks for it. A call that
        waited for a slot on a connection that broke was not sent: it goes to the least-loaded
        other connection, if there is one."""
        connection = self.only
        if connection is not None:  # the common case: one connection, working
            try:
                return await connection.call(method, arg, metadata)
            except Unsent as exc:
                if self._failure is not None or not self._connections:
                    exc.reraise()
                unsent = exc
        heavy = is_heavy(arg)
        connection = await self.choose(heavy)
        while True:
            try:
                return await self.call_on(connection, method, arg, heavy, metadata)
            except Unsent as exc:
                unsent = exc
            if self._failure is not None or not self._connections:
                unsent.reraise()
            connection = min(self._connections, key=_busy)

    async def open_stream(
        self, method: str, arg: Any, window: int, metadata: dict[str, str] | None = None
    ) -> ItemStream:
        """Open a stream on the connection `choose` picks: it holds one of its slots until it
        ends, like a call, so the least-loaded choice counts it. A stream that waited for a slot
        on a connection that broke goes to another, as a call does."""
        connection = await self.choose()
        while True:
            try:
                return await connection.open_stream(method, arg, window, metadata)
            except Unsent as exc:
                if self._failure is not None or not self._connections:
                    exc.reraise()
            connection = min(self._connections, key=_busy)

    async def call_on(
        self,
        connection: Connection,
        method: str,
        arg: Any,
        heavy: bool,
        metadata: dict[str, str] | None = None,
    ) -> Any:
        """Make a call on ``connection``, which `choose` picked, counting it if it is heavy."""
        if not heavy:
            return await connection.call(method, arg, metadata)
        self._heavy[connection] += 1
        try:
            return await connection.call(method, arg, metadata)
        finally:
            self._heavy[connection] -= 1
            if not self._heavy[connection]:
                del self._heavy[connection]

    async def choose(self, heavy: bool = False) -> Connection:
        """The connection for a call, ``heavy`` or not: the least-loaded one with a free slot
        among those that carry heavy calls when ``heavy`` (those that carry none otherwise), or
        else among all. See the class docstring for when more are opened and when callers wait."""
        if self.only is not None:
            return self.only
        while True:
            if self._failure is not None:
                raise self._failure()
            live = self._connections
            roomy = [c for c in live if c.busy < c.max_inflight]
            carrying = self._heavy
            if heavy:
                best = min(roomy, key=lambda c: (not carrying[c], c.busy)) if roomy else None
            else:
                best = min(roomy, key=lambda c: (carrying[c] > 0, c.busy)) if roomy else None
            may_open = len(live) + self._opening < self._size and (
                not live or trio.current_time() >= self._retry_at
            )
            if best is not None:
                if best.busy and may_open:
                    self._open_soon()
                return best
            if may_open:
                self._open_soon()
            elif live and not self._opening:
                return min(live, key=_busy)  # all full, none coming: wait for a slot there
            await self._opened_event.wait()
            error = self._open_error
            if error is not None and not self._connections:
                raise _copy(error) from error

    def _open_soon(self) -> None:
        self._opening += 1  # counted now, so that callers in this same tick see it
        self._nursery.start_soon(self._open_in_background)

    async def _open_in_background(self) -> None:
        try:
            await self._open()
        except GoTaskError as exc:
            self._retry_at = trio.current_time() + _RETRY_AFTER
            if self._connections:
                logger.warning("opening another connection to the sidecar failed: %s", exc)

    async def _open(self) -> Connection:
        """Open a connection; the caller counted it in ``_opening``."""
        try:
            try:
                opened = await self._connect()
            except GoTaskError:
                raise
            except (OSError, trio.BrokenResourceError) as exc:
                reason = exc if str(exc) or exc.__cause__ is None else exc.__cause__
                raise SidecarError(f"cannot connect to the sidecar: {reason}") from exc
            connection = Connection(
                opened,
                self._settings,
                explain=self._explain,
                on_broken=self._forget,
                on_going_away=self._going_away,
                handlers=self._handlers,
            )
            await self._nursery.start(connection.run)
            self.opened += 1
            self._open_error = None
            if self._failure is not None:
                connection.fail(self._failure)
            elif not connection.broken:
                self._connections.append(connection)
                if self._size == 1:
                    self.only = connection
            return connection
        except GoTaskError as exc:
            self._open_error = exc
            raise
        finally:
            self._opening -= 1
            self._opened_event.set()
            self._opened_event = trio.Event()

    def fail(self, make_error: ErrorFactory) -> None:
        """Fail every call in flight and every later call with ``make_error()``."""
        if self._failure is None:
            self._failure = make_error
        connections, self._connections = self._connections, []
        for connection in connections:
            connection.fail(make_error)
        self._opened_event.set()

    def _forget(self, connection: Connection) -> None:
        """Drop a connection that broke; the next call that needs one opens another."""
        if self.only is connection:
            self.only = None
        if connection in self._connections:
            self._connections.remove(connection)

    def _going_away(self, connection: Connection) -> None:
        """The sidecar is shutting down: no more calls go to ``connection`` (it closes itself
        once its calls are answered), and ``on_going_away`` is told."""
        self._forget(connection)
        if self.on_going_away is not None:
            self.on_going_away()

    def close(self) -> None:
        self.fail(error_factory(GoTaskError, "the GoTask is closed"))


def is_heavy(arg: Any) -> bool:
    """Whether a call with ``arg`` is heavy (see `Pool`)."""
    return type(arg) in _BINARY and len(arg) >= HEAVY


def _busy(connection: Connection) -> int:
    return connection.busy


def _copy(error: GoTaskError) -> GoTaskError:
    """A fresh exception like ``error`` (its type and attributes), for one more caller: one
    exception object raised in several tasks would collect all their tracebacks."""
    copy = type(error).__new__(type(error))
    copy.__dict__.update(error.__dict__)
    copy.args = error.args
    return copy


class Router(Protocol):
    """Where a `GoTask` sends its calls: a `Pool` (one sidecar started elsewhere), a
    `Supervisor` (a launched sidecar, restarted per its policy) or `Endpoints` (several sidecars
    started elsewhere). Each decides how a call reaches a connection; the fast path of a pool
    with one working connection is the pool's own."""

    @property
    def address(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    def call(self, method: str, arg: Any, metadata: dict[str, str] | None = None) -> Awaitable[Any]:
        """Make the call (await what this returns) with ``metadata``, the application metadata
        (its keys and values checked to be strings; ``None`` or empty: none); raise what its
        connection raised, or why there is none."""

    async def open_stream(
        self, method: str, arg: Any, window: int, metadata: dict[str, str] | None = None
    ) -> ItemStream:
        """Open a stream of ``method`` with ``window`` bytes of credit and ``metadata`` (as for
        `call`) on a connection."""

    def statistics(self) -> Load: ...

    def close(self) -> None:
        """Fail the calls in flight and every later call."""
