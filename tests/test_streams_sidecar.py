"""Streams against the real example sidecar (go/example), over every transport: items, errors,
credit, cancellation both ways, a sidecar dying mid-stream, and the memory bound."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
from standalone import standalone
from timing import HANG

from trio_gotask import (
    BadReply,
    GoTask,
    RemoteError,
    RestartPolicy,
    SidecarError,
    connect_gotask,
    open_gotask,
)
from trio_gotask._address import Transport

TRANSPORTS = ["unix", "tcp", "pipe"]


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> Transport:
    return request.param  # type: ignore[no-any-return]


async def state(gt: GoTask, tried: int = 0, cancelled: int = 0) -> dict[str, int]:
    """The example's Endless counters, once at least ``tried`` Sends were begun and ``cancelled``
    streams saw their context end (Go waits for both: no polling here)."""
    with trio.fail_after(HANG):
        result: dict[str, int] = await gt.call("App.StreamState", {"Tried": tried, "Cancelled": cancelled})
    return result


async def test_items_then_the_end(sidecar: str, transport: Transport) -> None:
    async with open_gotask(sidecar, transport=transport) as gt:
        async with gt.stream("App.Count", 1000) as numbers:
            assert gt.statistics().streams == 1
            assert [n async for n in numbers] == list(range(1000))
        async with gt.stream("App.Words", "streams of words") as words:
            assert [w async for w in words] == ["streams", "of", "words"]
        stats = gt.statistics()
        assert (stats.streams, stats.in_flight, stats.abandoned) == (0, 0, 0)
        assert await gt.call("App.Hi", "after") == {"hello": "after"}


async def test_the_error_after_the_items(sidecar: str, transport: Transport) -> None:
    async with open_gotask(sidecar, transport=transport) as gt:
        got = []
        async with gt.stream("App.CountFail", {"N": 3, "Message": "cursor died"}) as numbers:
            with pytest.raises(RemoteError, match="cursor died") as info:
                async for n in numbers:
                    got.append(n)
        assert got == [0, 1, 2] and info.value.type == "error"
        got = []
        async with gt.stream("App.BadItem") as items:
            with pytest.raises(BadReply, match="item 1 cannot reach Python faithfully"):
                async for item in items:
                    got.append(item)
        assert got == [1]


async def test_a_method_of_the_other_kind_is_refused(sidecar: str) -> None:
    async with open_gotask(sidecar) as gt:
        with pytest.raises(RemoteError, match=r"is a stream method: open it with GoTask\.stream") as info:
            await gt.call("App.Count", 3)
        assert info.value.type == "stream_mismatch"
        async with gt.stream("App.Hi", "x") as items:
            with pytest.raises(RemoteError, match=r"returns one reply: call it with GoTask\.call") as info:
                await items.receive()
        assert info.value.type == "stream_mismatch"


async def test_a_producer_ahead_of_its_consumer_waits_in_send(sidecar: str, transport: Transport) -> None:
    """With a window of 1000 bytes and 105-byte items, Go sends 10 (the credit goes below zero
    on the tenth) and then waits in the eleventh Send until Python takes some: the client never
    holds more than the window and one item."""
    async with open_gotask(sidecar, transport=transport) as gt:
        async with gt.stream("App.Endless", {"Size": 100}, window=1000) as chunks:
            first = await state(gt, tried=11)
            assert first["sent"] == 10 and first["tried"] == 11
            assert gt.statistics().streams == 1
            for _ in range(10):
                assert await chunks.receive() == bytes(100)
            later = await state(gt, tried=first["tried"] + 10)
            assert later["sent"] >= first["sent"] + 9
        await state(gt, cancelled=1)  # leaving the block cancelled the Go method's context


async def test_cancelling_the_scope_cancels_the_go_method(sidecar: str, transport: Transport) -> None:
    async with open_gotask(sidecar, transport=transport) as gt:
        with trio.move_on_after(0.2) as scope:
            async with gt.stream("App.Endless", {"Size": 10}, window=100) as chunks:
                async for _ in chunks:
                    await trio.sleep(0.01)
        assert scope.cancelled_caught
        assert (await state(gt, cancelled=1))["cancelled"] >= 1
        assert gt.statistics().streams == 0


async def test_the_deadline_travels_to_go(sidecar: str) -> None:
    """A stream opened under a deadline ends in Go at that deadline even when Python does not
    read: Go's context carries it (the consumer here waits past it on purpose, unscoped)."""
    async with open_gotask(sidecar) as gt:
        with trio.CancelScope(deadline=trio.current_time() + 0.3):
            opening = gt.stream("App.Endless", {"Size": 10}, window=50)
            chunks = await opening.__aenter__()
        try:
            assert (await state(gt, cancelled=1))["cancelled"] >= 1
            with pytest.raises(RemoteError) as info:
                async for _ in chunks:
                    pass
            assert info.value.type == "deadline_exceeded"
        finally:
            await chunks.aclose()


async def test_calls_go_on_beside_a_busy_stream(sidecar: str, transport: Transport) -> None:
    async with (
        open_gotask(sidecar, transport=transport) as gt,
        gt.stream("App.Endless", {"Size": 64 * 1024}, window=4 << 20) as chunks,
    ):
        await chunks.receive()
        for i in range(20):
            assert await gt.call("App.Hi", str(i)) == {"hello": str(i)}
            await chunks.receive()


@pytest.mark.fault(
    fault="sidecar dies in the middle of a stream",
    sees="the items that arrived, then SidecarError at the next receive",
)
async def test_a_sidecar_dying_mid_stream_ends_it_with_the_reason(sidecar: str, transport: Transport) -> None:
    async with open_gotask(sidecar, transport=transport) as gt:
        assert gt.pid is not None
        async with gt.stream("App.Endless", {"Size": 10}, window=1000) as chunks:
            await state(gt, tried=2)
            os.kill(gt.pid, signal.SIGKILL)
            with trio.fail_after(HANG), pytest.raises(SidecarError, match="SIGKILL"):
                async for _ in chunks:
                    pass


@pytest.mark.fault(
    fault="a consumer that stops reading a stream",
    sees="the Go method waits in Send; the client holds at most the window; calls go on",
)
async def test_a_consumer_that_stops_reading_holds_only_the_window(sidecar: str) -> None:
    async with open_gotask(sidecar) as gt, gt.stream("App.Endless", {"Size": 1000}, window=10_000):
        reached = await state(gt, tried=11)
        assert reached["sent"] == 10
        assert await gt.call("App.Hi", "still served") == {"hello": "still served"}
        assert (await state(gt))["sent"] == 10


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
async def test_a_gibibyte_streams_in_bounded_memory(sidecar: str) -> None:
    """1 GiB in 64 KiB items: the client's resident memory grows by far less than 50 MiB."""
    count, size = 16384, 64 * 1024
    async with open_gotask(sidecar) as gt:
        async with gt.stream("App.Chunks", {"Count": 64, "Size": size}) as warm:
            async for _ in warm:
                pass
        before = most = rss()
        total = 0
        async with gt.stream("App.Chunks", {"Count": count, "Size": size}) as chunks:
            async for i, chunk in aenumerate(chunks):
                assert len(chunk) == size and chunk[0] == i % 256
                total += len(chunk)
                if i % 256 == 0:
                    most = max(most, rss())
    assert total == count * size
    assert most - before < 50 << 20, f"RSS grew by {(most - before) >> 20} MiB"


async def aenumerate(stream: trio.abc.ReceiveChannel[bytes]) -> AsyncIterator[tuple[int, bytes]]:
    i = 0
    async for item in stream:
        yield i, item
        i += 1


async def test_streams_spread_over_several_sidecars(sidecar: str) -> None:
    """Through `connect_gotask` with two addresses, streams are placed like calls, and one of a
    sidecar that went away fails over to the other before anything is sent."""
    async with (
        standalone(sidecar, "-address", "127.0.0.2:0") as a,
        standalone(sidecar, "-address", "127.0.0.3:0") as b,
        connect_gotask([a.address, b.address]) as gt,
        gt.stream("App.Count", 3) as first,
        gt.stream("App.Count", 4) as second,
    ):
        assert gt.statistics().streams == 2
        assert [e.in_flight for e in gt.statistics().endpoints] == [1, 1]
        assert [n async for n in first] == [0, 1, 2]
        assert [n async for n in second] == [0, 1, 2, 3]


async def test_a_stream_opened_while_the_sidecar_restarts_waits_for_it(sidecar: str) -> None:
    async with open_gotask(sidecar, restart=RestartPolicy(backoff=0.01)) as gt:
        pid = gt.pid
        assert pid is not None
        with pytest.raises(SidecarError):
            await gt.call("App.Exit", 3)
        with trio.fail_after(HANG):
            async with gt.stream("App.Count", 2) as numbers:
                assert [n async for n in numbers] == [0, 1]
        assert gt.pid != pid and gt.statistics().restarts == 1
