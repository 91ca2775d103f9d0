"""Streams against one call per item, side by side in one process, rounds alternating.

    python benchmarks/streams.py [--items 1000000] [--rounds 3] [--transports unix,tcp,pipe]

For each transport, one sidecar built from go/example, and in each round:

- **stream**: ``App.Count`` streams ``--items`` integers, consumed with ``async for``;
- **one call per item, in a loop**: ``App.Int`` called for each item, one after the other, which is
  what a loop over a cursor kept in Go costs (``--calls`` of them, scaled to items/s);
- **one call per item, 64 callers**: the same calls from 64 tasks at once, the best a
  call-per-item design does when the order of the items does not matter.

Then, on unix: 1 GiB streamed in 64 KiB items (MB/s and how far the client's resident memory
grew), and the latency of a small call alone against beside a stream that keeps its connection
busy (the sidecar writes replies before queued items; the socket's buffer is what a reply still
waits behind). Ratios are best round against best
round, measured in the same run: machines here are shared and noisy (docs/performance.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).parent))
from measure import EXAMPLE, Report, machine, percentile, throughput

from trio_gotask import GoTask, build_sidecar, open_gotask


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def streamed(gt: GoTask, items: int) -> float:
    start = time.perf_counter()
    count = 0
    async with gt.stream("App.Count", items) as numbers:
        async for _ in numbers:
            count += 1
    assert count == items
    return items / (time.perf_counter() - start)


async def called_in_a_loop(gt: GoTask, calls: int) -> float:
    start = time.perf_counter()
    for i in range(calls):
        await gt.call("App.Int", i)
    return calls / (time.perf_counter() - start)


async def called_at_once(gt: GoTask, calls: int) -> float:
    return await throughput(lambda: gt.call("App.Int", 7), calls, 64)


async def gibibyte(gt: GoTask) -> tuple[float, float]:
    """MB/s of 1 GiB in 64 KiB items, and the growth of resident memory in MiB."""
    count, size = 16384, 64 * 1024
    async with gt.stream("App.Chunks", {"Count": 64, "Size": size}) as warm:
        async for _ in warm:
            pass
    before = most = rss()
    start = time.perf_counter()
    async with gt.stream("App.Chunks", {"Count": count, "Size": size}) as chunks:
        i = 0
        async for _ in chunks:
            i += 1
            if i % 256 == 0:
                most = max(most, rss())
    elapsed = time.perf_counter() - start
    return count * size / elapsed / 1e6, (most - before) / (1 << 20)


async def small_call_latency(gt: GoTask, calls: int, *, beside_stream: bool) -> tuple[float, float]:
    """p50 and p99 in µs of ``App.Hi``, alone or while a stream of 64 KiB items is consumed on
    the same connection (the pool has one)."""
    latencies: list[float] = []

    async def measure() -> None:
        for _ in range(calls):
            start = time.perf_counter()
            await gt.call("App.Hi", "x")
            latencies.append(time.perf_counter() - start)

    if not beside_stream:
        await measure()
    else:
        async with trio.open_nursery() as nursery:

            async def consume() -> None:
                async with gt.stream("App.Endless", {"Size": 64 * 1024}, window=4 << 20) as chunks:
                    async for _ in chunks:
                        pass

            nursery.start_soon(consume)
            await trio.sleep(0.05)  # the stream is under way
            await measure()
            nursery.cancel_scope.cancel()
    return percentile(latencies, 0.5) * 1e6, percentile(latencies, 0.99) * 1e6


async def main(items: int, calls: int, rounds: int, transports: list[str]) -> None:
    sidecar = await build_sidecar(EXAMPLE)
    report = Report()
    print(machine(), flush=True)
    rows = []
    for transport in transports:
        best = {"stream": 0.0, "loop": 0.0, "64": 0.0}
        async with open_gotask(sidecar, transport=transport, pool_size=1) as gt:  # type: ignore[arg-type]
            await streamed(gt, 10_000)  # warm up
            for _ in range(rounds):
                best["stream"] = max(best["stream"], await streamed(gt, items))
                best["loop"] = max(best["loop"], await called_in_a_loop(gt, calls))
                best["64"] = max(best["64"], await called_at_once(gt, calls))
        rows.append(
            [
                transport,
                f"{best['stream']:,.0f}",
                f"{best['loop']:,.0f}",
                f"{best['64']:,.0f}",
                f"{best['stream'] / best['loop']:.1f}x",
                f"{best['stream'] / best['64']:.1f}x",
            ]
        )
        report.target(
            f"streaming {items:,} small items ≥ 5x one call per item ({transport})",
            f"{best['stream'] / best['loop']:.1f}x a loop of calls, {best['stream'] / best['64']:.1f}x 64 callers",
            best["stream"] >= 5 * best["loop"],
        )
    report.table(
        f"{items:,} small items: a stream against one call per item (items/s, best of {rounds})",
        [
            "transport",
            "stream",
            "a call per item, in a loop",
            "a call per item, 64 callers",
            "stream / loop",
            "stream / 64 callers",
        ],
        rows,
    )
    async with open_gotask(sidecar, pool_size=1) as gt:
        rate, grown = await gibibyte(gt)
        report.table(
            "1 GiB in 64 KiB items (unix)",
            ["", "MB/s", "client RSS growth"],
            [["stream, 1 MiB window", f"{rate:,.0f}", f"{grown:.1f} MiB"]],
        )
        report.target("1 GiB in 64 KiB items: client RSS growth < 50 MiB", f"{grown:.1f} MiB", grown < 50)
        alone = await small_call_latency(gt, 2000, beside_stream=False)
        beside = await small_call_latency(gt, 2000, beside_stream=True)
        report.table(
            "A small call's latency beside a busy stream (unix, one connection, µs)",
            ["", "p50", "p99"],
            [
                ["alone", f"{alone[0]:.0f}", f"{alone[1]:.0f}"],
                ["beside a stream of 64 KiB items", f"{beside[0]:.0f}", f"{beside[1]:.0f}"],
            ],
        )
    print("| target | measured | met? |\n|---|---|---|")
    for what, measured, met in report.targets:
        print(f"| {what} | {measured} | {'yes' if met else 'no'} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--transports", default="unix,tcp,pipe")
    args = parser.parse_args()
    trio.run(main, args.items, args.calls, args.rounds, args.transports.split(","))
