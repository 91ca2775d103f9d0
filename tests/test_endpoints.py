"""connect_gotask with several addresses: sidecars started with -standalone on distinct loopback
addresses (127.0.0.2, 127.0.0.3), as on several hosts; one killed, one stopped gracefully, one
brought back."""

from __future__ import annotations

import logging
import signal
from collections import Counter
from typing import Any

import pytest
import trio
from standalone import standalone

from trio_gotask import GoTask, SidecarError, connect_gotask


async def pids(gt: GoTask, calls: int) -> Counter[int]:
    """Which sidecar (by pid) served each of ``calls`` concurrent calls."""
    served: Counter[int] = Counter()

    async def one() -> None:
        served[await gt.call("App.Pid")] += 1

    async with trio.open_nursery() as nursery:
        for _ in range(calls):
            nursery.start_soon(one)
    return served


def states(gt: GoTask) -> dict[str, str]:
    return {e.address: e.state for e in gt.statistics().endpoints}


async def test_calls_spread_over_every_endpoint(sidecar: str) -> None:
    async with (
        standalone(sidecar, "-address", "127.0.0.2:0") as a,
        standalone(sidecar, "-address", "127.0.0.3:0") as b,
        connect_gotask([a.address, b.address]) as gt,
    ):
        served = await pids(gt, 200)
        assert set(served) == {a.process.pid, b.process.pid}
        assert min(served.values()) >= 40, served  # least-loaded first: both take a fair share
        stats = gt.statistics()
        assert [e.address for e in stats.endpoints] == [a.address, b.address]
        assert all(e.state == "up" and e.connections == 1 for e in stats.endpoints)
        assert gt.address == f"{a.address}, {b.address}"


@pytest.mark.fault(
    fault="one of several endpoints killed mid-load",
    sees="SidecarError for its calls in flight only; later calls go to the others",
)
async def test_a_killed_endpoint_fails_only_its_calls_in_flight_and_leaves_rotation(
    sidecar: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        standalone(sidecar, "-address", "127.0.0.2:0") as a,
        standalone(sidecar, "-address", "127.0.0.3:0") as b,
        connect_gotask([a.address, b.address]) as gt,
    ):
        send, receive = trio.open_memory_channel[BaseException](4)

        async def slow() -> None:
            try:
                await gt.call("App.Slow", 10_000)
            except SidecarError as exc:
                await send.send(exc)

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(slow)
            await trio.testing.wait_all_tasks_blocked()
            assert [e.in_flight for e in gt.statistics().endpoints] == [2, 2]
            a.process.kill()  # mid-load: the calls in flight there fail, with the reason
            with trio.fail_after(10):
                failed = [await receive.receive(), await receive.receive()]
            assert all("lost the connection" in str(exc) for exc in failed), failed
            assert [e.in_flight for e in gt.statistics().endpoints] == [0, 2]  # b's go on
            nursery.cancel_scope.cancel()
        # Every later call goes to b: none is lost while a is down.
        assert await pids(gt, 50) == {b.process.pid: 50}
        assert states(gt) == {a.address: "down", b.address: "up"}
        assert any(
            "out of rotation" in r.getMessage() and a.address in r.getMessage() for r in caplog.records
        )


@pytest.mark.fault(
    fault="one of several endpoints shutting down (SIGTERM)",
    sees="nothing: its shutting_down answers are sent on to the others",
)
async def test_an_endpoint_shutting_down_hands_new_calls_to_the_others_unseen(sidecar: str) -> None:
    async with (
        standalone(sidecar, "-address", "127.0.0.2:0", "-grace", "30s") as a,
        standalone(sidecar, "-address", "127.0.0.3:0") as b,
        connect_gotask([a.address, b.address]) as gt,
    ):
        await pids(gt, 20)  # a connection to each
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(gt.call, "App.Slow", 10_000)  # holds a in its grace period
            await trio.testing.wait_all_tasks_blocked()
            a.process.send_signal(signal.SIGTERM)  # a rolling update: a drains
            with trio.fail_after(10):  # a refuses new calls with shutting_down; the callers never see it
                while states(gt)[a.address] != "draining":
                    await pids(gt, 5)
            assert await pids(gt, 50) == {b.process.pid: 50}
            nursery.cancel_scope.cancel()


async def test_an_endpoint_that_comes_back_rejoins_the_rotation(
    sidecar: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_gotask")
    async with standalone(sidecar, "-address", "127.0.0.3:0") as b:
        async with standalone(sidecar, "-address", "127.0.0.2:0") as a:
            address = a.address
            gt_context = connect_gotask([address, b.address])
            gt = await gt_context.__aenter__()
        try:
            assert await pids(gt, 20) == {b.process.pid: 20}  # a stopped: its calls went to b
            assert states(gt)[address] == "down"
            async with standalone(sidecar, "-address", address) as again:
                with trio.fail_after(20):  # back once its backoff ends and a call tries it
                    while True:
                        if again.process.pid in await pids(gt, 10):
                            break
                        await trio.sleep(0.05)
                assert states(gt)[address] == "up"
                assert any("back in rotation" in r.getMessage() for r in caplog.records)
        finally:
            await gt_context.__aexit__(None, None, None)


@pytest.mark.fault(fault="every endpoint unreachable", sees="SidecarError saying why, at connect_gotask")
async def test_every_endpoint_unreachable_fails_with_the_reason(tmp_path: Any) -> None:
    with pytest.raises(SidecarError, match="cannot connect"):
        async with connect_gotask([str(tmp_path / "a.sock"), str(tmp_path / "b.sock")]):
            pass


async def test_addresses_are_checked_at_once() -> None:
    with pytest.raises(TypeError, match="non-empty list"):
        async with connect_gotask([]):
            pass
    with pytest.raises(ValueError, match="not an address"):
        async with connect_gotask(["127.0.0.1:1", ""]):
            pass
