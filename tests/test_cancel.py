"""Cancellation: the caller's scopes govern calls, the Go context follows, the connection survives."""

from __future__ import annotations

import math
import random

import pytest
import trio
import trio.testing

from trio_gotask import GoTask, open_gotask


@pytest.fixture(params=["unix", "pipe"])
async def gt(request: pytest.FixtureRequest, sidecar: str) -> object:
    # One connection, so every test below shares it with the calls it cancels.
    async with open_gotask(sidecar, transport=request.param, pool_size=1) as gt:
        yield gt


async def test_fail_after_raises_too_slow_and_cancels_go(gt: GoTask) -> None:
    cancelled_before = await gt.call("App.WaitCancelled", 0)
    with pytest.raises(trio.TooSlowError):
        with trio.fail_after(0.2):
            await gt.call("App.Slow", 60_000)
    # The Go handler saw ctx.Done(): WaitCancelled returns once the counter moves.
    with trio.fail_after(10):
        assert await gt.call("App.WaitCancelled", cancelled_before + 1) >= cancelled_before + 1
    assert await gt.call("App.Hi", "after") == {"hello": "after"}


@pytest.mark.fault(
    fault="a reply arriving after its caller gave up", sees="discarded; never given to another call"
)
async def test_cancel_while_waiting_returns_and_late_reply_is_discarded(gt: GoTask) -> None:
    # Sleep ignores its context, so its reply arrives after the caller gave up.
    with trio.move_on_after(0.05) as scope:
        await gt.call("App.Sleep", 300)
    assert scope.cancelled_caught
    # The late reply must not be taken for a later call's.
    with trio.fail_after(10):
        for i in range(20):
            assert await gt.call("App.Echo", i) == i
        assert await gt.call("App.Sleep", 400) == 400


async def test_deadline_travels_to_go(gt: GoTask) -> None:
    assert await gt.call("App.Deadline") == -1
    with trio.fail_after(5):
        remaining = await gt.call("App.Deadline")
    assert 0 < remaining <= 5
    with trio.move_on_after(30), trio.move_on_after(2):
        remaining = await gt.call("App.Deadline")
    assert 0 < remaining <= 2


@pytest.mark.fault(
    fault="caller cancelled while its 32 MiB request is written",
    sees="Cancelled; the stream keeps whole frames, next call works",
)
async def test_cancel_while_request_is_being_written(gt: GoTask) -> None:
    big = bytes(32 * 1024 * 1024)
    for delay in (0, 0.0001, 0.001, 0.005):
        with trio.move_on_after(delay):
            await gt.call("App.Echo", big)
        # Whatever part of the frame was written, the stream holds whole frames only.
        with trio.fail_after(20):
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
            await gt.call("App.Slow", 60_000 + i)
            raise AssertionError("Slow should have been cancelled")

    async with trio.open_nursery() as nursery:
        for i in range(1000):
            nursery.start_soon(doomed, i)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for i in range(100):
                nursery.start_soon(gt.call, "App.Echo", i)
        assert await gt.call("App.Hi", "calm") == {"hello": "calm"}
    assert gt.statistics().in_flight == 0


async def test_cancel_returns_promptly(gt: GoTask) -> None:
    # Not a timing assertion: the call must return as soon as it is cancelled, by the same scope
    # that cancels it, without waiting for the sidecar (Sleep ignores its context).
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def call() -> None:
            with scope:
                await gt.call("App.Sleep", 1000)

        nursery.start_soon(call)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()
    assert scope.cancelled_caught
    assert math.isinf(trio.current_effective_deadline())
