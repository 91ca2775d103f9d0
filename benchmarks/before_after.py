"""This tree's client against the client of an earlier commit, in one process, rounds alternating.

    python benchmarks/before_after.py --before main~5 [--rounds 7]
    python benchmarks/before_after.py --before HEAD --compiled   # pure Python vs the mypyc build
    python benchmarks/before_after.py --before main~5 --size 16777216   # bytes echoed, each size
    python benchmarks/before_after.py --before main~5 --after plain,pass1,otel   # variants of "after"

A change to the client is "no slower" when, in one run on one machine, its ratios to the floor
match those of the commit before it: runs apart differ by more than most changes do. The earlier
client is extracted with ``git archive`` and imported as ``trio_gotask_before``; both talk to
sidecars built from this tree's ``go/example``, so both must speak the same protocol version.

``--after`` names the ways the "after" client is opened, each measured beside the others:
``plain`` (no interceptors, tracing off: the default), ``pass1`` and ``pass3`` (that many
interceptors that only pass the call on), ``otel`` (tracing on, OpenTelemetry's API without an
SDK: spans that record nothing) and ``otel-sdk`` (tracing on, into an SDK that keeps no span).

With ``--compiled`` the "after" client is this tree built with its core compiled by mypyc (the
optional build, docs/performance.md): the wheel is built from a copy of the tree and unpacked into
a temporary folder, and the script runs again with that folder first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
from floor import Floor, floor_sidecar, request_frame  # noqa: E402
from measure import Call, throughput, timed  # noqa: E402

import trio_gotask  # noqa: E402
from trio_gotask._address import Transport  # noqa: E402

TRANSPORTS: tuple[Transport, ...] = ("unix", "tcp", "pipe")


async def _pass_on(info: Any, call_next: Any) -> Any:
    return await call_next(info)


def after_options(variant: str) -> dict[str, Any]:
    """The keywords of `open_gotask` for the "after" client's ``variant`` (see ``--after``)."""
    if variant == "plain":
        return {"tracing": False}
    if variant in ("pass1", "pass3"):
        return {"tracing": False, "interceptors": [_pass_on] * int(variant[-1])}
    if variant == "otel":
        return {"tracing": True}
    if variant == "otel-sdk":
        from opentelemetry.sdk.trace import TracerProvider

        from trio_gotask._tracing import tracing_interceptors

        calls, hosts = tracing_interceptors(True, tracer_provider=TracerProvider())
        return {"tracing": False, "interceptors": [calls], "host_interceptors": [hosts]}
    raise SystemExit(f"--after: unknown variant {variant!r} (plain, pass1, pass3, otel, otel-sdk)")


def extract(rev: str, into: Path) -> Any:
    """Import the package as it was at ``rev``, as ``trio_gotask_before``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "trio_gotask"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (into / "trio_gotask").rename(into / "trio_gotask_before")
    sys.path.insert(0, str(into))
    return importlib.import_module("trio_gotask_before")


async def run(before: Any, label: str, rounds: int, variants: list[str]) -> None:
    if before.PROTOCOL_VERSION != trio_gotask.PROTOCOL_VERSION:
        sys.exit(
            f"{label} speaks protocol {before.PROTOCOL_VERSION}, this tree {trio_gotask.PROTOCOL_VERSION}"
        )
    sidecar = str(await trio_gotask.build_sidecar(ROOT / "go" / "example"))
    async with AsyncExitStack() as stack:
        calls: dict[str, Call] = {}
        for transport in TRANSPORTS:
            gt = await stack.enter_async_context(before.open_gotask(sidecar, transport=transport))
            calls[f"before ({label}) {transport}"] = partial(gt.call, "App.Echo", 1)
            for variant in variants:
                name = "after" if variants == ["plain"] else f"after {variant}"
                options = after_options(variant)
                gt = await stack.enter_async_context(
                    trio_gotask.open_gotask(sidecar, transport=transport, **options)
                )
                calls[f"{name} {transport}"] = partial(gt.call, "App.Echo", 1)
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="gotask-floor-"))
        address = await stack.enter_async_context(floor_sidecar(sidecar, f"{folder}/floor.sock"))
        stream = await trio.open_unix_socket(address)
        stack.push_async_callback(stream.aclose)
        floor = Floor(stream)
        await floor.skip_hello()
        frame = request_frame("App.Echo", 1)
        for call in calls.values():
            await throughput(call, 512, 64)  # warm up

        sequential: dict[str, Call] = {"floor": partial(floor.call_direct, frame), **calls}
        latency: dict[str, list[float]] = {name: [] for name in sequential}
        cpu: dict[str, list[float]] = {name: [] for name in sequential}
        for _ in range(rounds):
            for name, call in sequential.items():
                start_cpu = time.process_time()
                latency[name] += [await timed(call) for _ in range(1000)]
                cpu[name].append((time.process_time() - start_cpu) / 1000)
        rates: dict[tuple[str, int], list[float]] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(floor.run)
            concurrent: dict[str, Call] = {"floor": partial(floor.call, frame), **calls}
            for _ in range(rounds):
                for callers in (64, 256):
                    for name, call in concurrent.items():
                        rates.setdefault((name, callers), []).append(await throughput(call, 6000, callers))
            nursery.cancel_scope.cancel()

    median = statistics.median
    print(f"{rounds} rounds; medians; ratios are to the floor in the same run.\n")
    print(
        "| client | sequential p50 µs | vs floor | client CPU µs a call | 64 callers, calls/s | vs floor "
        "| 256 callers, calls/s | vs floor |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in sequential:
        p50 = median(latency[name])
        r64, r256 = median(rates[name, 64]), median(rates[name, 256])
        print(
            f"| {name} | {p50 * 1e6:.0f} | {p50 / median(latency['floor']):.2f}x | {median(cpu[name]) * 1e6:.0f} "
            f"| {r64:,.0f} | {r64 / median(rates['floor', 64]):.2f}x "
            f"| {r256:,.0f} | {r256 / median(rates['floor', 256]):.2f}x |"
        )


async def run_payload(before: Any, label: str, rounds: int, size: int) -> None:
    """``bytes`` of ``size`` echoed one call at a time: wall time and the client's CPU (this
    process's, the sidecars being others) per call, the clients alternating call by call."""
    sidecar = str(await trio_gotask.build_sidecar(ROOT / "go" / "example"))
    payload = bytes(size)
    repeat = max(5, min(200, (64 << 20) // (size * 8)))
    async with AsyncExitStack() as stack:
        calls: dict[str, Call] = {}
        for transport in TRANSPORTS:
            for name, package in ((f"before ({label})", before), ("after", trio_gotask)):
                gt = await stack.enter_async_context(package.open_gotask(sidecar, transport=transport))
                calls[f"{name} {transport}"] = partial(gt.call, "App.Echo", payload)
        wall: dict[str, list[float]] = {name: [] for name in calls}
        cpu: dict[str, list[float]] = {name: [] for name in calls}
        for call in calls.values():
            await call()  # untimed: the first large call pays for fresh memory on both sides
        for _ in range(rounds):
            for _ in range(repeat):
                for name, call in calls.items():
                    start, start_cpu = time.perf_counter(), time.process_time()
                    await call()
                    wall[name].append(time.perf_counter() - start)
                    cpu[name].append(time.process_time() - start_cpu)

    median = statistics.median
    print(f"{size:,} bytes echoed; {rounds} rounds of {repeat} calls each; medians.\n")
    print("| client | ms per call | client CPU ms per call |")
    print("|---|---:|---:|")
    for name in calls:
        print(f"| {name} | {median(wall[name]) * 1e3:.2f} | {median(cpu[name]) * 1e3:.2f} |")


_COMPILED_MARK = "TRIO_GOTASK_BENCH_COMPILED"


def compiled_build(folder: Path) -> Path:
    """This tree's wheel with the core compiled by mypyc, unpacked into ``folder``/site."""
    source = folder / "source"
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".git", ".nox", ".venv", "*.so", "__pycache__")
    )
    env = {**os.environ, "HATCH_BUILD_HOOK_ENABLE_MYPYC": "true"}
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(folder), str(source)],
        env=env,
        check=True,
    )
    (wheel,) = folder.glob("*.whl")
    shutil.unpack_archive(wheel, folder / "site", "zip")
    return folder / "site"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", default="HEAD", help="the commit to compare with (default: HEAD)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--compiled", action="store_true", help="compare with this tree's mypyc build")
    parser.add_argument("--size", type=int, help="echo bytes of this size instead of small calls")
    parser.add_argument(
        "--after",
        default="plain",
        help="comma-separated ways to open the after client: plain, pass1, pass3, otel, otel-sdk",
    )
    options = parser.parse_args()
    if options.compiled and os.environ.get(_COMPILED_MARK) is None:
        with tempfile.TemporaryDirectory(prefix="gotask-compiled-") as folder:
            into = compiled_build(Path(folder))
            env = {
                **os.environ,
                _COMPILED_MARK: "1",
                "PYTHONPATH": f"{into}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            }
            sys.exit(subprocess.run([sys.executable, *sys.argv], env=env).returncode)
    if options.compiled:
        core = importlib.import_module("trio_gotask._protocol").__file__ or ""
        assert core.endswith(".so"), f"the compiled build was not imported: {core}"
    with tempfile.TemporaryDirectory(prefix="gotask-before-") as folder:
        before = extract(options.before, Path(folder))
        if options.size is None:
            trio.run(run, before, options.before, options.rounds, options.after.split(","))
        else:
            trio.run(run_payload, before, options.before, options.rounds, options.size)


if __name__ == "__main__":
    main()
