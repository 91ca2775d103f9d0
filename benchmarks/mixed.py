"""Small calls while 16 MiB calls are in flight: how much a large frame delays the small calls queued
behind it (issue 13).

    python benchmarks/mixed.py [--quick]

Each variant (a transport and a pool size) is measured in rounds that visit every variant in turn,
so that a shared machine's drift hits them alike. In a round a variant runs, one after the other:
a few 16 MiB `bytes` echoes alone (the large frame's transfer time), then small callers alone, then
the same small callers while large callers loop. Latencies are pooled over the rounds.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

import trio

from trio_gotask import GoTask, build_sidecar, open_gotask

sys.path.insert(0, str(Path(__file__).parent))
from measure import EXAMPLE, Report, median, percentile, timed

LARGE = 16 << 20
SMALL_CALLERS = 8
LARGE_CALLERS = (1, 2)
Transport = Literal["unix", "tcp", "pipe"]
VARIANTS: dict[str, tuple[Transport, int]] = {
    "unix": ("unix", 1),
    "tcp": ("tcp", 1),
    "pipe": ("pipe", 1),
    "unix, pool_size=2": ("unix", 2),
}


@dataclass
class Samples:
    large_alone: list[float] = field(default_factory=list)
    small: dict[int, list[float]] = field(default_factory=dict)  # by large callers, 0 for none
    large_loaded: dict[int, list[float]] = field(default_factory=dict)


async def small_window(gt: GoTask, seconds: float, large_callers: int, samples: Samples) -> None:
    """`SMALL_CALLERS` tasks call `App.Echo(1)` in a loop for ``seconds``, while ``large_callers``
    tasks echo 16 MiB: they start first, and the window opens once each has had a reply, so that it
    sees the steady state; at its end they finish the call they are in."""
    payload = bytes(LARGE)
    small = samples.small.setdefault(large_callers, [])
    large = samples.large_loaded.setdefault(large_callers, [])
    stop = False
    warm = trio.Semaphore(0)

    async def large_caller() -> None:
        first = True
        while not stop:
            large.append(await timed(partial(gt.call, "App.Echo", payload)))
            if first:
                first = False
                large.pop()  # it ran before the small callers started
                warm.release()

    async def small_caller(until: float) -> None:
        call = partial(gt.call, "App.Echo", 1)
        while time.perf_counter() < until:
            small.append(await timed(call))

    async with trio.open_nursery() as nursery:
        for _ in range(large_callers):
            nursery.start_soon(large_caller)
        for _ in range(large_callers):
            await warm.acquire()
        until = time.perf_counter() + seconds
        async with trio.open_nursery() as smalls:
            for _ in range(SMALL_CALLERS):
                smalls.start_soon(small_caller, until)
        stop = True


async def mixed_workload(sidecar: str, report: Report, quick: bool) -> None:
    """Small calls' latency alone and beside looping 16 MiB echoes, by transport and pool size,
    against one large frame's transfer time; adds a table and a target per variant to ``report``."""
    rounds = 3 if quick else 5
    seconds = 0.4 if quick else 1.0
    large_alone = 3 if quick else 5
    samples = {name: Samples() for name in VARIANTS}
    async with trio.open_nursery() as nursery:
        gotasks: dict[str, GoTask] = {}
        for name, (transport, pool_size) in VARIANTS.items():
            gotasks[name] = await nursery.start(_serve, sidecar, transport, pool_size)
        for gt in gotasks.values():  # warm up: connections, and memory for the large frames
            await small_window(gt, 0.1, max(LARGE_CALLERS), Samples())
        for _ in range(rounds):
            for name, gt in gotasks.items():
                s = samples[name]
                payload = bytes(LARGE)
                s.large_alone += [
                    await timed(partial(gt.call, "App.Echo", payload)) for _ in range(large_alone)
                ]
                await small_window(gt, seconds, 0, s)
                for callers in LARGE_CALLERS:
                    await small_window(gt, seconds, callers, s)
        nursery.cancel_scope.cancel()

    rows = []
    for name, s in samples.items():
        frame = median(s.large_alone) / 2
        p99_alone = percentile(s.small[0], 0.99)
        row = [name, f"{frame * 1e3:.1f}", _ms(median(s.small[0])), _ms(p99_alone)]
        for callers in LARGE_CALLERS:
            p99 = percentile(s.small[callers], 0.99)
            growth = p99 - p99_alone
            row += [
                _ms(median(s.small[callers])),
                _ms(p99),
                f"{growth / frame:.1f}",
                _ms(median(s.large_loaded[callers])),
            ]
            if callers == max(LARGE_CALLERS):
                report.target(
                    f"small calls' p99 grows <= one 16 MiB frame's transfer ({name}, {callers} large callers)",
                    f"+{growth * 1e3:.1f} ms vs {frame * 1e3:.1f} ms ({growth / frame:.1f} frames)",
                    growth <= frame,
                )
        rows.append(row)
    header = ["variant", "frame ms", "alone p50", "alone p99"]
    for callers in LARGE_CALLERS:
        header += [f"{callers}L p50", f"{callers}L p99", f"{callers}L growth, frames", f"{callers}L large RT"]
    report.table(
        "Mixed workload: small calls beside 16 MiB calls",
        header,
        rows,
        f"{SMALL_CALLERS} tasks call `App.Echo(1)` in a loop, alone and while 1 or 2 tasks (`1L`, `2L`) "
        "echo 16 MiB `bytes` in a loop; times in ms, pooled over "
        f"{rounds} rounds of {seconds:g} s per column group. `frame ms` is one large frame's transfer "
        "time: half the median round trip of a 16 MiB echo alone (a round trip carries two such "
        "frames, encoding and decoding included). `growth, frames` is the small calls' p99 under load "
        "minus their p99 alone, in frames; the issue's target is at most 1. `large RT` is the large "
        "calls' median round trip under that load. With `pool_size=2` the pool keeps small calls "
        "off the connection that carries the large ones; on one connection a small frame waits for "
        "the large frame crossing in each direction, and for the event loop's 16 MiB copies.",
    )


async def _serve(
    sidecar: str,
    transport: Transport,
    pool_size: int,
    *,
    task_status: trio.TaskStatus[GoTask] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with open_gotask(sidecar, transport=transport, pool_size=pool_size) as gt:
        task_status.started(gt)
        await trio.sleep_forever()


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


async def _main(quick: bool) -> Report:
    report = Report()
    await mixed_workload(str(await build_sidecar(EXAMPLE)), report, quick)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds and shorter windows")
    report = trio.run(_main, parser.parse_args().quick)
    for what, measured, met in report.targets:
        print(f"- {what}: {measured}: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
