"""trio_gotask against gRPC, the usual other way to call Go, in one run on one machine.

    python benchmarks/grpc_compare.py [--quick]

The peer is benchmarks/grpc_server (Go, google.golang.org/grpc, one unary method taking and
returning a `google.protobuf.Int64Value`), called from grpcio's asyncio client over a Unix socket
and over TCP loopback; trio_gotask calls `App.Echo(1)` on the example sidecar over a Unix socket.
grpc.aio runs on asyncio, so each round measures trio_gotask in Trio, then gRPC in `asyncio.run` in
a worker thread while Trio waits; the next round goes the other way round. Tables show the median
over rounds. Needs grpcio and protobuf (`pip install grpcio protobuf`) and a Go toolchain that can
fetch google.golang.org/grpc; without them the section says it is skipped and why.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from trio_gotask import build_sidecar, open_gotask

sys.path.insert(0, str(Path(__file__).parent))
from measure import EXAMPLE, Call, Report, machine, median, percentile, throughput, timed

try:
    import grpc  # type: ignore[import-untyped, unused-ignore]
    from google.protobuf.wrappers_pb2 import Int64Value  # type: ignore[import-untyped, unused-ignore]
except ImportError as error:
    MISSING: str | None = f"{error}; install them with `pip install grpcio protobuf`"
else:
    MISSING = None

SERVER = Path(__file__).resolve().parent / "grpc_server"
TITLE = "Against gRPC"
GOTASK = "trio_gotask unix"
GRPC_UNIX = "gRPC unix (grpc.aio)"
GRPC_TCP = "gRPC tcp loopback (grpc.aio)"
LEVELS = (1, 8, 64, 256)
Throughput = Callable[[Call, int, int], Awaitable[float]]


class Skipped(Exception):
    """The comparison cannot run here; the message says why."""


@dataclass
class Results:
    """Every round's samples, by variant (and by number of callers for the rates)."""

    latency: dict[str, list[float]] = field(default_factory=dict)
    latency_cpu: dict[str, list[float]] = field(default_factory=dict)
    rate: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    rate_cpu: dict[tuple[str, int], list[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    sequential: int  # calls per round
    concurrent: int  # calls per round and level, a multiple of every level


async def grpc_section(report: Report, sidecar: str | Path, quick: bool) -> None:
    """Add the comparison's tables to `report` (or a note saying why it was skipped).

    Call it from inside `trio.run`; it builds and starts the gRPC server itself and stops it
    before returning. `sidecar` is the built example sidecar (`build_sidecar(EXAMPLE)`).
    """
    if MISSING is not None:
        _skip(report, f"grpcio or protobuf is missing: {MISSING}.")
        return
    rounds = 3 if quick else 5
    plan = Plan(sequential=500 if quick else 2000, concurrent=1536 if quick else 6144)
    with tempfile.TemporaryDirectory(prefix="gotask-grpc-") as folder:
        try:
            server = await _build_server(Path(folder))
        except Skipped as skipped:
            _skip(report, str(skipped))
            return
        results = Results()
        async with (
            _serve(server, f"{folder}/grpc.sock") as unix_address,
            _serve(server, "127.0.0.1:0") as tcp_address,
            open_gotask(sidecar, transport="unix") as gotask,
        ):
            targets = {GRPC_UNIX: f"unix:{unix_address}", GRPC_TCP: f"ipv4:{tcp_address}"}
            echo = partial(gotask.call, "App.Echo", 1)
            await throughput(echo, 512, 64)  # warm up: connections, caches
            for i in range(rounds):
                for part in ("trio", "asyncio") if i % 2 == 0 else ("asyncio", "trio"):
                    if part == "trio":
                        await _measure(results, GOTASK, echo, throughput, plan)
                    else:
                        await trio.to_thread.run_sync(_grpc_round, results, targets, plan)
    _tables(report, results, rounds, plan)


def _skip(report: Report, why: str) -> None:
    text = f"### {TITLE}\n\nSkipped: {why}\n"
    report.sections.append(text)
    print(text, flush=True)


async def _build_server(folder: Path) -> Path:
    binary = folder / "grpc_server"
    command = ["go", "build", "-buildvcs=false", "-o", str(binary), "."]
    try:
        built = await trio.run_process(
            command, cwd=SERVER, capture_stdout=True, capture_stderr=True, check=False
        )
    except FileNotFoundError:
        raise Skipped("the `go` command was not found; install Go to build benchmarks/grpc_server.") from None
    if built.returncode != 0:
        output = built.stderr.decode(errors="replace").strip()
        raise Skipped(
            f"`go build` of benchmarks/grpc_server failed (exit {built.returncode}); can this machine "
            f"fetch google.golang.org/grpc through its Go module proxy? Go said:\n\n```\n{output}\n```"
        )
    return binary


@asynccontextmanager
async def _serve(binary: Path, address: str) -> AsyncIterator[str]:
    """Run the gRPC server on `address` and yield the address it listens on (a port 0 chosen)."""
    process = await trio.lowlevel.open_process(
        [str(binary), "-address", address], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        line = b""
        with trio.fail_after(10):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some()
                if not chunk:
                    raise RuntimeError(
                        f"the gRPC server exited before it was ready (exit {await process.wait()}); "
                        "its error is above"
                    )
                line += chunk
        word, _, listening = line.decode().strip().partition(" ")
        if word != "ready":
            raise RuntimeError(f"the gRPC server said {line!r} instead of 'ready <address>'")
        yield listening
    finally:
        with trio.CancelScope(shield=True):
            await process.stdin.aclose()  # the server exits when its stdin closes
            with trio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
            await process.stdout.aclose()


async def _measure(results: Results, name: str, call: Call, rate: Throughput, plan: Plan) -> None:
    """One round of one variant: sequential latency, then throughput at each level, with the
    process's CPU time per call. Runs on Trio or asyncio alike, given that loop's `rate`."""
    for _ in range(64):
        await call()
    cpu = time.process_time()
    latency = [await timed(call) for _ in range(plan.sequential)]
    results.latency_cpu.setdefault(name, []).append((time.process_time() - cpu) / plan.sequential)
    results.latency.setdefault(name, []).extend(latency)
    for callers in LEVELS:
        cpu = time.process_time()
        results.rate.setdefault((name, callers), []).append(await rate(call, plan.concurrent, callers))
        results.rate_cpu.setdefault((name, callers), []).append((time.process_time() - cpu) / plan.concurrent)


def _grpc_round(results: Results, targets: dict[str, str], plan: Plan) -> None:
    asyncio.run(_grpc_measure(results, targets, plan))


async def _grpc_measure(results: Results, targets: dict[str, str], plan: Plan) -> None:
    # A channel belongs to the event loop it was made in, and every round has its own loop.
    for name, target in targets.items():
        async with grpc.aio.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
            method = channel.unary_unary(
                "/bench.Echo/Echo",
                request_serializer=Int64Value.SerializeToString,
                response_deserializer=Int64Value.FromString,
            )

            async def echo(method: Any = method) -> object:
                reply: object = await method(Int64Value(value=1))
                return reply

            await _asyncio_throughput(echo, 512, 64)  # warm up: the connection, HTTP/2 windows
            await _measure(results, name, echo, _asyncio_throughput, plan)


async def _asyncio_throughput(call: Call, calls: int, callers: int) -> float:
    """`bench.throughput` on asyncio: calls per second, `callers` tasks sharing `calls`."""
    per_caller = max(1, calls // callers)

    async def caller() -> None:
        for _ in range(per_caller):
            await call()

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return per_caller * callers / (time.perf_counter() - start)


def _tables(report: Report, results: Results, rounds: int, plan: Plan) -> None:
    names = [GOTASK, GRPC_UNIX, GRPC_TCP]
    p50 = {name: median(results.latency[name]) for name in names}
    report.table(
        f"{TITLE}: sequential latency of a trivial call",
        ["variant", "p50 µs", "p99 µs", "client CPU µs/call", f"p50 vs {GRPC_UNIX}"],
        [
            [
                name,
                f"{p50[name] * 1e6:.0f}",
                f"{percentile(results.latency[name], 0.99) * 1e6:.0f}",
                f"{median(results.latency_cpu[name]) * 1e6:.0f}",
                f"{p50[name] / p50[GRPC_UNIX]:.2f}x",
            ]
            for name in names
        ],
        f"{rounds} rounds x {plan.sequential} calls, the order of Trio and asyncio alternating by round; "
        "`App.Echo(1)` for trio_gotask, `/bench.Echo/Echo` with an `Int64Value` for gRPC (Go server, "
        "default options). Client CPU: this process's CPU time (all threads) over the calls.",
    )
    rate = {key: median(values) for key, values in results.rate.items()}
    cpu = {key: median(values) for key, values in results.rate_cpu.items()}
    rows = [
        [name, *[f"{rate[name, c]:,.0f}" for c in LEVELS], f"{cpu[name, 64] * 1e6:.0f}"] for name in names
    ]
    rows.append(
        [
            f"{GOTASK} / {GRPC_UNIX}",
            *[f"{rate[GOTASK, c] / rate[GRPC_UNIX, c]:.2f}x" for c in LEVELS],
            f"{cpu[GOTASK, 64] / cpu[GRPC_UNIX, 64]:.2f}x",
        ]
    )
    report.table(
        f"{TITLE}: throughput, calls per second, by concurrent callers",
        ["variant", *[f"{c} callers" for c in LEVELS], "client CPU µs/call (64)"],
        rows,
        f"{rounds} rounds x {plan.concurrent} calls per level; one trio_gotask client and one gRPC "
        "channel, each with its default settings.",
    )


async def _standalone(quick: bool) -> None:
    report = Report()
    await grpc_section(report, await build_sidecar(EXAMPLE), quick)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds and calls, for a smoke test")
    options = parser.parse_args()
    print(f"On {machine()}.\n", flush=True)
    trio.run(_standalone, options.quick)


if __name__ == "__main__":
    main()
