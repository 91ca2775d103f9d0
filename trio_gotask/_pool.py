"""A pool of multiplexed connections, opened lazily, least-loaded first."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import final

import trio

from ._connection import Connection, ErrorFactory, Explain, error_factory
from ._errors import GoTaskError, SidecarError

Connect = Callable[[], Awaitable[tuple[trio.abc.Stream, bytes]]]
"""Opens a new stream to the sidecar; returns it with any bytes already read from it."""


@final
class Pool:
    """Up to ``size`` connections; each call goes to the least-loaded one.

    A new connection is opened only when every open one is busy and the pool is not full. A
    broken connection fails just its own calls and is dropped; the next call opens a replacement.
    Connection tasks run in ``nursery``.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        connect: Connect,
        *,
        size: int,
        max_frame_size: int,
        max_inflight: int,
        explain: Explain,
    ) -> None:
        if size < 1:
            raise ValueError(f"pool_size must be at least 1, not {size}")
        self._nursery = nursery
        self._connect = connect
        self._size = size
        self._max_frame_size = max_frame_size
        self._max_inflight = max_inflight
        self._explain = explain
        self._connections: list[Connection] = []
        self._opening: trio.Event | None = None
        self._failure: ErrorFactory | None = None
        self.opened = 0
        """Connections opened over the pool's life."""

    @property
    def connections(self) -> int:
        return sum(1 for c in self._connections if not c.broken)

    @property
    def in_flight(self) -> int:
        return sum(c.load for c in self._connections)

    async def warm_up(self) -> None:
        """Open the first connection now, so that a bad address fails early."""
        if not self._connections:
            await self._open()

    @property
    def only(self) -> Connection | None:
        """The connection for every call, when the pool holds one, may hold no more, and it works.

        The common case, looked up on every call; otherwise `choose` a connection.
        """
        live = self._connections
        if self._size == 1 and live and not live[0].broken:
            return live[0]
        return None

    async def choose(self) -> Connection:
        """The least-loaded connection, opening one if every open one is busy and there is room."""
        while True:
            if self._failure is not None:
                raise self._failure()
            live = self._connections
            if any(c.broken for c in live):
                live = self._connections = [c for c in live if not c.broken]
            best = min(live, key=_load) if live else None
            if best is not None and (best.load == 0 or len(live) >= self._size or self._opening is not None):
                return best
            if self._opening is not None:
                await self._opening.wait()
                continue
            return await self._open()

    async def _open(self) -> Connection:
        self._opening = opening = trio.Event()
        try:
            try:
                stream, initial = await self._connect()
            except GoTaskError:
                raise
            except (OSError, trio.BrokenResourceError) as exc:
                reason = exc if str(exc) or exc.__cause__ is None else exc.__cause__
                raise SidecarError(f"cannot connect to the sidecar: {reason}") from exc
            connection = Connection(
                stream,
                max_frame_size=self._max_frame_size,
                max_inflight=self._max_inflight,
                explain=self._explain,
                initial_data=initial,
            )
            await self._nursery.start(connection.run)
            self.opened += 1
            self._connections.append(connection)
            return connection
        finally:
            self._opening = None
            opening.set()

    def fail(self, make_error: ErrorFactory) -> None:
        """Fail every call in flight and every later call with ``make_error()``."""
        if self._failure is None:
            self._failure = make_error
        for connection in self._connections:
            connection.fail(make_error)
        self._connections = []

    def close(self) -> None:
        self.fail(error_factory(GoTaskError, "the GoTask is closed"))


def _load(connection: Connection) -> int:
    return connection.load
