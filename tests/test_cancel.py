"""Cancellation: the caller's scopes govern calls, the Go context follows, the connection survives."""

from __future__ import annotations

import math
import random

import pytest
import trio
from timing import HANG

from trio_gotask import GoTask, open_gotask
from trio_gotask._address import Transport


@pytest.fixture(params=["unix", "pipe"])
async def gt(request: pytest.FixtureRequest, sidecar: str) -> object:
    # One connection, so every test below shares it with the calls it cancels.
    async with open_gotask(sidecar, transport=request.param, pool_size=1) as gt:
        yield gt


async def test_fail_after_raises_too_slow_and_cancels_go(gt: GoTask) -> None:
    cancelled_before = await gt.call("App.WaitCancelled", 0)

    async def expire_once_running(scope: trio.CancelScope) -> None:
        await gt.call("App.Running", 1)
        scope.deadline = trio.current_time()

    async with trio.open_nursery() as nursery:
        with pytest.raises(trio.TooSlowError):
            with trio.fail_after(HANG) as scope:  # its deadline passes once Go runs the call
                nursery.start_soon(expire_once_running, scope)
                await gt.call("App.Slow", 3_600_000)
    # The Go handler saw ctx.Done(): WaitCancelled returns once the counter moves.
    with trio.fail_after(HANG):
        assert await gt.call("App.WaitCancelled", cancelled_before + 1) >= cancelled_before + 1
    assert await gt.call("App.Hi", "after") == {"hello": "after"}


@pytest.mark.fault(
    fault="a reply arriving after its caller gave up", sees="discarded; never given to another call"
)
@pytest.mark.parametrize("transport", ["unix", "pipe"])
async def test_cancel_while_waiting_returns_and_late_reply_is_discarded(
    sidecar: str, transport: Transport
) -> None:
    # Three slots. The call given up keeps one until its late reply comes, and the first
    # Hold("after") another: Holding(after, 2) and the second Hold cannot both be sent before that
    # reply, which therefore comes while a Hold("after") waits in Go, every time.
    held: list[str] = []
    async with (
        open_gotask(sidecar, transport=transport, pool_size=1, max_inflight=3) as gt,
        trio.open_nursery() as nursery,
    ):
        given_up = trio.CancelScope()

        async def late() -> None:
            with given_up:
                await gt.call("App.Hold", "late")  # ignores its context: replies when released

        async def hold() -> None:
            held.append(await gt.call("App.Hold", "after"))

        with trio.fail_after(HANG):
            nursery.start_soon(late)
            await gt.call("App.Holding", {"name": "late", "n": 1})
            given_up.cancel()
            nursery.start_soon(hold)
            await gt.call("App.Holding", {"name": "after", "n": 1})
            await gt.call("App.Release", "late")
            nursery.start_soon(hold)
            assert await gt.call("App.Holding", {"name": "after", "n": 2}) == 2
            await gt.call("App.Release", "after")
    assert given_up.cancelled_caught
    assert held == ["after", "after"]


async def test_deadline_travels_to_go(gt: GoTask) -> None:
    assert await gt.call("App.Deadline") == -1
    with trio.fail_after(HANG):
        remaining = await gt.call("App.Deadline")
    assert 0 < remaining <= HANG
    # The nearer deadline is the one that travels.
    with trio.move_on_after(2 * HANG), trio.fail_after(HANG):
        remaining = await gt.call("App.Deadline")
    assert 0 < remaining <= HANG


@pytest.mark.fault(
    fault="caller cancelled while its 32 MiB request is written",
    sees="Cancelled; the stream keeps whole frames, next call works",
)
async def test_cancel_while_request_is_being_written(gt: GoTask) -> None:
    big = bytes(32 * 1024 * 1024)
    assert await gt.call("App.Hi", "first") == {"hello": "first"}  # the writer is idle after a call
    with trio.CancelScope() as scope:
        # A deadline is noticed at a checkpoint, and the call's first is its wait for the reply: by
        # then it has written, itself, what the stream took of the frame, far from its 32 MiB.
        scope.deadline = trio.current_time()
        await gt.call("App.Echo", big)
    assert scope.cancelled_caught
    # The rest of the frame is written all the same: the stream holds whole frames only.
    with trio.fail_after(HANG):
        assert await gt.call("App.Hi", "whole") == {"hello": "whole"}


async def test_cancelled_before_send_is_never_sent(gt: GoTask) -> None:
    counted = await gt.call("App.WaitCancelled", 0)
    with trio.CancelScope() as scope:
        scope.cancel()
        await gt.call("App.Slow", 60_000)
    # Never sent, so Go never ran it and never counted a cancellation.
    assert await gt.call("App.WaitCancelled", 0) == counted


@pytest.mark.fault(
    fault="1,000 calls cancelled at random moments",
    sees="Cancelled each; later calls succeed, nothing in flight",
)
async def test_storm_of_cancelled_calls_then_normal_calls(gt: GoTask) -> None:
    rng = random.Random(1)

    async def doomed(i: int) -> None:
        with trio.move_on_after(rng.choice([0, 0.001, 0.01, 0.05])):
            await gt.call("App.Slow", 3_600_000 + i)
            raise AssertionError("Slow should have been cancelled")

    async with trio.open_nursery() as nursery:
        for i in range(1000):
            nursery.start_soon(doomed, i)
    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            for i in range(100):
                nursery.start_soon(gt.call, "App.Echo", i)
        assert await gt.call("App.Hi", "calm") == {"hello": "calm"}
    assert gt.statistics().in_flight == 0


async def test_cancel_returns_promptly(gt: GoTask) -> None:
    # The call returns as soon as it is cancelled, by the same scope that cancels it, without
    # waiting for the sidecar: Hold ignores its context, and replies only once released.
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def call() -> None:
            with scope:
                await gt.call("App.Hold", "promptly")

        nursery.start_soon(call)
        await gt.call("App.Holding", {"name": "promptly", "n": 1})
        scope.cancel()
    assert scope.cancelled_caught
    assert math.isinf(trio.current_effective_deadline())
    await gt.call("App.Release", "promptly")


@pytest.mark.fault(
    fault="calls cancelled in Python whose Go methods ignore their context",
    sees="statistics().abandoned counts them, holding their slots, until the methods return",
)
async def test_statistics_count_cancelled_calls_still_running_in_go(sidecar: str) -> None:
    gate = "abandoned-statistics"

    async def give_up(gt: GoTask, cancel: trio.CancelScope) -> None:
        with cancel:
            await gt.call("App.Hold", gate)  # ignores its context: runs until Release

    # Four slots: three for the calls given up, one for the others. Once the three hold theirs,
    # four calls at once can finish only after the late replies free them.
    async with open_gotask(sidecar, pool_size=1, max_inflight=4) as gt:
        scopes = [trio.CancelScope() for _ in range(3)]
        async with trio.open_nursery() as nursery:
            for scope in scopes:
                nursery.start_soon(give_up, gt, scope)
            with trio.fail_after(HANG):
                assert await gt.call("App.Holding", {"name": gate, "n": 3}) == 3  # all three in Go
            stats = gt.statistics()
            assert (stats.in_flight, stats.abandoned) == (3, 0)
            for scope in scopes:
                scope.cancel()
        stats = gt.statistics()
        assert (stats.in_flight, stats.abandoned, stats.calls_cancelled) == (0, 3, 3)
        with trio.fail_after(HANG):
            await gt.call("App.Release", gate)
            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(gt.call, "App.Echo", 2)
        assert gt.statistics().abandoned == 0
