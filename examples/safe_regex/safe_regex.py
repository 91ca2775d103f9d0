"""Searching with patterns users type, safely: python examples/safe_regex/safe_regex.py

A log viewer lets its users filter lines with their own regular expressions. Python's `re`
backtracks: some patterns take time exponential in the length of a line (ReDoS), and nothing can
interrupt a match once it started, so a single pattern can hang the program. Go's `regexp`
package (RE2 syntax) runs in time linear in the input, whatever the pattern.

The script runs the same searches with both: Python's in a worker process that a timeout may kill
(trio_parallel), Go's in the sidecar.
"""

from __future__ import annotations

import re
from pathlib import Path

import trio
import trio_parallel

from trio_gotask import GoTask, RemoteError, open_gotask

SIDECAR = Path(__file__).resolve().parent
TIMEOUT = 1.0  # seconds a Python search may take before its worker process is killed
EVIL = r"^(\w+\s?)*$"  # "words separated by spaces": exponential on a long word that ends in "!"


def search(pattern: str, lines: list[str]) -> list[int]:
    """The indexes of the lines in which pattern matches, with Python's re."""
    compiled = re.compile(pattern)
    return [i for i, line in enumerate(lines) if compiled.search(line)]


async def search_in_python(pattern: str, lines: list[str]) -> list[int] | None:
    """search() in a worker process, killed after TIMEOUT: a thread could not be stopped."""
    with trio.move_on_after(TIMEOUT):
        found: list[int] = await trio_parallel.run_sync(search, pattern, lines, kill_on_cancel=True)
        return found
    return None


async def search_in_go(gt: GoTask, pattern: str, lines: list[str]) -> list[int]:
    found: list[int] = await gt.call("Grep.Search", {"pattern": pattern, "lines": lines})
    return found


def make_log(count: int) -> list[str]:
    """count lines of a web server's log, one request in ten of them a failure."""
    lines = []
    for i in range(count):
        if i % 10 == 7:
            lines.append(
                f"12:{i // 60 % 60:02}:{i % 60:02} ERROR GET /api/items/{i % 97} upstream timeout after {1000 + i % 4000} ms"
            )
        else:
            lines.append(f"12:{i // 60 % 60:02}:{i % 60:02} INFO GET /api/items/{i % 97} 200 in {i % 300} ms")
    return lines


async def main() -> None:
    async with open_gotask(SIDECAR) as gt:
        await trio_parallel.run_sync(search, "", [])  # start a worker process before any timeout
        lines = make_log(10_000)
        pattern = r"ERROR .* timeout after \d{4,} ms"
        # This pattern is known to be safe: Python's answer, with no timeout, checks Go's.
        in_python = await trio_parallel.run_sync(search, pattern, lines)
        in_go = await search_in_go(gt, pattern, lines)
        print(
            f"/{pattern}/ matches {len(in_go)} of {len(lines)} lines; Python and Go agree: {in_python == in_go}"
        )

        print(f"/{EVIL}/ on a word of N letters and a '!':")
        print(f"{'N':>8} {'Python re':>24} {'Go regexp':>12}")
        for size in (14, 18, 22, 10_000):
            line = "a" * size + "!"
            start = trio.current_time()
            python = await search_in_python(EVIL, [line])
            python_time = trio.current_time() - start
            start = trio.current_time()
            go = await search_in_go(gt, EVIL, [line])
            go_time = trio.current_time() - start
            python_column = f"{python_time:.4f} s" if python is not None else f"gave up after {TIMEOUT} s"
            print(f"{size:8} {python_column:>24} {go_time:10.4f} s  {'match' if go else 'no match'}")

        try:
            await search_in_go(gt, r"(\w+) \1", lines)
        except RemoteError as exc:
            print(f"Go refuses a backreference: {exc}")


if __name__ == "__main__":
    trio.run(main)
