"""Several sidecars, as on several hosts: what spreading the calls costs, and how they spread.

    python benchmarks/endpoints.py [--quick]

Three sidecars are started with ``-standalone`` on 127.0.0.2, 127.0.0.3 and 127.0.0.4 (one
machine: this measures the client's work, not a network). Variants, visited in turn in each round
so that a shared machine's drift hits them alike:

- one address: ``connect_gotask("127.0.0.2:P")``, the single-sidecar path;
- a list of one: ``connect_gotask(["127.0.0.2:P"])``, the same sidecar through `Endpoints`;
- a list of three, and a ``dns:`` name resolving to the three (through a resolver hook, so that no
  DNS server is needed).

For each: sequential p50 latency, and calls/s with 64 callers; for the three-sidecar variants,
each sidecar's share of the calls. On a machine with few cores the client is the limit, so more
sidecars do not add calls/s here; the ratio of "a list of one" to "one address" is the cost of the
endpoint layer.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio

from trio_gotask import GoTask, build_sidecar, connect_gotask

sys.path.insert(0, str(Path(__file__).parent))
from floor import standalone_sidecar
from measure import EXAMPLE, Report, median, throughput, timed

HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
CALLERS = 64


class Resolver(trio.abc.HostnameResolver):
    """``sidecars.bench`` resolves to `HOSTS`."""

    async def getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        await trio.lowlevel.checkpoint()
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in HOSTS]

    async def getnameinfo(self, sockaddr: Any, flags: int) -> Any:
        raise NotImplementedError


async def measure(gt: GoTask, calls: int, sequential: int) -> tuple[float, float]:
    async def echo() -> None:
        await gt.call("App.Echo", 1)

    latencies = [await timed(echo) for _ in range(sequential)]
    return median(latencies), await throughput(echo, calls, CALLERS)


async def spread(gt: GoTask, pids: Sequence[int], calls: int) -> str:
    served: Counter[int] = Counter()

    async def caller() -> None:
        for _ in range(calls // CALLERS):
            served[await gt.call("App.Pid")] += 1

    async with trio.open_nursery() as nursery:
        for _ in range(CALLERS):
            nursery.start_soon(caller)
    total = served.total()
    return " / ".join(f"{served[pid] / total:.0%}" for pid in pids)


async def run(quick: bool) -> Report:
    report = Report()
    await endpoints_section(str(await build_sidecar(EXAMPLE)), report, quick)
    return report


async def endpoints_section(binary: str, report: Report, quick: bool) -> None:
    """Measure the variants (see the module docstring) and add their table to ``report``."""
    previous = trio.socket.set_custom_hostname_resolver(Resolver())
    try:
        await _measure_variants(binary, report, quick)
    finally:
        trio.socket.set_custom_hostname_resolver(previous)


async def _measure_variants(binary: str, report: Report, quick: bool) -> None:
    rounds, calls, sequential = (2, 6_000, 300) if quick else (5, 30_000, 2_000)
    async with AsyncExitStack() as stack:
        first, first_pid = await stack.enter_async_context(standalone_sidecar(binary, f"{HOSTS[0]}:0"))
        port = first.rpartition(":")[2]
        others = [
            await stack.enter_async_context(standalone_sidecar(binary, f"{h}:{port}")) for h in HOSTS[1:]
        ]
        addresses = [first, *(a for a, _ in others)]
        pids = [first_pid, *(p for _, p in others)]
        variants: dict[str, str | list[str]] = {
            "one address": first,
            "a list of one": [first],
            "a list of three": addresses,
            "dns: name, three addresses": f"dns:sidecars.bench:{port}",
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        shares: dict[str, str] = {}
        for _ in range(rounds):
            for name, target in variants.items():
                async with connect_gotask(target) as gt:
                    await measure(gt, calls // 10, sequential // 10)  # warm up
                    results[name].append(await measure(gt, calls, sequential))
                    if "three" in name:
                        shares[name] = await spread(gt, pids, calls)
    base_p50 = median([p50 for p50, _ in results["one address"]])
    base_rate = median([rate for _, rate in results["one address"]])
    rows = []
    for name, measured in results.items():
        p50 = median([p for p, _ in measured])
        rate = median([r for _, r in measured])
        rows.append(
            [
                name,
                f"{p50 * 1e6:.0f} µs",
                f"{p50 / base_p50:.2f}x",
                f"{rate:,.0f}",
                f"{rate / base_rate:.2f}x",
                shares.get(name, ""),
            ]
        )
    report.table(
        "Several sidecars (connect_gotask with a list or a dns: name)",
        [
            "variant",
            "sequential p50",
            "vs one address",
            f"calls/s, {CALLERS} callers",
            "vs one address",
            "share of calls",
        ],
        rows,
        f"Medians of {rounds} rounds; sidecars on {', '.join(HOSTS)} of one machine ({os.cpu_count()} cores): "
        "more sidecars share the same cores here, so this is the client's cost of spreading, not a "
        "measure of scaling out (`benchmarks/endpoints.py`).",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and calls")
    args = parser.parse_args()
    start = time.perf_counter()
    trio.run(run, args.quick)
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
