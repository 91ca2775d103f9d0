"""Several sidecars started elsewhere, one pool each, as one `Backend`: each call goes to the
least-loaded endpoint in rotation; one that cannot be reached, or is shutting down, leaves the
rotation for a while, and the call goes to another."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, final

import trio

from ._connection import Connection
from ._errors import GoTaskError, ShuttingDown
from ._pool import Pool, is_heavy

logger: Final = logging.getLogger("trio_gotask")

FIRST_BACKOFF: Final = 0.5
"""How long an endpoint that failed once stays out of rotation; each failure in a row doubles it."""
MAX_BACKOFF: Final = 30.0

State = Literal["up", "down", "draining"]


@dataclass(frozen=True)
class EndpointStatistics:
    """One endpoint of a `GoTask` given several addresses, from `GoTask.statistics`."""

    address: str
    state: State
    """``up`` (in rotation), ``down`` (unreachable) or ``draining`` (it answered shutting_down)."""
    connections: int
    in_flight: int
    failures: int
    """Times in a row it could not be reached or was shutting down."""


@final
class Endpoint:
    """One address, its pool, and whether calls go there now."""

    def __init__(self, address: str, pool: Pool) -> None:
        self.address = address
        self.pool = pool
        self.state: State = "up"
        self.failures = 0
        self.back_at = -math.inf
        """When it returns to rotation (trio time)."""

    def statistics(self) -> EndpointStatistics:
        return EndpointStatistics(
            self.address, self.state, self.pool.connections, self.pool.in_flight, self.failures
        )


@final
class Endpoints:
    """The `Backend` (and call target) of several sidecars started elsewhere.

    A call goes to the endpoint in rotation with the fewest calls in flight. When no connection
    to it can be opened, or it answers ``shutting_down`` (a graceful stop, such as a rolling
    update), the call was not run: the endpoint leaves the rotation (0.5 s, doubling with each
    failure in a row, up to 30 s; a warning is logged) and the call goes to another. A call is
    tried once on each endpoint at most, those out of rotation last, soonest back first; when
    all fail it raises the last error. A call in flight when its connection breaks fails with
    `SidecarError` and is never re-sent: Go may have run it.
    """

    only: Final = None
    restarts: Final = 0
    pid: Final = None

    def __init__(self, addresses: Sequence[str], pool_for: Callable[[str], Pool]) -> None:
        self._endpoints = [Endpoint(address, pool_for(address)) for address in addresses]
        self.address: Final = ", ".join(addresses)
        self._closed = False

    # -- Backend ---------------------------------------------------------------------------------

    @property
    def current_pool(self) -> Endpoints:
        return self

    async def wait_pool(self) -> Endpoints:
        return self

    def close(self) -> None:
        self._closed = True
        for endpoint in self._endpoints:
            endpoint.pool.close()

    # -- Target ----------------------------------------------------------------------------------

    @property
    def connections(self) -> int:
        return sum(e.pool.connections for e in self._endpoints)

    @property
    def opened(self) -> int:
        return sum(e.pool.opened for e in self._endpoints)

    @property
    def in_flight(self) -> int:
        return sum(e.pool.in_flight for e in self._endpoints)

    def statistics(self) -> tuple[EndpointStatistics, ...]:
        return tuple(e.statistics() for e in self._endpoints)

    async def warm_up(self) -> None:
        """Open a connection to each endpoint at once; one that fails leaves the rotation. Raise
        the first error if none could be reached."""
        errors: list[GoTaskError] = []

        async def warm(endpoint: Endpoint) -> None:
            try:
                await endpoint.pool.warm_up()
            except GoTaskError as exc:
                self._out(endpoint, "down", exc)
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            for endpoint in self._endpoints:
                nursery.start_soon(warm, endpoint)
        if len(errors) == len(self._endpoints):
            raise errors[0]

    async def call(self, method: str, arg: Any) -> Any:
        heavy = is_heavy(arg)
        failure: GoTaskError | None = None
        for endpoint in self._order():
            pool = endpoint.pool
            # Only a call sent while it was out can bring it back: one it took before it left
            # (a sidecar draining answers those) says nothing of new calls.
            out = endpoint.state != "up"
            try:
                connection: Connection = pool.only or await pool.choose(heavy)
            except GoTaskError as exc:  # no connection: nothing was sent
                if self._closed:
                    raise
                self._out(endpoint, "down", exc)
                failure = exc
                continue
            try:
                result = await pool.call_on(connection, method, arg, heavy)
            except ShuttingDown as exc:  # refused, not run
                self._out(endpoint, "draining", exc)
                failure = exc
                continue
            if out and endpoint.state != "up":
                logger.info("the sidecar at %s is back in rotation", endpoint.address)
                endpoint.state, endpoint.failures = "up", 0
            return result
        assert failure is not None
        raise failure

    def _order(self) -> list[Endpoint]:
        """The endpoints in the order a call tries them: those in rotation by load, then the
        others, soonest back first."""
        now = trio.current_time()
        live = [e for e in self._endpoints if e.back_at <= now]
        live.sort(key=lambda e: e.pool.in_flight)
        resting = sorted((e for e in self._endpoints if e.back_at > now), key=lambda e: e.back_at)
        return live + resting

    def _out(self, endpoint: Endpoint, state: State, why: BaseException) -> None:
        """Take ``endpoint`` out of rotation after a failure (once: the other calls that were
        trying it at the time fail the same way, and do not lengthen its rest)."""
        if endpoint.state == state and endpoint.back_at > trio.current_time():
            return
        backoff = min(FIRST_BACKOFF * 2**endpoint.failures, MAX_BACKOFF)
        endpoint.failures += 1
        endpoint.state = state
        endpoint.back_at = trio.current_time() + backoff
        logger.warning(
            "the sidecar at %s is out of rotation for %.1f s (%s): %s",
            endpoint.address,
            backoff,
            "shutting down" if state == "draining" else "unreachable",
            str(why).splitlines()[0],
        )
