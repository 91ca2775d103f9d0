"""Outlier ejection in `Endpoints`, against fake sidecars over memory streams on the autojump
clock (tests/fakesidecar.py): which failures are strikes, when an endpoint leaves the rotation,
and how it is tried again. tests/test_endpoints.py does the same with real sidecars, SIGSTOPped."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from fakeresolver import Resolver
from fakesidecar import FakePeer, fake_connect

from trio_gotask import SidecarError
from trio_gotask import _endpoints as endpoints_module
from trio_gotask._endpoints import Endpoints
from trio_gotask._errors import lost_without_explanation
from trio_gotask._names import dns_name
from trio_gotask._opening import Opened
from trio_gotask._pool import Pool
from trio_gotask._rotation import FIRST_BACKOFF, STRIKES
from trio_gotask._settings import Limits, PoolSettings

pytestmark = pytest.mark.fast  # no process: nox -s fast

STUCK = 10_000
"""The autojump clock's hang guard: a test waiting for what never comes fails at once."""
A, B = "10.0.0.1:6001", "10.0.0.2:6001"
HOLD = "hold"
"""An argument that a fake sidecar holds until `Fakes.release`; any other is answered at once
with the sidecar's address."""


class Fakes:
    """Fake sidecars, one per address, each a `FakePeer` per connection. One that is frozen
    reads requests (as a stopped process's kernel does) and answers none until thawed."""

    def __init__(self, nursery: trio.Nursery, addresses: list[str]) -> None:
        self.nursery = nursery
        self.peers: dict[str, list[FakePeer]] = {a: [] for a in addresses}
        self.frozen: set[str] = set()
        self.gates: dict[str, trio.Event] = {}
        """Connections to these addresses open only once the event is set."""
        self._thawed = trio.Event()
        self._released = trio.Event()

    def pool_for(self, address: str, hostname: str | None) -> Pool:
        async def answer(request: Any) -> Any:
            while address in self.frozen:
                await self._thawed.wait()
            if request.params == HOLD:
                await self._released.wait()
            return address

        new_peer = fake_connect(self.nursery, self.peers[address], answer=answer)

        async def connect() -> Opened:
            gate = self.gates.get(address)
            if gate is not None:
                await gate.wait()
            return await new_peer()

        return Pool(
            self.nursery,
            connect,
            PoolSettings(1, Limits(1 << 20, 64), keepalive_timeout=None),
            explain=lost_without_explanation,
        )

    def thaw(self, address: str) -> None:
        self.frozen.discard(address)
        self._thawed.set()
        self._thawed = trio.Event()

    def release(self) -> None:
        self._released.set()
        self._released = trio.Event()


@asynccontextmanager
async def open_endpoints(addresses: tuple[str, ...] = (A, B)) -> AsyncIterator[tuple[Endpoints, Fakes]]:
    with trio.fail_after(STUCK):
        async with trio.open_nursery() as nursery:
            fakes = Fakes(nursery, list(addresses))
            endpoints = Endpoints(addresses, fakes.pool_for)
            await endpoints.start()
            try:
                yield endpoints, fakes
            finally:
                endpoints.close()
                nursery.cancel_scope.cancel()


def state(endpoints: Endpoints, address: str) -> tuple[str, int]:
    """The endpoint's state and its failures (times in a row it left the rotation)."""
    (found,) = (e for e in endpoints.statistics().endpoints if e.address == address)
    return found.state, found.failures


async def hold(nursery: trio.Nursery, endpoints: Endpoints, address: str) -> trio.CancelScope:
    """Start a call that ``address`` holds, so that it is the busier one, and return the scope
    that cancels it; ``address`` must be one of the least loaded. (Ties go round from a random
    start: a call that lands elsewhere is cancelled, by hand, and another is started.)"""
    loads = {e.address: e.in_flight for e in endpoints.statistics().endpoints}
    assert loads[address] == min(loads.values()), loads

    async def held(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            await endpoints.call("Echo", HOLD)

    while True:
        before = {e.address: e.in_flight for e in endpoints.statistics().endpoints}
        scope: trio.CancelScope = await nursery.start(held)
        await trio.testing.wait_all_tasks_blocked()
        after = {e.address: e.in_flight for e in endpoints.statistics().endpoints}
        if after[address] == before[address] + 1:
            return scope
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()


async def expires(endpoints: Endpoints, arg: Any = None) -> bool:
    """Make a call under a 1 s deadline; whether the deadline passed."""
    with trio.move_on_after(1) as scope:
        await endpoints.call("Echo", arg)
    return scope.cancelled_caught


@pytest.fixture(params=["Cancelled.source", "deadline read first"])
def deadline_check(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ways of telling a deadline from a cancel by hand: trio 0.31 and later say it in
    `trio.Cancelled`; before, the call reads its deadline first."""
    if request.param == "deadline read first":
        monkeypatch.setattr(endpoints_module, "_CANCELLED_SAYS_WHY", False)


async def test_deadlines_passing_at_a_silent_endpoint_take_it_out(
    autojump_clock: trio.testing.MockClock, deadline_check: None, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_endpoints() as (endpoints, fakes), trio.open_nursery() as nursery:
        await hold(nursery, endpoints, B)  # every call below goes to A, the less loaded
        fakes.frozen.add(A)
        for _ in range(STRIKES - 1):
            assert await expires(endpoints)
        assert state(endpoints, A) == ("up", 0)
        fakes.thaw(A)
        assert await endpoints.call("Echo", None) == A  # an answer: the count starts again
        fakes.frozen.add(A)
        for _ in range(STRIKES - 1):
            assert await expires(endpoints)
        assert state(endpoints, A) == ("up", 0)
        assert await expires(endpoints)
        assert state(endpoints, A) == ("stalled", 1)
        assert f"the sidecar at {A} is out of rotation for 0.5 s (calls ran out of time there)" in caplog.text
        assert "3 calls in a row failed there" in caplog.text
        assert [await endpoints.call("Echo", None) for _ in range(10)] == [B] * 10  # resting
        nursery.cancel_scope.cancel()


async def test_a_call_cancelled_by_hand_is_no_strike(
    autojump_clock: trio.testing.MockClock, deadline_check: None
) -> None:
    async with open_endpoints() as (endpoints, fakes), trio.open_nursery() as nursery:
        await hold(nursery, endpoints, B)
        fakes.frozen.add(A)
        for _ in range(STRIKES * 2):
            with trio.CancelScope() as scope:

                async def cancel_soon(scope: trio.CancelScope = scope) -> None:
                    await trio.sleep(1)
                    scope.cancel()

                nursery.start_soon(cancel_soon)
                await endpoints.call("Echo", None)
            assert scope.cancelled_caught
        assert state(endpoints, A) == ("up", 0)
        nursery.cancel_scope.cancel()


async def test_a_deadline_passing_while_the_endpoint_answers_others_is_no_strike(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A call that runs long where other calls are answered shows a slow method, not a frozen
    sidecar."""
    async with open_endpoints() as (endpoints, _), trio.open_nursery() as nursery:
        await hold(nursery, endpoints, B)
        second = await hold(nursery, endpoints, A)
        await hold(nursery, endpoints, B)
        second.cancel()  # by hand: B holds 2, A none
        await trio.testing.wait_all_tasks_blocked()
        for _ in range(STRIKES * 2):

            async def answered_meanwhile() -> None:
                await trio.testing.wait_all_tasks_blocked()
                assert await endpoints.call("Echo", None) == A  # A holds 1, B 2: to A

            nursery.start_soon(answered_meanwhile)
            assert await expires(endpoints, HOLD)  # A holds it past its deadline
        assert state(endpoints, A) == ("up", 0)
        nursery.cancel_scope.cancel()


async def test_the_last_endpoint_in_rotation_stays(autojump_clock: trio.testing.MockClock) -> None:
    async with open_endpoints() as (endpoints, fakes):
        fakes.frozen |= {A, B}
        for _ in range(STRIKES * 2):
            assert await expires(endpoints)
        states = {state(endpoints, a)[0] for a in (A, B)}
        assert states == {"up", "stalled"}  # whichever had 3 first left; the other is all there is
        fakes.thaw(A)
        fakes.thaw(B)


async def test_after_its_rest_one_call_at_a_time_tries_it(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_gotask")
    async with open_endpoints() as (endpoints, fakes), trio.open_nursery() as nursery:
        await hold(nursery, endpoints, B)
        fakes.frozen.add(A)
        for _ in range(STRIKES):
            assert await expires(endpoints)
        assert state(endpoints, A) == ("stalled", 1)

        await trio.sleep(FIRST_BACKOFF)  # its rest ends: the next call tries it, and only that one
        results: list[object] = []

        async def call() -> None:
            with trio.move_on_after(1):
                results.append(await endpoints.call("Echo", None))

        async with trio.open_nursery() as calls:
            for _ in range(5):
                calls.start_soon(call)
        assert results == [B] * 4  # the fifth tried A, and met its deadline
        assert state(endpoints, A) == ("stalled", 2)  # one strike is enough now: out for 1 s

        fakes.thaw(A)
        await trio.sleep(FIRST_BACKOFF * 2)
        assert await endpoints.call("Echo", None) == A
        assert state(endpoints, A) == ("up", 0)
        assert f"the sidecar at {A} is back in rotation" in caplog.text
        nursery.cancel_scope.cancel()


async def test_calls_lost_with_their_connection_are_strikes(autojump_clock: trio.testing.MockClock) -> None:
    async with open_endpoints() as (endpoints, fakes), trio.open_nursery() as nursery:
        lost: list[SidecarError] = []

        async def call() -> None:
            try:
                await endpoints.call("Echo", HOLD)
            except SidecarError as exc:
                lost.append(exc)

        for count in (STRIKES - 1, STRIKES):
            for _ in range(count * 2):  # half each, ties in turn
                nursery.start_soon(call)
                await trio.testing.wait_all_tasks_blocked()
            assert [e.in_flight for e in endpoints.statistics().endpoints] == [count, count]
            await fakes.peers[A][-1].hang_up()  # as a sidecar that exits, or a keepalive, ends it
            await trio.testing.wait_all_tasks_blocked()
            assert len(lost) == count
            lost.clear()
            fakes.release()
            await trio.testing.wait_all_tasks_blocked()
            if count < STRIKES:
                assert state(endpoints, A) == ("up", 0)
                # Two calls in turn, one each: A answers one, and the count starts again.
                assert {await endpoints.call("Echo", None) for _ in range(2)} == {A, B}
        assert state(endpoints, A) == ("down", 1)
        nursery.cancel_scope.cancel()


async def test_callers_waiting_for_a_connection_count_as_load(autojump_clock: trio.testing.MockClock) -> None:
    """A sidecar whose connection is being opened (slowly: a frozen one accepts, then says
    nothing until connect_timeout) is not the least loaded just because none is open."""
    async with open_endpoints() as (endpoints, fakes), trio.open_nursery() as nursery:
        await hold(nursery, endpoints, B)
        fakes.gates[A] = trio.Event()
        await fakes.peers[A][-1].hang_up()  # nothing in flight: no strike, and a new one is needed
        await trio.testing.wait_all_tasks_blocked()
        assert [e.connections for e in endpoints.statistics().endpoints] == [0, 1]
        answers: list[str] = []

        async def call() -> None:
            answers.append(await endpoints.call("Echo", None))

        for _ in range(5):
            nursery.start_soon(call)
            await trio.testing.wait_all_tasks_blocked()
        # The first waits for A's connection; then A's waiting callers count as its load.
        assert answers.count(B) >= 2, answers
        fakes.gates[A].set()
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(answers) == [A] * (5 - answers.count(B)) + [B] * answers.count(B)  # all answered
        nursery.cancel_scope.cancel()


# -- DNS names, with a fake resolver --------------------------------------------------------------

NAMED = ("10.0.0.1:6001", "10.0.0.2:6001", "10.0.0.3:6001")


async def answered_by(endpoints: Endpoints, calls: int) -> set[str]:
    """The addresses that answered ``calls`` calls (each fake answers with its address)."""
    return {await endpoints.call("Echo", None) for _ in range(calls)}


async def test_a_name_is_resolved_again_and_its_addresses_join_and_leave(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_gotask")
    resolver = Resolver({"sidecars.test": ["10.0.0.1"]})
    trio.socket.set_custom_hostname_resolver(resolver)
    name = dns_name("dns:sidecars.test:6001")
    assert name is not None
    with trio.fail_after(STUCK):
        async with trio.open_nursery() as nursery:
            fakes = Fakes(nursery, list(NAMED))
            endpoints = Endpoints([], fakes.pool_for, names=[name], resolve_interval=5.0)
            await endpoints.start()
            nursery.start_soon(endpoints.watch)
            assert await answered_by(endpoints, 4) == {NAMED[0]}

            resolver.names["sidecars.test"] = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]  # scaled up
            await resolver.resolutions(2)
            assert [e.address for e in endpoints.statistics().endpoints] == list(NAMED)
            assert await answered_by(endpoints, 30) == set(NAMED)

            # Scaled down, with a call in flight at the address that goes: it finishes there,
            # and its pool closes after.
            held = trio.Event()

            async def hold_at_second() -> None:
                assert await endpoints.call("Echo", HOLD) in NAMED
                held.set()

            for _ in range(3):  # one call each, at least one of them at the second address
                nursery.start_soon(hold_at_second)
            await trio.testing.wait_all_tasks_blocked()
            resolver.names["sidecars.test"] = ["10.0.0.1", "10.0.0.3"]
            await resolver.resolutions(2)
            assert [e.address for e in endpoints.statistics().endpoints] == [NAMED[0], NAMED[2]]
            fakes.release()
            await held.wait()
            assert await answered_by(endpoints, 20) == {NAMED[0], NAMED[2]}

            # A name that stops resolving keeps the addresses it had.
            del resolver.names["sidecars.test"]
            await resolver.resolutions(2)
            assert [e.address for e in endpoints.statistics().endpoints] == [NAMED[0], NAMED[2]]
            assert any("keeping the addresses it had" in r.getMessage() for r in caplog.records)
            endpoints.close()
            nursery.cancel_scope.cancel()
    messages = [r.getMessage() for r in caplog.records]
    assert any("resolves to 10.0.0.2:6001 too: it joins the rotation" in m for m in messages)
    assert any("no longer resolves to 10.0.0.2:6001: it leaves the rotation" in m for m in messages)
