"""CPU-heavy work in Go, against the same work in Python processes: python examples/fuzzy_match/fuzzy_match.py [QUERIES]

Matching misspelt names against a customer list by edit distance (Levenshtein) is pure CPU work.
Both sides run the same algorithm on the same batches, in parallel: Python in worker processes
through trio_parallel, Go in goroutines through trio_gotask. The script prints the time of each and
checks that they found the same matches.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio
import trio_parallel

from trio_gotask import open_gotask

SIDECAR = Path(__file__).resolve().parent
BATCH = 10  # queries per call, so that both sides spread the work over every core
QUERIES = 200  # misspelt names to look up, unless the command line says otherwise
CORES = os.cpu_count() or 1  # trio_parallel runs this many processes at once; Go, this many threads

# A customer list: every first name with every last name.
FIRST_NAMES = (
    "Ada Alan Anna Boris Carla Chen David Elena Emil Fatima Grace Hugo Ines Ivan Jamal Julia "
    "Karim Lena Liam Maria Mateo Mei Nadia Noah Olga Omar Priya Rosa Sam Sofia Tomas Yuki"
)
LAST_NAMES = (
    "Abbott Becker Castro Dubois Eriksen Fischer Garcia Hansen Ibrahim Jensen Kowalski Larsen Moreau "
    "Nakamura Novak Okafor Petrov Quinn Rossi Schmidt Silva Tanaka Urban Vargas Weber Xu Yilmaz Zhang"
)


def levenshtein(a: str, b: str) -> int:
    """The number of single-character insertions, deletions and substitutions that turn a into b."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def best(queries: list[str], names: list[str]) -> list[list[int]]:
    """For each query, [index of the closest name, its distance], the first such name on a tie."""
    found = []
    for query in queries:
        match = [-1, -1]
        for i, name in enumerate(names):
            d = levenshtein(query, name)
            if match[0] < 0 or d < match[1]:
                match = [i, d]
        found.append(match)
    return found


def misspell(name: str, rng: random.Random) -> str:
    """name with one or two typos: a letter dropped, doubled or swapped with the next."""
    for _ in range(rng.randint(1, 2)):
        i = rng.randrange(len(name) - 1)
        name = rng.choice(
            [
                name[:i] + name[i + 1 :],
                name[:i] + name[i] + name[i:],
                name[:i] + name[i + 1] + name[i] + name[i + 2 :],
            ]
        )
    return name


async def in_batches(
    queries: list[str], match: Callable[[list[str]], Awaitable[list[list[int]]]]
) -> list[list[int]]:
    """Run match over batches of queries, all at once, and join the results in order."""
    results: list[list[list[int]]] = [[] for _ in range(0, len(queries), BATCH)]

    async def one(k: int) -> None:
        results[k] = await match(queries[k * BATCH : (k + 1) * BATCH])

    async with trio.open_nursery() as nursery:
        for k in range(len(results)):
            nursery.start_soon(one, k)
    return [match for batch in results for match in batch]


async def main(count: int = QUERIES) -> None:
    rng = random.Random(42)
    names = [f"{first} {last}" for first in FIRST_NAMES.split() for last in LAST_NAMES.split()]
    queries = [misspell(rng.choice(names), rng) for _ in range(count)]
    print(f"{count} misspelt names against {len(names)} customers ({count * len(names):,} edit distances)")

    async with open_gotask(SIDECAR) as gt, trio_parallel.open_worker_context() as workers:

        async def in_python(batch: list[str]) -> list[list[int]]:
            result: list[list[int]] = await workers.run_sync(best, batch, names)
            return result

        async def in_go(batch: list[str]) -> list[list[int]]:
            result: list[list[int]] = await gt.call("Fuzzy.Best", {"queries": batch, "names": names})
            return result

        # Start the worker processes before the clock does, as the sidecar already is.
        async with trio.open_nursery() as nursery:
            for _ in range(CORES):
                nursery.start_soon(workers.run_sync, levenshtein, "", "")
        start = time.perf_counter()
        from_python = await in_batches(queries, in_python)
        python_time = time.perf_counter() - start
        start = time.perf_counter()
        from_go = await in_batches(queries, in_go)
        go_time = time.perf_counter() - start

    print(f"{'':40} {'seconds':>8} {'speedup':>8}")
    print(f"{f'Python, {CORES} processes (trio_parallel)':40} {python_time:8.3f} {1:8.1f}x")
    print(f"{'Go, goroutines (trio_gotask)':40} {go_time:8.3f} {python_time / go_time:8.1f}x")
    index, distance = from_go[0]
    print(f"for example, {queries[0]!r} is {names[index]!r} (edit distance {distance})")
    print("the same matches:", from_python == from_go)


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else QUERIES)
