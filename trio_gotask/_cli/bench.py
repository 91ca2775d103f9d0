"""``trio-gotask bench``: calls measured on each transport."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import trio

from .._address import TRANSPORTS, Transport
from .._client import GoTask
from .._golib import LibraryMissing, build_probe, find_library
from ._common import (
    EXIT_OK,
    EXIT_UNAVAILABLE,
    Exit,
    T,
    UsageError,
    add_command,
    callers_arg,
    from_json,
    json_bytes,
    seconds_arg,
    to_json,
    trio_run,
    write_stdout,
)
from .call import Target, add_target_options, classify_target, target_opener
from .doctor import check_go, versions


def add_bench(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = add_command(
        commands,
        "bench",
        common,
        "measure calls: latency, and calls per second by concurrent callers, on each transport",
        "Start the sidecar on each transport and measure a trivial call: the latency of one call "
        "at a time (p50, p99), and calls per second with several callers at once. Progress goes "
        "to stderr, the table to stdout.",
        """\
By default the probe sidecar doctor builds is measured with App.Echo(1), started on each
transport; --sidecar measures your own with --method and --arg: any TARGET that call takes, a
folder or an executable (started on each transport) or the address of a running sidecar, reached
as call reaches it (--secret or $GOTASK_SECRET, --tls, --tls-ca, --protocol).
A fuller benchmark against the floor and the peers is benchmarks/bench.py in the repository.

exit status:
  0    done
  1    a call failed (an error from Go)
  2    the command line is wrong
  3    the sidecar could not be built or started, or it stopped serving""",
    )
    parser.add_argument(
        "--seconds",
        type=seconds_arg,
        default=1.0,
        metavar="SECONDS",
        help="how long each measurement runs (default: 1; 0.1 for a smoke test)",
    )
    parser.add_argument(
        "--callers",
        type=callers_arg,
        default=[16, 128],
        metavar="N,N",
        help="the numbers of concurrent callers to measure besides one (default: 16,128)",
    )
    parser.add_argument(
        "--sidecar",
        metavar="TARGET",
        help="the sidecar to measure, any TARGET that call takes: a folder or an executable to start "
        "(on each transport), or the address of a running sidecar",
    )
    parser.add_argument("--method", default="App.Echo", help="the method to call (default: App.Echo)")
    parser.add_argument("--arg", default="1", metavar="JSON", help="its argument, as JSON (default: 1)")
    parser.add_argument("--go-library", metavar="DIR", help="the Go library, to build the probe sidecar")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON document")
    add_target_options(
        parser, transport_help="measure only this transport (repeat for several; default: all)"
    )
    parser.set_defaults(run=_run_bench)


@dataclass
class BenchResult:
    """One transport's measurements."""

    transport: str
    calls: int
    p50_us: float
    p99_us: float
    calls_per_second: dict[int, float] = field(default_factory=dict)
    """By number of concurrent callers; 1 is the latency measurement's own rate."""


class _Counter:
    calls = 0


class _Progress:
    """Progress on stderr: a line per finished step, and on a terminal a live line in between."""

    def __init__(self, total: int, *, quiet: bool) -> None:
        self._total = total
        self._done = 0
        self._quiet = quiet
        self._live = not quiet and sys.stderr.isatty()

    def say(self, text: str) -> None:
        if not self._quiet:
            self._clear()
            print(text, file=sys.stderr, flush=True)

    async def step(self, label: str, seconds: float, measure: Callable[[_Counter], Awaitable[T]]) -> T:
        counter = _Counter()
        async with trio.open_nursery() as nursery:
            if self._live:
                nursery.start_soon(self._refresh, label, seconds, counter)
            result = await measure(counter)
            nursery.cancel_scope.cancel()
        self._done += 1
        return result

    def done(self, label: str, outcome: str) -> None:
        self.say(f"[{self._done}/{self._total}] {label}: {outcome}")

    async def _refresh(self, label: str, seconds: float, counter: _Counter) -> None:
        started = time.monotonic()
        while True:
            elapsed = min(time.monotonic() - started, seconds)
            sys.stderr.write(
                f"\r\x1b[K[{self._done + 1}/{self._total}] {label}: {counter.calls:,} calls, "
                f"{elapsed:.1f} of {seconds:g} s"
            )
            sys.stderr.flush()
            await trio.sleep(0.1)

    def _clear(self) -> None:
        if self._live:
            sys.stderr.write("\r\x1b[K")


async def _latency(call: Callable[[], Awaitable[object]], seconds: float, counter: _Counter) -> list[float]:
    durations: list[float] = []
    deadline = time.perf_counter() + seconds
    while True:
        before = time.perf_counter()
        await call()
        after = time.perf_counter()
        durations.append(after - before)
        counter.calls += 1
        if after >= deadline:
            return durations


async def _throughput(
    call: Callable[[], Awaitable[object]], callers: int, seconds: float, counter: _Counter
) -> float:
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        while time.perf_counter() < deadline:
            await call()
            counter.calls += 1

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(callers):
            nursery.start_soon(caller)
    return counter.calls / (time.perf_counter() - started)


def _run_bench(options: argparse.Namespace) -> int:
    try:
        arg = from_json(options.arg)
    except ValueError as exc:
        raise UsageError(f"--arg {exc}") from None
    target: Target | None = None
    if options.sidecar is not None:
        try:
            target = classify_target(options.sidecar)
        except ValueError as exc:
            raise UsageError(f"--sidecar: {exc}") from None
    transports: list[Transport] = list(dict.fromkeys(options.transport or TRANSPORTS))
    if target is not None and target.connect is not None:
        target_opener(target, options, options.sidecar, "unix")  # the options' mistakes, now
        transports = []
    elif target is None:
        target_opener(Target(start="."), options, "the probe sidecar", "unix")
    steps = max(len(transports), 1) * (1 + len(options.callers))
    progress = _Progress(steps, quiet=options.quiet > 0)
    results, go_version = trio_run(
        options, _bench, target, options.go_library, transports, options, arg, progress
    )
    header = versions(go_version)
    if options.json:
        document = {
            "method": options.method,
            "arg": to_json(arg),
            "seconds": options.seconds,
            "versions": header,
            "results": to_json([asdict(r) for r in results]),
        }
        write_stdout(json_bytes(document, pretty=True))
    else:
        write_stdout(_bench_table(results, options, header).encode("utf-8"))
    return EXIT_OK


async def _bench(
    target: Target | None,
    library_option: str | None,
    transports: list[Transport],
    options: argparse.Namespace,
    arg: Any,
    progress: _Progress,
) -> tuple[list[BenchResult], str]:
    go_version = "not checked (--sidecar)"
    if target is None:
        go, check = await check_go()
        if check.status != "ok":
            raise Exit(EXIT_UNAVAILABLE, f"{check.detail}: {check.fix}")
        assert go is not None
        go_version = go
        try:
            library = find_library(library_option)
        except LibraryMissing as exc:
            raise Exit(
                EXIT_UNAVAILABLE, f"{exc}: {exc.fix}; or measure a sidecar of yours with --sidecar"
            ) from None
        target = Target(start=str(await build_probe(library)))
    given = options.sidecar or "the probe sidecar"
    # A sidecar started here is measured on each transport, a running one where it is.
    plans: list[tuple[str, AbstractAsyncContextManager[GoTask]]] = [
        (t, target_opener(target, options, given, t)) for t in transports
    ] or [(given, target_opener(target, options, given, "unix"))]
    results = []
    seconds = options.seconds
    for transport, opener in plans:
        async with opener as gotask:
            call = partial(gotask.call, options.method, arg)
            try:
                await call()  # a method that fails, fails here, once
            except (OverflowError, TypeError, ValueError) as exc:  # refused before it was sent
                raise UsageError(f"--arg cannot be sent: {exc}") from None
            await _throughput(call, max(options.callers), min(seconds, 0.2), _Counter())  # warm up
            label = f"{transport}, one caller at a time"
            durations = await progress.step(label, seconds, partial(_latency, call, seconds))
            total = sum(durations)
            result = BenchResult(
                transport,
                len(durations),
                statistics.median(durations) * 1e6,
                sorted(durations)[int(0.99 * (len(durations) - 1))] * 1e6,
                {1: len(durations) / total},
            )
            progress.done(label, f"p50 {result.p50_us:.0f} µs, p99 {result.p99_us:.0f} µs")
            for callers in options.callers:
                label = f"{transport}, {callers} callers"
                rate = await progress.step(label, seconds, partial(_throughput, call, callers, seconds))
                result.calls_per_second[callers] = rate
                progress.done(label, f"{rate:,.0f} calls/s")
            results.append(result)
    return results, go_version


def _bench_table(results: list[BenchResult], options: argparse.Namespace, header: dict[str, str]) -> str:
    levels = [1, *options.callers]
    titles = ["transport", "p50 µs", "p99 µs", *[f"{n} caller{'s' if n > 1 else ''}/s" for n in levels]]
    rows = [
        [
            r.transport,
            f"{r.p50_us:.1f}",
            f"{r.p99_us:.1f}",
            *[f"{r.calls_per_second[n]:,.0f}" for n in levels],
        ]
        for r in results
    ]
    widths = [max(len(row[i]) for row in [titles, *rows]) for i in range(len(titles))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    arg_text = json.dumps(to_json(from_json(options.arg)), ensure_ascii=False)
    out = [
        f"{options.method}({arg_text}), {options.seconds:g} s per measurement; latency of one call at a "
        "time, then calls per second by concurrent callers",
        "",
        line(titles),
        *map(line, rows),
        "",
        *[f"{name}: {value}" for name, value in header.items()],
    ]
    return "\n".join(out) + "\n"
