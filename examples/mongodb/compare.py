"""What a Trio program's ways to MongoDB cost, side by side: pymongo in worker threads
(`trio.to_thread.run_sync`, the way a Trio program runs a blocking driver) against the Go driver in
this example's sidecar. Prints a Markdown table (examples/mongodb/README.md shows one).

    python -m pip install pymongo
    MONGODB_URI=mongodb://localhost:27017 python examples/mongodb/compare.py [--rounds 3]

Motor and pymongo's AsyncMongoClient run on asyncio only, so a Trio program cannot use them.
Each measure runs once per round for each way, the ways alternating; the table has the medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from pymongo import MongoClient
from shop import Collection, order

from trio_gotask import open_gotask

HERE = Path(__file__).resolve().parent
CALLERS = 50
READS = 2000


class Threads:
    """pymongo's blocking calls, each in a Trio worker thread (40 at most, Trio's default)."""

    def __init__(self, uri: str) -> None:
        self._collection: Any = MongoClient(uri, maxPoolSize=CALLERS)["gotask_example"]["compare"]

    async def insert(self, *docs: dict[str, Any]) -> list[Any]:
        result = await trio.to_thread.run_sync(self._collection.insert_many, list(docs))
        return list(result.inserted_ids)

    async def find_one(self, key: Any) -> Any:
        return await trio.to_thread.run_sync(self._collection.find_one, {"_id": key})

    async def drop(self) -> None:
        await trio.to_thread.run_sync(self._collection.drop)


class Sidecar:
    """The sidecar's Mongo service, through the shop example's Collection."""

    def __init__(self, collection: Collection) -> None:
        self._collection = collection

    async def insert(self, *docs: dict[str, Any]) -> list[Any]:
        return await self._collection.insert(*docs)

    async def find_one(self, key: Any) -> Any:
        return await self._collection.find_one({"_id": key})

    async def drop(self) -> None:
        await self._collection.drop()


Way = Threads | Sidecar


async def measure(way: Way) -> dict[str, float]:
    """Seconds per insert of 20, per sequential read, and reads per second with 50 callers."""
    await way.drop()
    docs = [order(i) for i in range(1000)]
    keys: list[Any] = []
    started = trio.current_time()
    for i in range(0, 1000, 20):
        keys += await way.insert(*docs[i : i + 20])
    insert = (trio.current_time() - started) / 50

    started = trio.current_time()
    for key in keys[:300]:
        await way.find_one(key)
    sequential = (trio.current_time() - started) / 300

    async def reader(offset: int) -> None:
        for i in range(READS // CALLERS):
            await way.find_one(keys[(offset + i * CALLERS) % len(keys)])

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for caller in range(CALLERS):
            nursery.start_soon(reader, caller)
    return {"insert": insert, "sequential": sequential, "concurrent": READS / (trio.current_time() - started)}


async def main(rounds: int) -> None:
    results: dict[str, list[dict[str, float]]] = {"pymongo in threads": [], "trio-gotask sidecar": []}
    threads = Threads(os.environ["MONGODB_URI"])
    async with open_gotask(HERE) as gt:
        sidecar = Sidecar(Collection(gt, "compare"))
        ways: list[tuple[str, Callable[[], Awaitable[dict[str, float]]]]] = [
            ("pymongo in threads", lambda: measure(threads)),
            ("trio-gotask sidecar", lambda: measure(sidecar)),
        ]
        for _ in range(rounds):
            for name, run in ways:
                results[name].append(await run())
        await sidecar.drop()
    print(
        f"{rounds} rounds, medians; documents as in shop.py; {CALLERS} callers at once read {READS} by _id\n"
    )
    print("| way | insert 20 documents | read one by _id | reads/s, 50 callers |")
    print("|---|---:|---:|---:|")
    for name, runs in results.items():
        insert = statistics.median(r["insert"] for r in runs) * 1e3
        sequential = statistics.median(r["sequential"] for r in runs) * 1e6
        concurrent = statistics.median(r["concurrent"] for r in runs)
        print(f"| {name} | {insert:.1f} ms | {sequential:.0f} µs | {concurrent:,.0f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    if "MONGODB_URI" not in os.environ:
        sys.exit("set MONGODB_URI, e.g. mongodb://localhost:27017")
    trio.run(main, options.rounds)
