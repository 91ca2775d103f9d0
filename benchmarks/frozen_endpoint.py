"""One of two sidecars frozen (SIGSTOP): what the callers of `connect_gotask([...])` see.

    python benchmarks/frozen_endpoint.py [--rounds 3] [--calls 1600] [--callers 32] [--limit 10]

Two sidecars are started with ``-standalone`` on 127.0.0.2 and 127.0.0.3 (one machine). In each
run, 32 callers make 1600 calls of ``App.Echo`` (50 each) through one ``connect_gotask`` given
both addresses, each call under a 1 s deadline (``trio.move_on_after``) or under none, with the
default ``keepalive_timeout`` (20 s) and, frozen without deadlines, a 2 s one too. Five
variants, visited in turn in each round on fresh connections: both sidecars healthy, and the one on
127.0.0.2 frozen with SIGSTOP once the client is connected to both (a process that stopped
answering, as a hung host or a stopped container does: its kernel still accepts and acknowledges).
It gets SIGCONT when the run ends, whatever happens.

A run without deadlines ends when every caller has made its calls, or after ``--limit`` seconds:
then the callers still waiting (on the frozen sidecar) are counted and cancelled. Printed: the
median time of a run, and per run the calls answered, the calls whose deadline passed, the calls
that failed (`SidecarError`: the keepalive noticing the frozen sidecar fails them), the callers
still waiting at the limit, and when the frozen sidecar left the rotation.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from trio_gotask import GoTask, GoTaskError, build_sidecar, connect_gotask
from trio_gotask._settings import DEFAULT_KEEPALIVE_TIMEOUT

sys.path.insert(0, str(Path(__file__).parent))
from floor import standalone_sidecar
from measure import EXAMPLE, Report

HOSTS = ("127.0.0.2", "127.0.0.3")
DEADLINE = 1.0
KEEPALIVE = 2.0
"""A short keepalive_timeout, for the run that shows it ending the calls without a deadline."""


@dataclass
class Outcome:
    seconds: float = 0.0
    answered: int = 0
    expired: int = 0
    failed: int = 0
    waiting: int = 0
    """Callers still in a call when the run was stopped at the limit."""
    out_after: float = math.nan
    """Seconds from the start until the frozen sidecar first left the rotation."""


@asynccontextmanager
async def frozen(pid: int) -> AsyncIterator[None]:
    """``pid`` stopped with SIGSTOP, and always resumed with SIGCONT on the way out."""
    os.kill(pid, signal.SIGSTOP)
    try:
        # Once the kernel has stopped it (a signal is delivered soon, not at once); not reaped.
        flags = os.WSTOPPED | os.WEXITED | os.WNOWAIT
        await trio.to_thread.run_sync(os.waitid, os.P_PID, pid, flags, abandon_on_cancel=True)
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def run_once(
    gt: GoTask, frozen_address: str | None, calls: int, callers: int, deadline: float | None, limit: float
) -> Outcome:
    outcome = Outcome()
    done_callers = 0
    start = time.perf_counter()

    def watch() -> None:
        if frozen_address is not None and math.isnan(outcome.out_after):
            for e in gt.statistics().endpoints:
                if e.address == frozen_address and e.state != "up":
                    outcome.out_after = time.perf_counter() - start

    async def one() -> None:
        try:
            await gt.call("App.Echo", 1)
        except GoTaskError:
            outcome.failed += 1
        else:
            outcome.answered += 1
        finally:
            watch()

    async def caller() -> None:
        nonlocal done_callers
        for _ in range(calls // callers):
            if deadline is None:
                await one()
            else:
                with trio.move_on_after(deadline) as scope:
                    await one()
                if scope.cancelled_caught:
                    outcome.expired += 1
                    watch()
        done_callers += 1

    async def stop_at_limit(nursery: trio.Nursery) -> None:
        await trio.sleep(limit)
        outcome.seconds = time.perf_counter() - start
        nursery.cancel_scope.cancel()  # by hand: the client does not take it for a deadline

    async with trio.open_nursery() as nursery:
        async with trio.open_nursery() as callers_nursery:
            for _ in range(callers):
                callers_nursery.start_soon(caller)
            if deadline is None:
                nursery.start_soon(stop_at_limit, nursery)
        outcome.seconds = outcome.seconds or time.perf_counter() - start
        nursery.cancel_scope.cancel()
    outcome.waiting = callers - done_callers
    return outcome


def per_round(values: Iterable[str]) -> str:
    """One value if every round gave it, else each round's."""
    each = list(values)
    return each[0] if len(set(each)) == 1 else " / ".join(each)


async def measure(rounds: int, calls: int, callers: int, limit: float) -> Report:
    binary = str(await build_sidecar(EXAMPLE))
    variants: list[tuple[bool, float | None, float]] = [
        (frozen_run, deadline, DEFAULT_KEEPALIVE_TIMEOUT)
        for frozen_run in (False, True)
        for deadline in (DEADLINE, None)
    ]
    variants.append((True, None, KEEPALIVE))
    results: dict[tuple[bool, float | None, float], list[Outcome]] = {v: [] for v in variants}
    async with (
        standalone_sidecar(binary, f"{HOSTS[0]}:0") as (a, a_pid),
        standalone_sidecar(binary, f"{HOSTS[1]}:0") as (b, _),
    ):
        for _ in range(rounds):
            for frozen_run, deadline, keepalive in variants:
                async with connect_gotask([a, b], keepalive_timeout=keepalive) as gt:
                    if frozen_run:
                        async with frozen(a_pid):
                            outcome = await run_once(gt, a, calls, callers, deadline, limit)
                    else:
                        outcome = await run_once(gt, None, calls, callers, deadline, limit)
                results[frozen_run, deadline, keepalive].append(outcome)
    report = Report()
    rows = []
    for (frozen_run, deadline, keepalive), outcomes in results.items():
        seconds = statistics.median(o.seconds for o in outcomes)
        stopped = any(o.waiting for o in outcomes)
        rows.append(
            [
                "one of two frozen (SIGSTOP)" if frozen_run else "both healthy",
                f"{deadline:g} s" if deadline else "none",
                f"{keepalive:g} s",
                f"{seconds:.2f} s" + (f" (stopped at {limit:g} s)" if stopped else ""),
                per_round(str(o.answered) for o in outcomes),
                per_round(str(o.expired) for o in outcomes),
                per_round(str(o.failed) for o in outcomes),
                per_round(str(o.waiting) for o in outcomes),
                per_round("never" if math.isnan(o.out_after) else f"{o.out_after:.2f} s" for o in outcomes)
                if frozen_run
                else "",
            ]
        )
    report.table(
        "A frozen sidecar",
        [
            "sidecars",
            "deadline per call",
            "keepalive_timeout",
            "time (median)",
            "answered",
            "deadline passed",
            "failed",
            "callers waiting at the end",
            "frozen one out of rotation after",
        ],
        rows,
        f"{callers} callers, {calls} calls of App.Echo over two sidecars on {', '.join(HOSTS)} of one "
        f"machine ({os.cpu_count()} cores); each run on fresh connections; the median time of {rounds} "
        "rounds, and the counts of each round where they differ (`benchmarks/frozen_endpoint.py`).",
    )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=1600)
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--limit", type=float, default=10.0, help="seconds a run without deadlines may take")
    args = parser.parse_args()
    start = time.perf_counter()
    trio.run(measure, args.rounds, args.calls, args.callers, args.limit)
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
