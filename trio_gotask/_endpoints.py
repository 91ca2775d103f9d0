"""Several sidecars started elsewhere, one pool each, as one `Backend`: each call goes to the
least-loaded endpoint in rotation; one that cannot be reached, is shutting down, or fails calls in
a row (deadlines passed with no answer, connections lost) leaves the rotation for a while, and the
call goes to another. DNS names (``dns:host:port``) stand for every address they resolve to, and
are resolved again from time to time."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Sequence
from typing import Any, Final, NoReturn, final

import trio

from ._connection import Connection, Unsent
from ._errors import GoTaskError, ProtocolError, RemoteError, ShuttingDown, SidecarError
from ._names import DEFAULT_RESOLVE_INTERVAL, RESOLVE_GAP, Name, resolve
from ._pool import Pool, is_heavy
from ._rotation import Member, Rotation
from ._statistics import EndpointStatistics, Load, State
from ._stream import ItemStream

logger: Final = logging.getLogger("trio_gotask")

_CANCELLED_SAYS_WHY: Final = hasattr(trio.Cancelled, "source")
"""Whether `trio.Cancelled` says a deadline caused it (trio 0.31 and later); before, a call reads
its deadline first, which costs about a microsecond."""

_WHY_OUT: Final[dict[State, str]] = {
    "down": "unreachable",
    "draining": "shutting down",
    "stalled": "calls ran out of time there",
}


def _by_deadline(cancelled: trio.Cancelled, deadline: float) -> bool:
    """Whether ``cancelled`` came from a deadline rather than a scope cancelled by hand; on a
    trio that does not say, whether ``deadline`` (read before the call) has passed."""
    if _CANCELLED_SAYS_WHY:
        return getattr(cancelled, "source", None) == "deadline"
    return -math.inf < deadline <= trio.current_time()


@final
class Endpoint(Member):
    """One address, its pool, and its place in the rotation."""

    def __init__(self, address: str, pool: Pool, source: str) -> None:
        super().__init__()
        self.address = address
        self.pool = pool
        self.sources = {source}
        """The addresses given (a plain one, or ``dns:`` names) that stand for this one; when a
        name stops resolving to it and no other stands for it, it is retired."""
        self.choosing = 0
        """Callers waiting for a connection to it to open: counted as its load."""

    def load(self) -> int:
        return self.pool.in_flight + self.choosing

    def statistics(self) -> EndpointStatistics:
        return EndpointStatistics(
            self.address,
            self.state,
            self.pool.connections,
            self.pool.in_flight,
            self.failures,
            min(self.sources),
        )


PoolFor = Callable[[str, "str | None"], Pool]
"""Makes the pool of one address; the second argument is the name to check a TLS certificate
against (the DNS name the address came from), or ``None`` for the address's own host."""


@final
class Endpoints:
    """The `Backend` (and call target) of several sidecars started elsewhere.

    A call goes to the endpoint in rotation with the fewest calls in flight, ties taken in turn.
    When no connection to it can be opened, or it says ``$goaway`` or answers ``shutting_down``
    (a graceful stop, such as a rolling update), the call was not run: the endpoint leaves the
    rotation (`FIRST_BACKOFF`, doubling with each failure in a row, up to `MAX_BACKOFF`; a
    warning is logged) and the call goes to another, as does a call that its sidecar, draining,
    did not run. A call is
    tried once on each endpoint at most, those out of rotation last, soonest back first; when
    all fail it raises the last error. A call in flight when its connection breaks fails with
    `SidecarError` and is never re-sent, unless its method is one of ``idempotent``: then it is
    sent once to each other endpoint in turn, as a refused call is.

    Outlier ejection: a call whose connection is lost in flight, or whose caller's deadline
    passes while it is in flight there and the sidecar answered no other call meanwhile, is a
    strike against the endpoint; `STRIKES` in a row (any call it answers resets the count) take
    it out of rotation as above, ``down`` or ``stalled``, unless it is the last one in rotation.
    A sidecar that is frozen (SIGSTOP, a hung host) still has its kernel accept and acknowledge,
    so only deadlines, or a connection declared dead, show it. After its rest, one call at a time
    tries an endpoint that is out; its first success puts it back, a strike takes it out again.

    ``names`` are resolved by `start`, and again every ``resolve_interval`` seconds by `watch`
    (sooner, but at most once a second, after an endpoint of theirs fails): an address that
    appears joins the rotation, and one that is gone leaves it and is closed once its calls in
    flight are done. A name that cannot be resolved keeps the addresses it had.
    """

    pid: Final = None

    def __init__(
        self,
        addresses: Sequence[str],
        pool_for: PoolFor,
        *,
        names: Sequence[Name] = (),
        resolve_interval: float = DEFAULT_RESOLVE_INTERVAL,
        resolve_timeout: float = 10.0,
        idempotent: Collection[str] = frozenset(),
    ) -> None:
        self._pool_for = pool_for
        self._names = list(names)
        self._resolve_interval = resolve_interval
        self._resolve_timeout = resolve_timeout
        self._idempotent = frozenset(idempotent)
        self._rotation: Rotation[Endpoint] = Rotation()
        self._endpoints = self._rotation.members
        self._by_address: dict[str, Endpoint] = {}
        self._retiring: set[Endpoint] = set()
        """Endpoints gone from their names, with calls still in flight."""
        for address in addresses:
            self._add(address, address, None)
        self.address: Final = ", ".join([*addresses, *(n.text for n in names)])
        self._closed = False
        self._resolve_soon = trio.Event()
        self._resolved_at = -math.inf

    def close(self) -> None:
        self._closed = True
        for endpoint in [*self._endpoints, *self._retiring]:
            endpoint.pool.close()

    def statistics(self) -> Load:
        endpoints = self._endpoints
        return Load(
            connections=sum(e.pool.connections for e in endpoints),
            opened=sum(e.pool.opened for e in endpoints),
            in_flight=sum(e.pool.in_flight for e in endpoints),
            endpoints=tuple(e.statistics() for e in endpoints),
            abandoned=sum(e.pool.abandoned for e in endpoints),
            streams=sum(e.pool.streams for e in endpoints),
        )

    async def start(self) -> None:
        """Resolve the names, then open a connection to each endpoint at once; one that fails
        leaves the rotation. Raise the first error if none could be reached."""
        errors: list[GoTaskError] = await self._resolve()

        async def warm(endpoint: Endpoint) -> None:
            try:
                await endpoint.pool.warm_up()
            except GoTaskError as exc:
                self._out(endpoint, "down", exc)
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            for endpoint in self._endpoints:
                nursery.start_soon(warm, endpoint)
        if not self._endpoints or all(e.state == "down" for e in self._endpoints):
            raise errors[0]

    async def watch(self) -> None:
        """Resolve the names every ``resolve_interval`` seconds, or sooner when asked; forever."""
        if not self._names:
            return
        while True:
            with trio.move_on_at(self._resolved_at + self._resolve_interval):
                await self._resolve_soon.wait()
                await trio.sleep_until(self._resolved_at + RESOLVE_GAP)
            await self._resolve()

    async def call(self, method: str, arg: Any, metadata: dict[str, str] | None = None) -> Any:
        heavy = is_heavy(arg)
        failure: GoTaskError | None = None
        tried: list[Endpoint] = []
        while (endpoint := self._rotation.pick(tried, trio.current_time)) is not None:
            tried.append(endpoint)
            pool = endpoint.pool
            incidents = endpoint.incidents
            answered = endpoint.answered
            probe = endpoint.state != "up"
            if probe:
                endpoint.probes += 1
            deadline = math.inf if _CANCELLED_SAYS_WHY else trio.current_effective_deadline()
            try:
                try:
                    connection: Connection = await self._choose(endpoint, heavy)
                except GoTaskError as exc:  # no connection: nothing was sent
                    if self._closed:
                        raise
                    self._out(endpoint, "down", exc)
                    failure = exc
                    continue
                try:
                    result = await pool.call_on(connection, method, arg, heavy, metadata)
                except ShuttingDown as exc:  # refused, not run
                    self._out(endpoint, "draining", exc)
                    failure = exc
                    continue
                except RemoteError:
                    Rotation.answered(endpoint)
                    raise
                except Unsent as exc:  # its connection broke before it was sent
                    failure = exc.error
                    continue
                except (SidecarError, ProtocolError) as exc:  # lost in flight: Go may have run it
                    if self._closed:
                        raise
                    self._failed(endpoint, "down", exc)
                    if method not in self._idempotent or isinstance(exc, ProtocolError):
                        raise
                    logger.info("re-sending %s, lost at %s: %s", method, endpoint.address, exc)
                    failure = exc
                    continue
            except trio.Cancelled as exc:
                if isinstance(exc.__context__, RemoteError):  # Go's deadline_exceeded lost the race
                    Rotation.answered(endpoint)
                elif endpoint.answered == answered and _by_deadline(exc, deadline):
                    self._failed(endpoint, "stalled", "a call's deadline passed there with no answer")
                raise
            finally:
                if probe:
                    endpoint.probes -= 1
                if endpoint.retired and not pool.in_flight:
                    self._retiring.discard(endpoint)
                    pool.close()
            if Rotation.succeeded(endpoint, incidents):
                logger.info("the sidecar at %s is back in rotation", endpoint.address)
            return result
        self._gave_up(failure)

    async def open_stream(
        self, method: str, arg: Any, window: int, metadata: dict[str, str] | None = None
    ) -> ItemStream:
        """Open the stream on a sidecar the rotation picks, trying the next while none can take
        it (no connection, or its connection broke before the request was sent). Once sent, a
        stream stays where it is: its consumer gets whatever ends it."""
        failure: GoTaskError | None = None
        tried: list[Endpoint] = []
        while (endpoint := self._rotation.pick(tried, trio.current_time)) is not None:
            tried.append(endpoint)
            try:
                connection = await self._choose(endpoint, False)
            except GoTaskError as exc:
                if self._closed:
                    raise
                self._out(endpoint, "down", exc)
                failure = exc
                continue
            try:
                return await connection.open_stream(method, arg, window, metadata)
            except Unsent as exc:
                failure = exc.error
        self._gave_up(failure)

    def _gave_up(self, failure: GoTaskError | None) -> NoReturn:
        """Raise why no sidecar took the call or stream: the last failure met, or that there
        is none to try."""
        if failure is None:
            raise SidecarError(f"no sidecar to call: {self.address} resolve to no address now")
        raise failure from failure.__cause__

    @staticmethod
    async def _choose(endpoint: Endpoint, heavy: bool) -> Connection:
        """`Pool.choose`, counted in ``endpoint.choosing`` while it waits for a connection."""
        endpoint.choosing += 1
        try:
            return await endpoint.pool.choose(heavy)
        finally:
            endpoint.choosing -= 1

    def _out(self, endpoint: Endpoint, state: State, why: BaseException | str) -> None:
        """Take ``endpoint`` out of rotation after a failure (`Rotation.take_out`), and say so."""
        backoff = Rotation.take_out(endpoint, state, trio.current_time())
        if backoff is None:
            return
        logger.warning(
            "the sidecar at %s is out of rotation for %.1f s (%s): %s",
            endpoint.address,
            backoff,
            _WHY_OUT[state],
            str(why).splitlines()[0],
        )
        if any(source != endpoint.address for source in endpoint.sources):  # from a name
            self._resolve_soon.set()

    def _failed(self, endpoint: Endpoint, state: State, why: BaseException | str) -> None:
        """A strike against ``endpoint`` (`Rotation.strike`); out of rotation as ``state`` if
        that says so."""
        strikes = self._rotation.strike(endpoint, trio.current_time())
        if strikes is None:
            return
        if endpoint.state == "up":
            why = f"{strikes} calls in a row failed there, the last: {why}"
        self._out(endpoint, state, why)

    # -- names -----------------------------------------------------------------------------------

    async def _resolve(self) -> list[GoTaskError]:
        """Resolve every name at once and bring the endpoints up to date; return the errors of
        the names that could not be resolved (they keep their addresses)."""
        self._resolve_soon = trio.Event()
        errors: list[GoTaskError] = []
        found: dict[str, list[str]] = {}

        async def one(name: Name) -> None:
            try:
                with trio.fail_after(self._resolve_timeout):
                    found[name.text] = await resolve(name)
            except trio.TooSlowError:
                exc = SidecarError(f"cannot resolve {name.host!r} (from {name.text!r}): no answer in time")
                logger.warning("%s; keeping the addresses it had", exc)
                errors.append(exc)
            except SidecarError as exc:
                logger.warning("%s; keeping the addresses it had", exc)
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            for name in self._names:
                nursery.start_soon(one, name)
        self._resolved_at = trio.current_time()
        for name in self._names:
            if name.text in found:
                self._update(name, found[name.text])
        return errors

    def _update(self, name: Name, addresses: list[str]) -> None:
        if self._closed:
            return
        for address in addresses:
            endpoint = self._by_address.get(address)
            if endpoint is None:
                self._add(address, name.text, name.host)
                logger.info("%s resolves to %s too: it joins the rotation", name.text, address)
            else:
                endpoint.sources.add(name.text)
        for endpoint in list(self._endpoints):
            if name.text in endpoint.sources and endpoint.address not in addresses:
                endpoint.sources.discard(name.text)
                if not endpoint.sources:
                    logger.info(
                        "%s no longer resolves to %s: it leaves the rotation", name.text, endpoint.address
                    )
                    self._retire(endpoint)

    def _add(self, address: str, source: str, hostname: str | None) -> None:
        if address in self._by_address:
            self._by_address[address].sources.add(source)
            return
        pool = self._pool_for(address, hostname)
        endpoint = Endpoint(address, pool, source)
        pool.on_going_away = lambda: self._out(endpoint, "draining", "it said $goaway")
        self._endpoints.append(endpoint)
        self._by_address[address] = endpoint

    def _retire(self, endpoint: Endpoint) -> None:
        """Take ``endpoint`` out for good; its pool closes once its calls in flight are done."""
        endpoint.retired = True
        self._endpoints.remove(endpoint)
        del self._by_address[endpoint.address]
        if endpoint.pool.in_flight:
            self._retiring.add(endpoint)
        else:
            endpoint.pool.close()
