"""trio_gotask against the floor and the peers, side by side in one run.

    nox -s bench                      # or: python benchmarks/bench.py [--quick] [--out DIR]

Every measurement runs in rounds that visit all variants in turn, so that a shared machine's drift
hits them alike; tables show the median over rounds. Writes DIR/results.md (the tables) and PNG
plots next to it, and prints the tables and the targets of issues 5 and 13 with their measured ratios.
With --publish it also rewrites docs/performance.md, as performance-intro.md (beside this script)
followed by the tables, and copies the plots to docs/performance/.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path

import trio
import trio.testing
import trio_parallel

from trio_gotask import GoTask, build_sidecar, open_gotask
from trio_gotask._address import Transport, open_stream
from trio_gotask._errors import lost_without_explanation
from trio_gotask._opening import Opened, greet
from trio_gotask._pool import Pool
from trio_gotask._settings import Limits, PoolSettings
from trio_gotask._wire import DEFAULT_MAX_FRAME_SIZE

sys.path.insert(0, str(Path(__file__).parent))
from floor import BlockingEcho, Floor, floor_sidecar, request_frame
from grpc_compare import grpc_section
from measure import EXAMPLE, Call, Report, machine, median, percentile, throughput, timed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import goridge_server

TRANSPORTS: tuple[Transport, ...] = ("unix", "tcp", "pipe")
FLOOR = "floor (hand-written, unix)"
PARALLEL = "trio_parallel.run_sync"
THREAD = "trio.to_thread.run_sync"
RAW = "blocking socket, no decoding (unix)"
FLOOR_WOKEN = "floor, woken by its reader task (unix)"
FROM_SOURCE = "unix, from a source folder, nothing changed"
DESCRIPTORS = "descriptors (FdChannel)"
STREAMS = "Trio streams (StreamChannel)"
OURS = "this project's protocol"
GORIDGE = "GoTask's format (goridge)"


def trivial(x: int) -> int:
    return x


def count_primes(n: int) -> int:
    count = 0
    for i in range(2, n):
        d = 2
        while d * d <= i:
            if i % d == 0:
                break
            d += 1
        else:
            count += 1
    return count


HASH_BLOCK = bytes(i % 256 for i in range(1 << 20))


def sha256(mib: int) -> bytes:
    h = hashlib.sha256()
    for _ in range(mib):
        h.update(HASH_BLOCK)
    return h.digest()


async def run(quick: bool, out: Path) -> Report:
    report = Report()
    rounds = 3 if quick else 5
    sidecar = str(await build_sidecar(EXAMPLE))

    async with AsyncExitStack() as stack:
        gotasks = {t: await stack.enter_async_context(open_gotask(sidecar, transport=t)) for t in TRANSPORTS}
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="gotask-floor-"))
        floor_address = await stack.enter_async_context(floor_sidecar(sidecar, f"{folder}/floor.sock"))
        floor_stream = await trio.open_unix_socket(floor_address)
        stack.push_async_callback(floor_stream.aclose)
        nursery = await stack.enter_async_context(trio.open_nursery())  # exits before the close
        floor = Floor(floor_stream)
        await floor.skip_hello()
        echo_frame = request_frame("App.Echo", 1)

        variants: dict[str, Call] = {
            f"trio_gotask {t}": partial(gt.call, "App.Echo", 1) for t, gt in gotasks.items()
        }
        variants[PARALLEL] = partial(trio_parallel.run_sync, trivial, 1)
        variants[THREAD] = partial(trio.to_thread.run_sync, trivial, 1)
        for call in variants.values():  # warm up: workers, connections, caches
            await throughput(call, 512, 64)

        # Sequential latency. The floor sends and reads inline here (no tasks at all); a second
        # floor, on its own connection, is woken by its reader task, as trio_gotask's callers are.
        woken_stream = await trio.open_unix_socket(floor_address)
        stack.push_async_callback(woken_stream.aclose)
        woken = Floor(woken_stream)
        await woken.skip_hello()
        nursery.start_soon(woken.run)
        sequential: dict[str, Call] = {
            FLOOR: partial(floor.call_direct, echo_frame),
            FLOOR_WOKEN: partial(woken.call, echo_frame),
            **variants,
        }
        n = 500 if quick else 2000
        samples: dict[str, list[float]] = {name: [] for name in sequential}
        for _ in range(rounds):
            for name, call in sequential.items():
                samples[name] += [await timed(call) for _ in range(n)]
        p50 = {name: median(s) for name, s in samples.items()}
        rows = [
            [
                name,
                f"{p50[name] * 1e6:.0f}",
                f"{percentile(s, 0.99) * 1e6:.0f}",
                f"{p50[name] / p50[FLOOR]:.2f}x",
                f"{p50[name] / p50[PARALLEL]:.2f}x",
            ]
            for name, s in samples.items()
        ]
        report.table(
            "Sequential latency of a trivial call",
            ["variant", "p50 µs", "p99 µs", "vs floor", f"vs {PARALLEL}"],
            rows,
            f"{rounds} rounds x {n} calls; `App.Echo(1)` for the sidecar, `lambda x: x` for the pools. "
            f"`{FLOOR_WOKEN}` is the floor with the structure of trio_gotask's connection: a reader "
            "task reads the reply and wakes the caller, one more pass of Trio's run loop.",
        )
        unix = p50["trio_gotask unix"]
        for t in TRANSPORTS:
            ratio = p50[f"trio_gotask {t}"] / p50[FLOOR]
            report.target(f"sequential {t} <= 1.05x floor", f"{ratio:.2f}x", ratio <= 1.05)
        report.target(
            f"sequential unix <= 0.3x {PARALLEL}", f"{unix / p50[PARALLEL]:.2f}x", unix <= 0.3 * p50[PARALLEL]
        )
        report.target(
            "pipe within 1.5x of unix (sequential)",
            f"{p50['trio_gotask pipe'] / unix:.2f}x",
            p50["trio_gotask pipe"] <= 1.5 * unix,
        )

        # Throughput by number of concurrent callers; the floor shares one batching writer.
        nursery.start_soon(floor.run)
        concurrent: dict[str, Call] = {FLOOR: partial(floor.call, echo_frame), **variants}
        levels = [1, 8, 64, 256]
        calls = 2000 if quick else 8000
        rates: dict[tuple[str, int], list[float]] = {}
        for _ in range(rounds):
            for callers in levels:
                for name, call in concurrent.items():
                    budget = calls if "trio_gotask" in name or name == FLOOR else calls // 4
                    rates.setdefault((name, callers), []).append(await throughput(call, budget, callers))
        rate = {key: median(v) for key, v in rates.items()}
        report.table(
            "Throughput, calls per second, by concurrent callers",
            ["variant", *[f"{c} callers" for c in levels], "64: vs floor", f"64: vs {PARALLEL}"],
            [
                [
                    name,
                    *[f"{rate[name, c]:,.0f}" for c in levels],
                    f"{rate[name, 64] / rate[FLOOR, 64]:.2f}x",
                    f"{rate[name, 64] / rate[PARALLEL, 64]:.1f}x",
                ]
                for name in concurrent
            ],
        )
        u64 = rate["trio_gotask unix", 64]
        for t, callers in (("unix", 64), ("pipe", 64), ("unix", 256)):
            ratio = rate[f"trio_gotask {t}", callers] / rate[FLOOR, callers]
            report.target(f"{callers} callers {t} >= 0.9x floor", f"{ratio:.2f}x", ratio >= 0.9)
        report.target(
            f"64 callers unix >= 4x {PARALLEL}",
            f"{u64 / rate[PARALLEL, 64]:.1f}x",
            u64 >= 4 * rate[PARALLEL, 64],
        )
        plot_lines(
            out / "throughput.png",
            "Throughput by concurrent callers",
            "concurrent callers",
            "calls per second",
            {name: [(c, rate[name, c]) for c in levels] for name in concurrent},
            logx=True,
        )

        await fast_path(floor_address, report, rounds, quick)
        await pool_sizes(sidecar, report, rounds, quick)
        from mixed import mixed_workload  # here, not at the top: mixed.py imports bench

        await mixed_workload(sidecar, report, quick)
        from endpoints import endpoints_section  # here, not at the top: endpoints.py imports bench

        await endpoints_section(sidecar, report, quick)

        # Payload sweep: bytes echoed through the sidecar, and the ceiling: the same frames
        # through a blocking socket, neither encoded nor decoded per call.
        sizes = [16, 1 << 10, 64 << 10, 1 << 20, 16 << 20]
        blocking = BlockingEcho(floor_address)
        stack.callback(blocking.close)
        # Call by call, every client and the ceiling in turn, so that a moment of the shared
        # machine's load hits them alike. The MB/s are medians; the ratio to the ceiling is the
        # best call against the best call of each round (the cost of the work itself, with the
        # machine's interruptions left out), and the table gives it for every round.
        mbps: dict[tuple[str, int], list[float]] = {}
        best_ratio: dict[str, list[float]] = {t: [] for t in gotasks}
        for _ in range(rounds):
            for size in sizes:
                payload = bytes(size)
                frame = request_frame("App.Echo", payload)
                repeat = max(15, min(200, (64 << 20) // (size * 8)))
                # One call each first, untimed: the first large call after others of another size
                # pays for fresh memory on both sides (page faults), ~100 ms at 16 MiB here.
                for gt in gotasks.values():
                    await gt.call("App.Echo", payload)
                blocking.call(frame)
                elapsed: dict[str, list[float]] = {name: [] for name in (*gotasks, RAW)}
                for _ in range(repeat):
                    for t, gt in gotasks.items():
                        elapsed[t].append(await timed(partial(gt.call, "App.Echo", payload)))
                    start = time.perf_counter()
                    blocking.call(frame)
                    elapsed[RAW].append(time.perf_counter() - start)
                for name, times in elapsed.items():
                    mbps.setdefault((name, size), []).append(size / median(times) / 1e6)
                if size == 16 << 20:
                    for t in gotasks:
                        best_ratio[t].append(min(elapsed[RAW]) / min(elapsed[t]))
        speed = {key: median(v) for key, v in mbps.items()}
        report.table(
            "Payload sweep: `bytes` echoed, MB/s (payload size / round-trip time, after one untimed call)",
            ["client", *[_size(s) for s in sizes]],
            [[name, *[f"{speed[name, s]:,.1f}" for s in sizes]] for name in (*TRANSPORTS, RAW)],
            f"The last row is a ceiling, not a peer: `{RAW}` sends pre-encoded frames and reads the "
            "replies into a buffer allocated once, blocking the event loop meanwhile. Every client "
            "and the ceiling take turns call by call.",
        )
        report.table(
            "16 MiB echo against the ceiling, round by round",
            ["transport", *[f"round {i + 1}" for i in range(rounds)], "worst"],
            [[t, *[f"{r:.2f}x" for r in v], f"{min(v):.2f}x"] for t, v in best_ratio.items()],
            "The ceiling's fastest 16 MiB round trip over the client's fastest, in each round of the "
            "payload sweep: what the client's work costs, with the machine's interruptions left out "
            "(a median moves by 2x from run to run on this shared machine, the ceiling's own too).",
        )
        worst = min(best_ratio["unix"])
        report.target(
            "16 MiB bytes round trip >= 0.9x the blocking-socket ceiling (unix), every round",
            f"{worst:.2f}x in the worst of {rounds} rounds",
            worst >= 0.9,
        )
        plot_lines(
            out / "payload.png",
            "Echo throughput by payload size",
            "payload bytes",
            "MB/s",
            {name: [(s, speed[name, s]) for s in sizes] for name in (*TRANSPORTS, RAW)},
            logx=True,
            logy=True,
        )

        # Cancel latency: from cancel() to the call returning, the Go method still running.
        gt = gotasks["unix"]
        cancel_times: list[float] = []
        for _ in range(50 if quick else 200):
            async with trio.open_nursery() as inner:
                scope = trio.CancelScope()
                returned: list[float] = []

                async def slow(scope: trio.CancelScope = scope, returned: list[float] = returned) -> None:
                    with scope:
                        await gt.call("App.Slow", 60_000)
                    returned.append(time.perf_counter())

                inner.start_soon(slow)
                await trio.testing.wait_all_tasks_blocked()
                cancelled_at = time.perf_counter()
                scope.cancel()
            cancel_times.append(returned[0] - cancelled_at)
        cancel_p50 = median(cancel_times)
        report.table(
            "Cancel latency (unix)",
            ["measure", "µs"],
            [["p50", f"{cancel_p50 * 1e6:.0f}"], ["p99", f"{percentile(cancel_times, 0.99) * 1e6:.0f}"]],
        )
        report.target(
            "a cancelled call returns in < 1 ms", f"{cancel_p50 * 1e3:.3f} ms (p50)", cancel_p50 < 1e-3
        )
        nursery.cancel_scope.cancel()  # the floor's tasks

    # Start-up: entering open_gotask to the first result, from the built binary, and from the
    # source folder with nothing changed since it was built (the cache's check, no Go run).
    starts: dict[str, tuple[str | Path, Transport]] = {t: (sidecar, t) for t in TRANSPORTS}
    starts[FROM_SOURCE] = (EXAMPLE, "unix")
    startup: dict[str, list[float]] = {label: [] for label in starts}
    for _ in range(5 if quick else 20):
        for label, (spec, t) in starts.items():
            start = time.perf_counter()
            async with open_gotask(spec, transport=t, shutdown_grace=0.5) as gt:
                await gt.call("App.Hi", "x")
                startup[label].append(time.perf_counter() - start)
    report.table(
        "Start-up: entering open_gotask to the first result",
        ["transport", "median ms", "max ms"],
        [[label, f"{median(v) * 1e3:.1f}", f"{max(v) * 1e3:.1f}"] for label, v in startup.items()],
        f'`{FROM_SOURCE}`: `open_gotask("go/example")`, already built; every other row starts the binary.',
    )
    report.target(
        "start-up to first result <= 10 ms (median, unix)",
        f"{median(startup['unix']) * 1e3:.1f} ms",
        median(startup["unix"]) <= 0.010,
    )

    await memory_per_call(sidecar, report)
    await cpu_bound(sidecar, report, quick)
    await host_calls(sidecar, report, quick)
    await goridge_format(sidecar, report, rounds, quick)

    await grpc_section(report, sidecar, quick)
    return report


async def fast_path(address: str, report: Report, rounds: int, quick: bool) -> None:
    """The same sidecar through `FdChannel` and through `StreamChannel`: what reading and writing
    the socket's descriptor directly buys, sequentially and with 64 callers."""
    async with trio.open_nursery() as nursery:
        gotasks: dict[str, GoTask] = {}
        for name, generic in ((DESCRIPTORS, False), (STREAMS, True)):

            async def connect(generic: bool = generic) -> Opened:
                stream: trio.abc.Stream = await open_stream(address)
                if generic:
                    stream = trio.StapledStream(stream, stream)  # not a SocketStream: the generic channel
                return await greet(stream, max_frame_size=DEFAULT_MAX_FRAME_SIZE, secret=None)

            pool = Pool(
                nursery,
                connect,
                PoolSettings(1, Limits(DEFAULT_MAX_FRAME_SIZE, 1024), keepalive_timeout=None),
                explain=lost_without_explanation,
            )
            await pool.warm_up()
            pool.address = address
            gotasks[name] = GoTask(pool)
        n = 500 if quick else 2000
        latency: dict[str, list[float]] = {name: [] for name in gotasks}
        rates: dict[str, list[float]] = {name: [] for name in gotasks}
        for _ in range(rounds):
            for name, gt in gotasks.items():
                call = partial(gt.call, "App.Echo", 1)
                latency[name] += [await timed(call) for _ in range(n)]
                rates[name].append(await throughput(call, 2000 if quick else 8000, 64))
        report.table(
            "The descriptor fast path (unix)",
            ["channel", "sequential p50 µs", "64 callers, calls/s", "64 callers vs Trio streams"],
            [
                [
                    name,
                    f"{median(latency[name]) * 1e6:.0f}",
                    f"{median(rates[name]):,.0f}",
                    f"{median(rates[name]) / median(rates[STREAMS]):.2f}x",
                ]
                for name in gotasks
            ],
            "One sidecar, two clients: one reads and writes the socket's descriptor itself "
            "(`FdChannel`, what unix, tcp and pipe use), the other goes through `trio.SocketStream` "
            "(`StreamChannel`, what TLS uses). The fast path stays while its row is the faster.",
        )
        for gt in gotasks.values():
            gt._router.close()
        nursery.cancel_scope.cancel()


async def pool_sizes(sidecar: str, report: Report, rounds: int, quick: bool) -> None:
    """64 and 256 callers over pools of 1, 2 and 4 connections (unix)."""
    sizes = [1, 2, 4]
    async with AsyncExitStack() as stack:
        gotasks = {s: await stack.enter_async_context(open_gotask(sidecar, pool_size=s)) for s in sizes}
        for gt in gotasks.values():
            await throughput(partial(gt.call, "App.Echo", 1), 1024, 256)  # open every connection
        rates: dict[tuple[int, int], list[float]] = {}
        for _ in range(rounds):
            for callers in (64, 256):
                for size, gt in gotasks.items():
                    call = partial(gt.call, "App.Echo", 1)
                    rates.setdefault((size, callers), []).append(
                        await throughput(call, 2000 if quick else 8000, callers)
                    )
        report.table(
            "Pool size (unix)",
            ["pool_size", "64 callers, calls/s", "256 callers, calls/s", "64 callers vs pool_size=1"],
            [
                [
                    str(size),
                    f"{median(rates[size, 64]):,.0f}",
                    f"{median(rates[size, 256]):,.0f}",
                    f"{median(rates[size, 64]) / median(rates[1, 64]):.2f}x",
                ]
                for size in sizes
            ],
            "One connection's writer batches every queued frame into one write; more connections "
            "split the batches. The default, `pool_size=1`, should be as fast as any row: more "
            "connections are for isolation, not speed.",
        )


async def host_calls(sidecar: str, report: Report, quick: bool) -> None:
    """Go calling Python: sequential host calls timed in Go, beside Python calling Go."""
    n = 200 if quick else 1000
    rows = []
    async with AsyncExitStack() as stack:
        for transport in TRANSPORTS:
            gt = await stack.enter_async_context(
                open_gotask(sidecar, transport=transport, handlers={"Py.Echo": trivial})
            )
            await gt.call("App.HostLatency", {"method": "Py.Echo", "n": 50})  # warm up
            go_to_python = await gt.call("App.HostLatency", {"method": "Py.Echo", "n": n})
            python_to_go = [await timed(partial(gt.call, "App.Echo", 1)) for _ in range(n)]
            rows.append(
                [
                    transport,
                    f"{go_to_python['p50_ns'] / 1000:.0f}",
                    f"{go_to_python['p99_ns'] / 1000:.0f}",
                    f"{median(python_to_go) * 1e6:.0f}",
                ]
            )
    report.table(
        "Go calling Python (host calls)",
        ["transport", "Go→Python p50 µs", "Go→Python p99 µs", "Python→Go p50 µs"],
        rows,
        f"{n} sequential `gotask.CallHost` calls to a plain Python function, timed in Go "
        "(`App.HostLatency`), beside as many calls the other way, timed in Python.",
    )


async def goridge_format(sidecar: str, report: Report, rounds: int, quick: bool) -> None:
    """GoTask's own format (goridge v2 frames, net/rpc, JSON) against this project's protocol: the
    same trivial echo through a GoTask-shaped sidecar and through go/example, side by side."""
    with tempfile.TemporaryDirectory(prefix="gotask-goridge-build-") as folder:
        try:
            binary = await trio.to_thread.run_sync(goridge_server.build, Path(folder))
        except goridge_server.ProxyUnreachable as exc:
            print(
                "Skipped \"GoTask's format (goridge) vs this project's protocol\": the Go module proxy "
                f"cannot be reached, so goridge v2.4.6 cannot be fetched ({str(exc).strip()[:200]})",
                flush=True,
            )
            return
        transports: tuple[Transport, ...] = ("unix", "pipe")
        async with AsyncExitStack() as stack:
            variants: dict[tuple[Transport, str], Call] = {}
            for t in transports:
                ours = await stack.enter_async_context(open_gotask(sidecar, transport=t))
                theirs = await stack.enter_async_context(
                    open_gotask(binary, transport=t, protocol="goridge", shutdown_grace=0.5)
                )
                variants[t, OURS] = partial(ours.call, "App.Echo", 1)
                variants[t, GORIDGE] = partial(theirs.call, "App.Echo", 1)
            for call in variants.values():
                assert await call() == 1
                await throughput(call, 512, 64)  # warm up
            n = 500 if quick else 2000
            latency: dict[tuple[Transport, str], list[float]] = {key: [] for key in variants}
            rates: dict[tuple[Transport, str], list[float]] = {key: [] for key in variants}
            for _ in range(rounds):
                for key, call in variants.items():
                    latency[key] += [await timed(call) for _ in range(n)]
                    rates[key].append(await throughput(call, 2000 if quick else 8000, 64))
    rows = []
    for t in transports:
        measures = {
            "sequential p50 µs": {w: median(latency[t, w]) * 1e6 for w in (OURS, GORIDGE)},
            "sequential p99 µs": {w: percentile(latency[t, w], 0.99) * 1e6 for w in (OURS, GORIDGE)},
            "64 callers, calls/s": {w: median(rates[t, w]) for w in (OURS, GORIDGE)},
        }
        rows += [
            [t, measure, f"{v[OURS]:,.0f}", f"{v[GORIDGE]:,.0f}", f"{v[GORIDGE] / v[OURS]:.2f}x"]
            for measure, v in measures.items()
        ]
    report.table(
        "GoTask's format (goridge) vs this project's protocol",
        ["transport", "measure", OURS, GORIDGE, "goridge / ours"],
        rows,
        f"{rounds} rounds x {n} sequential calls, then 64 concurrent callers; `App.Echo(1)` on both, "
        "each format with its defaults: this project's calls multiplexed over its pool, GoTask's one "
        "call in flight per connection, up to 32 connections (over the pipe, one connection: one "
        "call at a time; docs/goridge.md says why). This project: go/example through `open_gotask`. "
        "GoTask's format: a sidecar serving net/rpc with goridge v2.4.6's codec as GoTask's does "
        '(tests/goridge_server.py), through `open_gotask(protocol="goridge")`. For latency '
        "a ratio above 1x means goridge is slower; for calls/s, below 1x does.",
    )


async def memory_per_call(sidecar: str, report: Report) -> None:
    """Python heap per in-flight call: 10,000 calls parked in Go, minus 10,000 parked tasks."""
    n = 10_000

    async def heap_with(park: Callable[[], Awaitable[object]]) -> int:
        async with trio.open_nursery() as nursery:
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(n):
                nursery.start_soon(park)
            await trio.testing.wait_all_tasks_blocked()
            after = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
            nursery.cancel_scope.cancel()
        return after - before

    async with open_gotask(sidecar, pool_size=1, max_inflight=n, args=["-max-inflight", str(n)]) as gt:
        await gt.call("App.Hi", "warm")
        tasks_only = await heap_with(trio.sleep_forever)
        with_calls = await heap_with(partial(gt.call, "App.WaitCancelled", 1 << 62))
    report.table(
        "Client memory for 10,000 calls in flight (tracemalloc)",
        ["measure", "bytes"],
        [
            ["10,000 parked tasks (baseline)", f"{tasks_only:,}"],
            ["10,000 tasks, each with a call in flight", f"{with_calls:,}"],
            ["per call, beyond its task", f"{(with_calls - tasks_only) / n:,.0f}"],
        ],
    )
    per_call = (with_calls - tasks_only) / n
    report.target("client memory per call in flight <= 600 B", f"{per_call:,.0f} B", per_call <= 600)


async def cpu_bound(sidecar: str, report: Report, quick: bool) -> None:
    jobs = os.cpu_count() or 2
    primes_n = 100_000 if quick else 300_000
    mib = 64 if quick else 256
    rows = []
    async with open_gotask(sidecar) as gt:
        for label, go_call, py_call in [
            (
                f"primes below {primes_n:,}",
                partial(gt.call, "App.CountPrimes", primes_n),
                partial(trio_parallel.run_sync, count_primes, primes_n),
            ),
            (
                f"SHA-256 of {mib} MiB",
                partial(gt.call, "App.SHA256", mib),
                partial(trio_parallel.run_sync, sha256, mib),
            ),
        ]:
            assert await go_call() == await py_call()
            go_t, py_t = [], []
            for _ in range(3):
                go_t.append(await timed(partial(_parallel, go_call, jobs)))
                py_t.append(await timed(partial(_parallel, py_call, jobs)))
            rows.append(
                [
                    f"{jobs} x {label}",
                    f"{median(go_t) * 1e3:.0f}",
                    f"{median(py_t) * 1e3:.0f}",
                    f"{median(py_t) / median(go_t):.1f}x",
                ]
            )
    report.table(
        f"CPU-bound work on every core ({jobs} jobs at once)",
        ["task", "Go via trio_gotask, ms", "Python via trio_parallel, ms", "Go speed-up"],
        rows,
    )


async def _parallel(call: Call, jobs: int) -> None:
    async with trio.open_nursery() as nursery:
        for _ in range(jobs):
            nursery.start_soon(call)


def _size(n: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n // scale} {unit}"
    return f"{n} B"


def plot_lines(
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    series: dict[str, list[tuple[float, float]]],
    *,
    logx: bool = False,
    logy: bool = False,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, points in series.items():
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o", label=name)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds and calls, for a smoke test")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--publish", action="store_true", help="also write docs/performance.md and its plots")
    options = parser.parse_args()
    options.out.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    report = trio.run(run, options.quick, options.out)
    targets = ["### Targets (issues 5 and 13)", "", "| target | measured | met |", "|---|---:|---|"]
    targets += [
        f"| {what} | {measured} | {'yes' if met else 'no'} |" for what, measured, met in report.targets
    ]
    print("\n".join(targets))
    header = [
        "# Benchmark results",
        "",
        f"Run {started} with `python benchmarks/bench.py{' --quick' if options.quick else ''}` on {machine()}.",
        "",
    ]
    results = "\n".join(header) + "\n" + "\n".join(report.sections) + "\n" + "\n".join(targets) + "\n"
    (options.out / "results.md").write_text(results)
    if options.publish:
        docs = Path(__file__).resolve().parent.parent / "docs"
        (docs / "performance").mkdir(exist_ok=True)
        for png in ("throughput.png", "payload.png"):
            (docs / "performance" / png).write_bytes((options.out / png).read_bytes())
        intro = (Path(__file__).parent / "performance-intro.md").read_text()
        (docs / "performance.md").write_text(intro + "\n" + results.replace("# Benchmark results\n", "", 1))


if __name__ == "__main__":
    main()
