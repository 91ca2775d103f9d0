"""`Pool` against fake sidecars over memory streams (tests/fakesidecar.py): when connections
open, which one a call takes, and what a broken, failed or closed one does to the calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import outcome
import pytest
import trio
import trio.testing
from fakesidecar import FakePeer, fake_connect
from wirehelpers import pack

from trio_gotask import GoTask, GoTaskError, ProtocolError, ShuttingDown, SidecarError
from trio_gotask._errors import error_factory, lost_without_explanation
from trio_gotask._opening import Connect, Opened
from trio_gotask._pool import _RETRY_AFTER, HEAVY, Pool
from trio_gotask._settings import Limits, PoolSettings
from trio_gotask._wire import frame_header

pytestmark = pytest.mark.fast  # no process: nox -s fast

# Every test runs on the autojump clock, so that a test waiting for what never comes fails at once,
# its clock jumping to this deadline.
STUCK = 10_000


class Sidecar:
    """The `Connect` of a pool: each call opens a fresh `FakePeer` (all in ``peers``), after
    ``gate`` is set, unless ``error`` is set, which it raises as a `SidecarError`."""

    def __init__(self, nursery: trio.Nursery, **peer: Any) -> None:
        self.nursery = nursery
        self.peers: list[FakePeer] = []
        self.attempts: list[float] = []
        """When each connection was asked for."""
        self.error: str | None = None
        self.gate = trio.Event()
        self.gate.set()
        self._connect = fake_connect(nursery, self.peers, **peer)

    async def __call__(self) -> Opened:
        self.attempts.append(trio.current_time())
        await self.gate.wait()
        if self.error is not None:
            raise SidecarError(self.error)
        return await self._connect()

    def loads(self) -> list[int]:
        """Requests each peer holds unanswered."""
        return [len(peer.in_flight) for peer in self.peers]


def new_pool(nursery: trio.Nursery, connect: Connect, *, size: int = 1) -> Pool:
    settings = PoolSettings(size, Limits(1 << 20, 64), keepalive_timeout=None)
    return Pool(nursery, connect, settings, explain=lost_without_explanation)


@asynccontextmanager
async def open_pool(*, size: int = 1, **peer: Any) -> AsyncIterator[tuple[Pool, Sidecar]]:
    """A pool of ``size`` and its fake sidecar (``peer`` configures each `FakePeer`)."""
    with trio.fail_after(STUCK):
        async with trio.open_nursery() as nursery:
            sidecar = Sidecar(nursery, **peer)
            pool = new_pool(nursery, sidecar, size=size)
            try:
                yield pool, sidecar
            finally:
                nursery.cancel_scope.cancel()


class Call:
    """A call to ``Echo`` running in the background; ``result`` holds its outcome once ``done``."""

    def __init__(self, nursery: trio.Nursery, pool: Pool, arg: Any = None) -> None:
        self.result: outcome.Outcome[Any] | None = None
        self.done = trio.Event()
        nursery.start_soon(self._run, pool, arg)

    async def _run(self, pool: Pool, arg: Any) -> None:
        self.result = await outcome.acapture(call, pool, arg)
        self.done.set()

    async def outcome(self) -> Any:
        """The call's result, or its exception raised."""
        await self.done.wait()
        assert self.result is not None
        return self.result.unwrap()


async def start_call(nursery: trio.Nursery, pool: Pool, arg: Any = None) -> Call:
    """A `Call`, once it settled: sent on the connection it chose, or waiting. (Calls started
    together may choose in any order: Trio runs the tasks of one batch in random order.)"""
    started = Call(nursery, pool, arg)
    await trio.testing.wait_all_tasks_blocked()
    return started


async def call(pool: Pool, arg: Any = None) -> Any:
    """One call, the way a `GoTask` makes it."""
    return await GoTask(pool).call("Echo", arg)


# -- opening connections ---------------------------------------------------------------------------


async def test_a_pool_holds_at_least_one_connection(autojump_clock: trio.testing.MockClock) -> None:
    async with open_pool() as (_, sidecar):
        with pytest.raises(ValueError, match="pool_size must be at least 1, not 0"):
            new_pool(sidecar.nursery, sidecar, size=0)


async def test_no_connection_opens_before_a_call_needs_it(autojump_clock: trio.testing.MockClock) -> None:
    async with open_pool(size=4) as (pool, sidecar):
        await trio.testing.wait_all_tasks_blocked()
        assert sidecar.attempts == []
        assert await call(pool, "x") == "x"
        assert (len(sidecar.peers), pool.connections, pool.opened) == (1, 1, 1)


async def test_warm_up_opens_the_first_connection_once(autojump_clock: trio.testing.MockClock) -> None:
    async with open_pool(size=4) as (pool, sidecar):
        await pool.warm_up()
        await pool.warm_up()
        assert (len(sidecar.peers), pool.connections) == (1, 1)


async def test_only_is_the_connection_of_a_full_pool_of_one(autojump_clock: trio.testing.MockClock) -> None:
    async with open_pool(size=1) as (pool, _):
        assert pool.only is None
        await pool.warm_up()
        assert pool.only is not None
        assert await pool.choose() is pool.only


async def test_a_pool_that_may_grow_has_no_only_connection(autojump_clock: trio.testing.MockClock) -> None:
    async with open_pool(size=2) as (pool, _):
        await pool.warm_up()
        assert pool.only is None


async def test_a_burst_opens_size_connections_at_once_and_spreads_over_them(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_pool(size=3, answer=None) as (pool, sidecar):
        for i in range(20):
            Call(sidecar.nursery, pool, i)
        await trio.testing.wait_all_tasks_blocked()
        assert (len(sidecar.attempts), pool.connections, pool.opened) == (3, 3, 3)
        assert sorted(sidecar.loads()) == [6, 7, 7]
        assert pool.in_flight == 20


async def test_calls_go_to_the_least_loaded_connection_and_open_more_only_when_it_is_busy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_pool(size=3, answer=None) as (pool, sidecar):
        await pool.warm_up()
        # Each caller in turn: the least-loaded connection was idle (no new one), or busy (one
        # opens for the next caller), until the pool is full.
        expected = [[1], [2, 0], [2, 1], [2, 2, 0], [2, 2, 1], [2, 2, 2], [3, 2, 2]]
        for i, loads in enumerate(expected):
            await start_call(sidecar.nursery, pool, i)
            assert sidecar.loads() == loads


async def test_small_calls_keep_off_a_connection_carrying_a_big_frame_and_big_ones_share_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_pool(size=2, answer=None) as (pool, sidecar):
        await pool.warm_up()
        big = b"x" * HEAVY
        await start_call(sidecar.nursery, pool, big)
        assert sidecar.loads() == [1]
        # The one connection carries a big call: the next call takes it anyway (nothing else is
        # open yet) and opens a second one, which every later small call prefers.
        expected = [[2, 0], [2, 1], [2, 2], [2, 3]]
        for i, loads in enumerate(expected):
            await start_call(sidecar.nursery, pool, i)
            assert sidecar.loads() == loads
        await start_call(sidecar.nursery, pool, big)
        assert sidecar.loads() == [3, 3]  # joins the big call, though the other is as loaded
        await start_call(sidecar.nursery, pool, b"small bytes")
        assert sidecar.loads() == [3, 4]  # bytes below the threshold make a small call


async def test_without_big_calls_the_least_loaded_connection_is_chosen(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_pool(size=2, answer=None) as (pool, sidecar):
        await pool.warm_up()
        for i in range(4):
            await start_call(sidecar.nursery, pool, i)
        assert sidecar.loads() == [2, 2]
        await start_call(sidecar.nursery, pool, b"x" * HEAVY)
        assert sorted(sidecar.loads()) == [2, 3]  # a big call alone takes the least loaded


# -- failing to open -------------------------------------------------------------------------------


async def test_warm_up_raises_the_error_of_connect(autojump_clock: trio.testing.MockClock) -> None:
    async with open_pool() as (pool, sidecar):
        sidecar.error = "nobody listens at fake.sock"
        with pytest.raises(SidecarError, match=r"nobody listens at fake\.sock"):
            await pool.warm_up()
        assert pool.connections == 0


async def _refused() -> Opened:
    raise ConnectionRefusedError("connection refused")


async def _broken() -> Opened:
    try:
        raise OSError("broken pipe")
    except OSError as exc:
        raise trio.BrokenResourceError from exc


@pytest.mark.parametrize(
    ("connect", "says"),
    [(_refused, "connection refused"), (_broken, "broken pipe")],
)
async def test_an_os_error_of_connect_becomes_a_sidecar_error(
    autojump_clock: trio.testing.MockClock, connect: Connect, says: str
) -> None:
    async with trio.open_nursery() as nursery:
        pool = new_pool(nursery, connect)
        with pytest.raises(SidecarError, match=rf"^cannot connect to the sidecar: {says}$"):
            await pool.warm_up()


async def test_callers_waiting_for_a_connection_that_fails_to_open_get_its_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_pool(size=2) as (pool, sidecar):
        sidecar.error = "the sidecar is not there"
        calls = [Call(sidecar.nursery, pool) for _ in range(3)]
        for waiting in calls:
            with pytest.raises(SidecarError, match="the sidecar is not there"):
                await waiting.outcome()
        # With no connection at all, the next call tries again at once.
        sidecar.error = None
        failed_at = trio.current_time()
        assert await call(pool, "again") == "again"
        assert sidecar.attempts[-1] == failed_at


async def test_each_waiting_caller_gets_its_own_copy_of_the_open_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def connect() -> Opened:
        await trio.sleep(1)
        raise SidecarError("it exited", returncode=3, stderr_tail="last words")

    async with trio.open_nursery() as nursery:
        pool = new_pool(nursery, connect, size=1)
        calls = [Call(nursery, pool) for _ in range(3)]
        errors = []
        for waiting in calls:
            with pytest.raises(SidecarError) as info:
                await waiting.outcome()
            errors.append(info.value)
        assert len({id(e) for e in errors}) == 3
        for error in errors:
            assert (error.returncode, error.stderr_tail) == (3, "last words")
            assert str(error) == "it exited\n--- last lines of the sidecar's stderr ---\nlast words"


async def test_an_open_failing_while_others_serve_is_logged_and_retried_later(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_pool(size=2, answer=None) as (pool, sidecar):
        await pool.warm_up()
        await start_call(sidecar.nursery, pool)
        sidecar.error = "too many open files"
        await start_call(sidecar.nursery, pool)  # the connection is busy: this one opens another, which fails
        failed_at = sidecar.attempts[-1]
        assert [(r.name, r.levelname) for r in caplog.records] == [("trio_gotask", "WARNING")]
        assert "opening another connection to the sidecar failed: too many open files" in caplog.text

        sidecar.error = None
        await start_call(sidecar.nursery, pool)  # too soon: no new attempt; it waits on the busy one
        assert len(sidecar.attempts) == 2
        assert sidecar.loads() == [3]

        await trio.sleep(_RETRY_AFTER)
        await start_call(sidecar.nursery, pool)
        assert sidecar.attempts[-1] == failed_at + _RETRY_AFTER
        assert sidecar.loads() == [4, 0]
        assert pool.connections == 2


# -- full connections ------------------------------------------------------------------------------


async def test_callers_beyond_every_connections_limit_wait_for_a_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow_echo(request: Any) -> Any:
        await trio.sleep(1)
        return request.params

    # Each peer announces max_inflight=2 in its $hello, below the pool's 64.
    async with open_pool(size=2, answer=slow_echo, max_inflight=2) as (pool, sidecar):
        await pool.warm_up()
        start = trio.current_time()
        calls = [Call(sidecar.nursery, pool, i) for i in range(8)]
        assert [await c.outcome() for c in calls] == list(range(8))
        # Two waves of four (two connections, two slots each), one second each.
        assert trio.current_time() - start == 2
        assert [peer.most_in_flight for peer in sidecar.peers] == [2, 2]


async def test_a_caller_waits_for_a_connection_still_opening_when_the_others_are_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_pool(size=2, answer=None, max_inflight=1) as (pool, sidecar):
        await pool.warm_up()
        sidecar.gate = trio.Event()
        first = await start_call(sidecar.nursery, pool, "first")
        second = await start_call(sidecar.nursery, pool, "second")  # no slot; one opening: waits
        assert sidecar.loads() == [1]
        sidecar.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert sidecar.loads() == [1, 1]
        for peer in sidecar.peers:
            await peer.answer_waiting()
        assert (await first.outcome(), await second.outcome()) == ("first", "second")


# -- broken connections ----------------------------------------------------------------------------
# With one slot per connection (max_inflight=1 in the peers' $hello), two calls take one each.


async def test_a_peer_hanging_up_fails_only_the_calls_on_its_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_pool(size=2, answer=None, max_inflight=1) as (pool, sidecar):
        await pool.warm_up()
        lost = await start_call(sidecar.nursery, pool, "lost")
        kept = await start_call(sidecar.nursery, pool, "kept")
        assert sidecar.loads() == [1, 1]
        await sidecar.peers[0].hang_up()
        with pytest.raises(SidecarError, match="the sidecar closed the connection") as info:
            await lost.outcome()
        assert info.value.returncode is None
        assert not kept.done.is_set()
        await sidecar.peers[1].answer_waiting()
        assert await kept.outcome() == "kept"
        assert pool.connections == 1


async def test_a_caller_waiting_for_a_slot_on_a_connection_that_breaks_goes_to_another(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_pool(size=2, answer=None, max_inflight=1) as (pool, sidecar):
        await pool.warm_up()
        lost = await start_call(sidecar.nursery, pool, "lost")
        kept = await start_call(sidecar.nursery, pool, "kept")
        waiting = await start_call(
            sidecar.nursery, pool, "waiting"
        )  # every slot taken: it waits on the first
        assert sidecar.loads() == [1, 1]
        await sidecar.peers[0].hang_up()
        with pytest.raises(SidecarError, match="the sidecar closed the connection"):
            await lost.outcome()
        await trio.testing.wait_all_tasks_blocked()
        assert not waiting.done.is_set()  # it was never sent: it waits for the other connection
        await sidecar.peers[1].answer_waiting()
        assert await kept.outcome() == "kept"
        await trio.testing.wait_all_tasks_blocked()
        await sidecar.peers[1].answer_waiting()
        assert await waiting.outcome() == "waiting"
        assert len(sidecar.peers) == 2


async def test_a_caller_waiting_for_a_slot_on_the_only_connection_gets_its_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_pool(size=1, answer=None, max_inflight=1) as (pool, sidecar):
        await pool.warm_up()
        lost = await start_call(sidecar.nursery, pool, "lost")
        waiting = await start_call(sidecar.nursery, pool, "waiting")
        await sidecar.peers[0].hang_up()
        for call_ in (lost, waiting):
            with pytest.raises(SidecarError, match="the sidecar closed the connection") as info:
                await call_.outcome()
            assert info.value.__cause__ is not None  # the reason, not an internal exception


async def test_a_connection_told_goaway_takes_no_new_call_and_closes_once_its_calls_are_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_pool(size=2, answer=None) as (pool, sidecar):
        told: list[None] = []
        pool.on_going_away = lambda: told.append(None)
        await pool.warm_up()
        first = await start_call(sidecar.nursery, pool, "first")
        goaway = pack([2, "$goaway", "the sidecar is shutting down"])
        await sidecar.peers[0].send(frame_header(len(goaway)) + goaway)
        await trio.testing.wait_all_tasks_blocked()
        assert told == [None] and pool.connections == 0  # out of the pool at once
        assert not sidecar.peers[0].closed.is_set()  # but open: a call is still in flight there
        second = await start_call(sidecar.nursery, pool, "second")  # goes to a new connection
        assert sidecar.loads() == [1, 1]
        await sidecar.peers[1].answer_waiting()
        assert await second.outcome() == "second"
        await sidecar.peers[0].answer_waiting()
        assert await first.outcome() == "first"  # answered on the connection going away
        await sidecar.peers[0].closed.wait()  # then the client closed it, so the sidecar may exit
        assert pool.connections == 1


async def test_calls_unanswered_when_the_sidecar_says_drained_were_not_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_pool(size=1, answer=None) as (pool, sidecar):
        await pool.warm_up()
        waiting = await start_call(sidecar.nursery, pool, "never run")
        for method in ["$goaway", "$drained"]:
            notification = pack([2, method, "..."])
            await sidecar.peers[0].send(frame_header(len(notification)) + notification)
        # Its only connection is gone: the caller gets why (with a sidecar beside it, the call
        # would go there: test_endpoints_load.py).
        with pytest.raises(
            ShuttingDown, match="Echo: shutting_down: the sidecar shut down before it ran the call"
        ):
            await waiting.outcome()
        await sidecar.peers[0].closed.wait()  # the client closed the connection


async def test_garbage_from_the_peer_fails_its_calls_with_a_protocol_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_pool(size=2, answer=None, max_inflight=1) as (pool, sidecar):
        await pool.warm_up()
        spoiled = await start_call(sidecar.nursery, pool)
        kept = await start_call(sidecar.nursery, pool, "kept")
        garbage = pack("not a message")
        await sidecar.peers[0].send(frame_header(len(garbage)) + garbage)
        with pytest.raises(ProtocolError) as info:
            await spoiled.outcome()
        assert info.value.code == "bad_message"
        assert "a message must be a non-empty array" in str(info.value)
        await sidecar.peers[1].answer_waiting()
        assert await kept.outcome() == "kept"


async def test_the_call_after_a_connection_broke_opens_a_replacement(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_pool(size=1) as (pool, sidecar):
        await pool.warm_up()
        broken = pool.only
        await sidecar.peers[0].hang_up()
        await sidecar.peers[0].closed.wait()
        assert pool.only is None
        assert await call(pool, "again") == "again"
        assert (len(sidecar.peers), pool.opened, pool.connections) == (2, 2, 1)
        assert pool.only not in (None, broken)


# -- failing and closing ---------------------------------------------------------------------------


async def test_fail_fails_the_calls_in_flight_and_every_later_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_pool(size=2, answer=None, max_inflight=1) as (pool, sidecar):
        await pool.warm_up()
        calls = [await start_call(sidecar.nursery, pool) for _ in range(2)]
        assert sidecar.loads() == [1, 1]
        pool.fail(error_factory(SidecarError, "the sidecar exited with status 3", returncode=3))
        for failed in calls:
            with pytest.raises(SidecarError, match="status 3") as info:
                await failed.outcome()
            assert info.value.returncode == 3
        with pytest.raises(SidecarError, match="status 3"):
            await call(pool)
        assert (pool.connections, pool.in_flight) == (0, 0)
        for peer in sidecar.peers:
            await peer.closed.wait()


async def test_close_wakes_the_callers_waiting_for_a_connection_to_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_pool(size=1) as (pool, sidecar):
        sidecar.gate = trio.Event()
        waiting = await start_call(sidecar.nursery, pool)
        pool.close()
        with pytest.raises(GoTaskError, match="the GoTask is closed"):
            await waiting.outcome()
        # The connection that opens after all is closed at once, and never used.
        sidecar.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert len(sidecar.peers) == 1
        await sidecar.peers[0].closed.wait()
        assert pool.connections == 0
        with pytest.raises(GoTaskError, match="the GoTask is closed"):
            await call(pool)


async def test_close_after_fail_keeps_the_first_error(autojump_clock: trio.testing.MockClock) -> None:
    async with open_pool() as (pool, _):
        await pool.warm_up()
        pool.fail(error_factory(SidecarError, "the sidecar exited with status 3", returncode=3))
        pool.close()
        with pytest.raises(SidecarError, match="status 3"):
            await call(pool)


async def test_a_pool_is_the_router_of_one_sidecar_started_elsewhere(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_pool() as (pool, _):
        pool.address = "fake.sock"
        gotask = GoTask(pool)
        assert await gotask.call("Echo", 1) == 1
        assert (gotask.address, gotask.pid, gotask.statistics().restarts) == ("fake.sock", None, 0)
        assert gotask.statistics().connections == 1
        pool.close()
        with pytest.raises(GoTaskError, match="the GoTask is closed"):
            await call(pool)
