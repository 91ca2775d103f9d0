"""Latency and throughput of a trivial call, trio_gotask next to the peers, in one run.

    python benchmarks/bench_calls.py [--rounds 5] [--calls 2000]

Each round runs every variant once, in turn, so drift of a shared machine hits them alike; the
table shows the median over rounds. Ratios compare variants measured side by side.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path

import trio
import trio_parallel

from trio_gotask import build_sidecar, open_gotask
from trio_gotask._transport import Transport

EXAMPLE = Path(__file__).resolve().parent.parent / "go" / "example"
CONCURRENCY = 64

Call = Callable[[], Awaitable[object]]


def trivial(x: int) -> int:
    return x


async def sequential(call: Call, n: int) -> list[float]:
    samples = []
    clock = time.perf_counter
    for _ in range(n):
        start = clock()
        await call()
        samples.append(clock() - start)
    return samples


async def concurrent(call: Call, n: int, callers: int) -> float:
    """Calls per second with ``callers`` tasks sharing ``n`` calls."""
    per_caller = n // callers

    async def caller() -> None:
        for _ in range(per_caller):
            await call()

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(callers):
            nursery.start_soon(caller)
    return per_caller * callers / (time.perf_counter() - start)


async def main(rounds: int, calls: int) -> None:
    sidecar = str(await build_sidecar(EXAMPLE))
    async with AsyncExitStack() as stack:
        variants: dict[str, Call] = {}
        transports: tuple[Transport, ...] = ("unix", "tcp", "pipe")
        for transport in transports:
            gt = await stack.enter_async_context(open_gotask(sidecar, transport=transport))
            variants[f"trio_gotask {transport}"] = partial(gt.call, "App.Echo", 1)
        variants["trio_parallel.run_sync"] = partial(trio_parallel.run_sync, trivial, 1)
        variants["trio.to_thread.run_sync"] = partial(trio.to_thread.run_sync, trivial, 1)

        for call in variants.values():  # warm up: worker processes, connections, caches
            await concurrent(call, 256, CONCURRENCY)
        p50: dict[str, list[float]] = {name: [] for name in variants}
        p99: dict[str, list[float]] = {name: [] for name in variants}
        rate: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(rounds):
            for name, call in variants.items():
                samples = sorted(await sequential(call, calls))
                p50[name].append(samples[len(samples) // 2])
                p99[name].append(samples[int(len(samples) * 0.99)])
                rate[name].append(await concurrent(call, calls * 4, CONCURRENCY))

    base = "trio_parallel.run_sync"
    med = statistics.median
    print(f"# trivial call, {rounds} rounds x {calls} sequential calls, {CONCURRENCY} concurrent callers")
    print(f"# Python {platform.python_version()}, {platform.machine()}, {sys.platform}")
    print()
    print(f"| variant | p50 µs | p99 µs | p50 vs {base} | calls/s at {CONCURRENCY} | vs {base} |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in variants:
        print(
            f"| {name} | {med(p50[name]) * 1e6:.0f} | {med(p99[name]) * 1e6:.0f} "
            f"| {med(p50[name]) / med(p50[base]):.2f}x | {med(rate[name]):,.0f} "
            f"| {med(rate[name]) / med(rate[base]):.1f}x |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000)
    options = parser.parse_args()
    trio.run(main, options.rounds, options.calls)
