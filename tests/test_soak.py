"""A long run with random cancellations: memory stays flat, and no file descriptor or task leaks."""

from __future__ import annotations

import os
import random

import pytest
import trio

from trio_gotask import open_gotask

CALLS = 100_000
CALLERS = 64


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def count_tasks() -> int:
    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(child) for nursery in task.child_nurseries for child in nursery.child_tasks)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    return walk(root)


@pytest.mark.fault(
    fault="100,000 calls, a tenth cancelled at random", sees="flat memory, no leaked fds or tasks"
)
async def test_soak_with_random_cancellations(sidecar: str) -> None:
    rng = random.Random(42)
    fds_before = open_fds()
    outcomes = {"done": 0, "cancelled": 0}

    async def caller(n: int) -> None:
        for i in range(n):
            if rng.random() < 0.1:
                with trio.move_on_after(rng.choice([0, 0.0005, 0.002])):
                    await gt.call("App.Slow", 3_600_000)
                    raise AssertionError("App.Slow was not cancelled")
                outcomes["cancelled"] += 1
            else:
                assert await gt.call("App.Echo", i) == i
                outcomes["done"] += 1

    async def run(calls: int) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(CALLERS):
                nursery.start_soon(caller, calls // CALLERS)

    # A connection takes half the callers, so the warm-up waits for the second one to open: both
    # are open before the tasks are counted, however long opening took.
    async with open_gotask(sidecar, pool_size=2, max_inflight=CALLERS // 2) as gt:
        await run(10 * CALLERS)  # warm up: connections, buffers, caches
        assert gt.statistics().connections == 2
        tasks_before = count_tasks()
        rss_before = rss_bytes()
        await run(CALLS)
        rss_after = rss_bytes()
        tasks_after = count_tasks()
        stats = gt.statistics()
        assert await gt.call("App.Hi", "after the soak") == {"hello": "after the soak"}
    fds_after = open_fds()

    print(
        f"\n{sum(outcomes.values())} calls ({outcomes['cancelled']} cancelled): "
        f"RSS {rss_before / 2**20:.1f} MiB before, {rss_after / 2**20:.1f} MiB after; "
        f"fds {fds_before} -> {fds_after}; tasks {tasks_before} -> {tasks_after}"
    )
    assert outcomes["cancelled"] > CALLS // 20
    assert stats.in_flight == 0
    assert tasks_after == tasks_before
    assert fds_after == fds_before
    assert rss_after - rss_before < 16 * 2**20
