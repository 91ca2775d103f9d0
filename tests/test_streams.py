"""Streams (`GoTask.stream`, `ItemStream`) against a sidecar written in Python (tests/fakesidecar.py),
with the autojump clock: credit, cancellation both ways and the races between them, deterministic.
The same against the real Go sidecar, over each transport, is in test_streams_sidecar.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from fakesidecar import FakePeer, frame, open_fake
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from wirehelpers import pack

from trio_gotask import GoTaskError, ItemStream, ProtocolError, RemoteError, ShuttingDown, SidecarError
from trio_gotask._connection import Connection
from trio_gotask._settings import Limits, PoolSettings
from trio_gotask._wire import ITEM, Notification, Request, frame_header

pytestmark = pytest.mark.fast  # no process: nox -s fast

CHANNEL = "memory"


@pytest.fixture(autouse=True, params=["memory", "socket", "pipe"])
def channel(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Over memory streams and over real descriptors, where the reader and a lone caller share
    the descriptor (`Connection._lead`)."""
    monkeypatch.setattr(f"{__name__}.CHANNEL", request.param)
    return str(request.param)


@asynccontextmanager
async def connected(*, max_inflight: int = 64, **peer: Any) -> AsyncIterator[tuple[Connection, FakePeer]]:
    async with trio.open_nursery() as nursery:
        opened, fake = await open_fake(nursery, channel=CHANNEL, answer=None, **peer)
        connection = Connection(opened, PoolSettings(1, Limits(1 << 20, max_inflight), None))
        await nursery.start(connection.run)
        yield connection, fake
        nursery.cancel_scope.cancel()


async def opened(
    connection: Connection, fake: FakePeer, method: str = "App.Count", arg: Any = None, window: int = 1000
) -> tuple[ItemStream, Request]:
    stream = await connection.open_stream(method, arg, window)
    request = await fake.requests.receive()
    return stream, request


async def test_items_arrive_in_order_then_the_end(autojump_clock: trio.testing.MockClock) -> None:
    async with connected() as (connection, fake):
        stream, request = await opened(connection, fake, arg=3)
        assert request.method == "App.Count" and request.params == 3
        assert request.meta == {"stream": 1000}
        assert connection.load == 1 and connection.streams == 1
        for i in range(3):
            await fake.item(request.msgid, i)
        await fake.reply(request.msgid, None)
        async with stream:
            assert [item async for item in stream] == [0, 1, 2]
            with pytest.raises(trio.EndOfChannel):
                await stream.receive()
        assert connection.load == 0 and connection.streams == 0 and connection.busy == 0
        assert connection._free_slots == connection.max_inflight


async def test_a_consumer_waiting_is_woken_by_items_and_by_the_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected() as (connection, fake):
        stream, request = await opened(connection, fake)
        got: list[Any] = []

        async def consume() -> None:
            async for item in stream:
                got.append(item)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            await trio.testing.wait_all_tasks_blocked()
            await fake.item(request.msgid, "a")
            await trio.testing.wait_all_tasks_blocked()
            assert got == ["a"]
            await fake.item(request.msgid, "b")
            await fake.reply(request.msgid, None)
        assert got == ["a", "b"]


async def test_the_error_comes_after_the_items_before_it(autojump_clock: trio.testing.MockClock) -> None:
    async with connected() as (connection, fake):
        stream, request = await opened(connection, fake)
        await fake.item(request.msgid, 1)
        await fake.item(request.msgid, 2)
        await fake.reply(request.msgid, error={"type": "error", "message": "cursor died"})
        got = []
        async with stream:
            with pytest.raises(RemoteError, match=r"App\.Count: cursor died"):
                async for item in stream:
                    got.append(item)
            assert got == [1, 2]
            with pytest.raises(trio.EndOfChannel):
                await stream.receive()


async def test_credit_is_granted_as_items_are_taken_and_not_before(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected() as (connection, fake):
        stream, request = await opened(connection, fake, window=100)
        sizes = [await fake.item(request.msgid, b"x" * 20) for _ in range(4)]  # 25 bytes each
        assert sum(sizes) == 100  # the fourth was sent on a credit of 25: the last it allowed
        await trio.testing.wait_all_tasks_blocked()
        assert fake.credits == []  # nothing taken yet: nothing granted
        assert await stream.receive() == b"x" * 20
        await trio.testing.wait_all_tasks_blocked()
        assert fake.credits == []  # 25 bytes taken: less than half the window
        await stream.receive()
        await fake.credit_arrived.wait()
        assert fake.credits == [[request.msgid, 50]]
        await stream.receive()
        await stream.receive()
        await fake.credit_arrived.wait()
        assert fake.credits == [[request.msgid, 50], [request.msgid, 50]]
        await stream.aclose()


async def test_an_item_larger_than_the_window_still_flows(autojump_clock: trio.testing.MockClock) -> None:
    """The sidecar sends while its credit is positive, so one item may take it below zero: a
    window smaller than an item costs throughput, never a deadlock."""
    async with connected() as (connection, fake):
        stream, request = await opened(connection, fake, window=10)
        size = await fake.item(request.msgid, b"y" * 500)
        assert await stream.receive() == b"y" * 500
        await fake.credit_arrived.wait()
        assert fake.credits == [[request.msgid, size]]
        await fake.item(request.msgid, b"z")  # credit back at 10: allowed
        assert await stream.receive() == b"z"
        await stream.aclose()


async def test_a_sidecar_that_ignores_the_credit_loses_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected() as (connection, fake):
        stream, request = await opened(connection, fake, window=30)
        # In one write: the first is allowed (the credit was positive), the second not (the
        # credit is below zero, and nothing was granted).
        items = [pack([ITEM, request.msgid, b"a" * 40]), pack([ITEM, request.msgid, b"b"])]
        await fake.send(b"".join(frame_header(len(p)) + p for p in items))
        async with stream:
            assert await stream.receive() == b"a" * 40
            with pytest.raises(ProtocolError, match="past its credit") as info:
                await stream.receive()
        assert info.value.code == "bad_message"
        assert connection.broken


@pytest.mark.parametrize(
    ("target", "code", "message"),
    [
        ("call", "bad_message", "a call and not a stream"),
        ("unknown", "unknown_msgid", "not in flight"),
    ],
)
async def test_an_item_for_no_stream_is_a_protocol_error(
    autojump_clock: trio.testing.MockClock, target: str, code: str, message: str
) -> None:
    async with connected() as (connection, fake), trio.open_nursery() as nursery:
        outcome: list[BaseException] = []

        async def call() -> None:
            try:
                await connection.call("App.Hi", "x")
            except BaseException as exc:
                outcome.append(exc)

        nursery.start_soon(call)
        request = await fake.requests.receive()
        await fake.item(request.msgid if target == "call" else 999, 1)
    (error,) = outcome
    assert isinstance(error, ProtocolError) and error.code == code and message in str(error)


async def test_leaving_early_cancels_the_go_method_and_drops_late_items(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected() as (connection, fake):
        stream, request = await opened(connection, fake)
        await fake.item(request.msgid, 1)
        await fake.item(request.msgid, 2)
        async with stream:
            assert await stream.receive() == 1
        assert stream._stream.items == type(stream._stream.items)()  # dropped at once
        while request.msgid not in fake.cancels:
            await fake.cancel_arrived.wait()
        # The slot stays taken until the sidecar answers, as for a call given up.
        assert connection.load == 0 and connection.given_up == 1 and connection.busy == 1
        await fake.item(request.msgid, 3)  # was on its way: discarded, no error
        await fake.reply(request.msgid, error={"type": "cancelled", "message": "context canceled"})
        await trio.testing.wait_all_tasks_blocked()
        assert connection.busy == 0 and not connection.broken


async def test_a_cancelled_scope_around_the_block_cancels_the_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected() as (connection, fake):
        with trio.move_on_after(5) as scope:
            stream, request = await opened(connection, fake)
            async with stream:
                async for _ in stream:
                    pass  # the fake never sends: the deadline cancels the wait
        assert scope.cancelled_caught
        while request.msgid not in fake.cancels:
            await fake.cancel_arrived.wait()
        assert "timeout" in (request.meta or {})
        assert 4.9 < request.meta["timeout"] <= 5  # type: ignore[index]


async def test_a_cancelled_receive_leaves_the_stream_open(autojump_clock: trio.testing.MockClock) -> None:
    async with connected() as (connection, fake):
        stream, request = await opened(connection, fake)
        async with stream:
            with trio.move_on_after(1):
                await stream.receive()
            await fake.item(request.msgid, "still here")
            assert await stream.receive() == "still here"
            assert fake.cancels == []


async def test_items_that_arrived_come_before_the_lost_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected() as (connection, fake):
        stream, request = await opened(connection, fake)
        await fake.item(request.msgid, 1)
        await fake.item(request.msgid, 2)
        await fake.hang_up()
        await trio.testing.wait_all_tasks_blocked()
        assert connection.broken
        async with stream:
            assert await stream.receive() == 1
            assert await stream.receive() == 2
            with pytest.raises(SidecarError):
                await stream.receive()
            with pytest.raises(trio.EndOfChannel):
                await stream.receive()


async def test_a_consumer_waiting_hears_of_the_lost_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected() as (connection, fake):
        stream, _ = await opened(connection, fake)
        async with stream, trio.open_nursery() as nursery:

            async def lose() -> None:
                await trio.testing.wait_all_tasks_blocked()
                await fake.hang_up()

            nursery.start_soon(lose)
            with pytest.raises(SidecarError):
                await stream.receive()


async def test_a_stream_the_sidecar_never_ran_says_so_after_drained(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected() as (connection, fake):
        stream, _ = await opened(connection, fake)
        await fake.send(frame(Notification("$goaway", "bye")))
        await fake.send(frame(Notification("$drained", "none ran")))
        async with stream:
            with pytest.raises(ShuttingDown):
                await stream.receive()


async def test_a_reply_among_items_reaches_its_caller_while_the_consumer_reads_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected() as (connection, fake), trio.open_nursery() as nursery:
        stream, request = await opened(connection, fake, window=1 << 20)
        got: list[Any] = []

        async def call() -> None:
            got.append(await connection.call("App.Hi", "small"))

        nursery.start_soon(call)
        small = await fake.requests.receive()
        for i in range(50):
            await fake.item(request.msgid, i)
        await fake.reply(small.msgid, "answered")
        for i in range(50, 100):
            await fake.item(request.msgid, i)
        await trio.testing.wait_all_tasks_blocked()
        assert got == ["answered"]
        async with stream:
            assert await stream.receive() == 0


async def test_two_receivers_at_once_are_refused(autojump_clock: trio.testing.MockClock) -> None:
    async with connected() as (connection, fake):
        stream, request = await opened(connection, fake)
        async with stream, trio.open_nursery() as nursery:
            nursery.start_soon(stream.receive)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await stream.receive()
            await fake.item(request.msgid, 1)


async def test_closing_wakes_a_receiver_in_another_task(autojump_clock: trio.testing.MockClock) -> None:
    async with connected() as (connection, fake):
        stream, _ = await opened(connection, fake)
        async with trio.open_nursery() as nursery:

            async def receive() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await stream.receive()

            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            await stream.aclose()
            await stream.aclose()  # idempotent
        with pytest.raises(trio.ClosedResourceError):
            await stream.receive()


async def test_a_stream_waits_for_a_slot_and_holds_it_until_its_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected(max_inflight=1) as (connection, fake), trio.open_nursery() as nursery:
        first, request = await opened(connection, fake)
        second: list[ItemStream] = []

        async def open_second() -> None:
            second.append(await connection.open_stream("App.Count", None, 100))

        nursery.start_soon(open_second)
        await trio.testing.wait_all_tasks_blocked()
        assert second == [] and connection.load == 2
        await fake.reply(request.msgid, None)  # the first ends: its slot goes to the second
        await trio.testing.wait_all_tasks_blocked()
        assert len(second) == 1
        async with first:
            with pytest.raises(trio.EndOfChannel):
                await first.receive()
        await second[0].aclose()


async def test_a_sidecar_without_streams_gets_a_clear_error(autojump_clock: trio.testing.MockClock) -> None:
    async with connected(streams=False) as (connection, _):
        with pytest.raises(GoTaskError, match="predates them"):
            await connection.open_stream("App.Count", None, 100)
        assert connection.load == 0


async def test_many_items_in_one_read_yield_now_and_then(autojump_clock: trio.testing.MockClock) -> None:
    """A consumer of a full buffer lets other tasks run every few items, and every receive is a
    cancel point."""
    async with connected() as (connection, fake):
        stream, request = await opened(connection, fake, window=1 << 20)
        payload = b"".join(
            frame_header(len(p)) + p for p in (bytes([0x93, ITEM, request.msgid, i]) for i in range(100))
        )
        await fake.send(payload)
        await trio.testing.wait_all_tasks_blocked()
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await trio.lowlevel.checkpoint()

        async with stream, trio.open_nursery() as nursery:
            nursery.start_soon(tick)
            before = ticks
            assert [await stream.receive() for _ in range(100)] == list(range(100))
            assert ticks - before >= 100 // 16 - 1  # the first yield starts it
            with trio.CancelScope() as scope:
                scope.cancel()
                with pytest.raises(trio.Cancelled):
                    await stream.receive()
            nursery.cancel_scope.cancel()


async def test_an_item_python_cannot_hold_closes_the_connection_and_says_why(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A gotask sidecar refuses such an item in Send (an ItemError); one that sends it anyway
    loses the connection, with a reason naming the stream."""
    async with connected() as (connection, fake):
        stream, request = await opened(connection, fake)
        payload = bytes([0x93, ITEM, request.msgid, 0x81, 0x91, 0x01, 0x02])  # {[1]: 2}
        await fake.send(frame_header(len(payload)) + payload)
        async with stream:
            with pytest.raises(ProtocolError, match="cannot decode") as info:
                await stream.receive()
        assert info.value.code == "bad_message" and f"stream {request.msgid}" in str(info.value)
        assert connection.broken


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.sampled_from(["send", "take", "grant", "interrupt"]), max_size=60),
    st.lists(st.integers(min_value=0, max_value=120), min_size=1, max_size=8),
    st.integers(min_value=1, max_value=200),
    st.sampled_from(["end", "fail", "close"]),
)
@example(["send", "take", "grant", "send", "send", "send"], [0], 1, "end")
def test_any_schedule_keeps_the_items_whole_and_the_memory_bounded(
    actions: list[str], sizes: list[int], window: int, ending: str
) -> None:
    """A producer that keeps to its credit, a consumer that takes items when it likes and has a
    receive cancelled now and then, in any order: the consumer gets every item in order, then
    the end (or the error, or nothing after closing), the client never holds more than the
    window and one item, and the slot comes back."""

    async def main() -> None:
        # Virtual time: a wait that would never end fails at once, and says where.
        with trio.fail_after(3600):
            await schedule()

    async def schedule() -> None:
        async with connected() as (connection, fake):
            stream, request = await opened(connection, fake, window=window)
            msgid = request.msgid
            credit = window
            sent: list[bytes] = []
            got: list[bytes] = []
            granted = 0
            largest = 0
            for step, action in enumerate(actions):
                if action == "send" and credit > 0:
                    item = bytes([step % 256]) * sizes[step % len(sizes)]
                    size = await fake.item(msgid, item)
                    credit -= size
                    largest = max(largest, size)
                    sent.append(item)
                elif action == "take" and stream._stream.items:
                    got.append(await stream.receive())
                elif action == "grant":
                    while granted < len(fake.credits):
                        credit += fake.credits[granted][1]
                        granted += 1
                elif action == "interrupt":
                    with trio.move_on_after(0.001):
                        got.append(await stream.receive())
                await trio.testing.wait_all_tasks_blocked()
                assert sum(stream._stream.sizes) <= window + largest
            if ending == "close":
                await stream.aclose()
                if msgid not in fake.cancels:
                    await fake.cancel_arrived.wait()
                assert msgid in fake.cancels
                await fake.reply(msgid, error={"type": "cancelled", "message": "context canceled"})
            else:
                error = {"type": "error", "message": "boom"} if ending == "fail" else None
                await fake.reply(msgid, error=error)
                async with stream:
                    if ending == "fail":
                        with pytest.raises(RemoteError, match="boom"):
                            async for item in stream:
                                got.append(item)
                    else:
                        got += [item async for item in stream]
                assert got == sent
            assert got == sent[: len(got)]
            await trio.testing.wait_all_tasks_blocked()
            assert connection.busy == 0 and connection.streams == 0 and not connection.broken

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
