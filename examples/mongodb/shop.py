"""MongoDB from Trio, through the official Go driver in a sidecar (examples/mongodb/README.md).

    MONGODB_URI=mongodb://localhost:27017 python examples/mongodb/shop.py

50 tasks insert 1000 orders at once (nested maps, lists, datetimes, bytes) and read each back by
its ObjectID; an aggregation and a count summarize them; the largest orders stream in until they
make half the revenue, and leaving the stream there stops the Go side's cursor; a task that waits
for an order to ship is given up on by its timeout, and another sees it ship.
"""

from __future__ import annotations

import os
import sys
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import trio

from trio_gotask import GoTask, ItemStream, open_gotask

HERE = Path(__file__).resolve().parent

Doc = dict[str, Any]


class Collection:
    """One collection, through the sidecar's Mongo service."""

    def __init__(self, gt: GoTask, name: str) -> None:
        self._gt = gt
        self.name = name

    async def insert(self, *docs: Doc) -> list[Any]:
        """Insert documents; their _ids, in order (an ObjectID is ``{"$oid": "..."}``)."""
        ids: list[Any] = await self._gt.call("Mongo.Insert", {"collection": self.name, "documents": docs})
        return ids

    def find(
        self, filter: Doc | None = None, *, sort: Any = (), limit: int = 0, window: int = 1 << 20
    ) -> AbstractAsyncContextManager[ItemStream]:
        """The documents that match ``filter``, as the cursor reads them:
        ``async with orders.find(...) as docs: async for doc in docs: ...``. ``sort`` is pairs,
        ``[("placed", -1)]``. At most ``window`` bytes of documents wait here unread: Go waits
        while they do. Leaving the block early stops Go and closes the cursor."""
        query = {"collection": self.name, "filter": filter, "sort": [list(k) for k in sort], "limit": limit}
        return self._gt.stream("Mongo.Find", query, window=window)

    async def find_one(self, filter: Doc | None = None) -> Doc | None:
        """The first document that matches ``filter``, or None."""
        doc: Doc | None = await self._gt.call("Mongo.FindOne", {"collection": self.name, "filter": filter})
        return doc

    async def aggregate(self, *stages: Doc) -> list[Doc]:
        docs: list[Doc] = await self._gt.call(
            "Mongo.Aggregate", {"collection": self.name, "pipeline": stages}
        )
        return docs

    async def count(self, filter: Doc | None = None) -> int:
        n: int = await self._gt.call("Mongo.Count", {"collection": self.name, "filter": filter})
        return n

    async def update(self, filter: Doc, set: Doc) -> int:
        n: int = await self._gt.call("Mongo.Update", {"collection": self.name, "filter": filter, "set": set})
        return n

    async def wait_for(self, filter: Doc) -> Doc:
        """The first document to match ``filter``, once there is one: put a timeout around it."""
        doc: Doc = await self._gt.call("Mongo.WaitFor", {"collection": self.name, "filter": filter})
        return doc

    async def drop(self) -> None:
        await self._gt.call("Mongo.Drop", self.name)


def order(i: int) -> Doc:
    placed = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=37 * i)
    items: list[Doc] = [
        {"sku": f"SKU-{(i * 7 + k) % 40:03d}", "qty": k + 1, "price": 2.5 * (k + 1)} for k in range(i % 3 + 1)
    ]
    return {
        "number": i,
        "customer": {
            "name": f"customer {i % 60}",
            "address": {"city": ["Oslo", "Lyon", "Porto", "Turin"][i % 4]},
        },
        "items": items,
        "total": sum(item["qty"] * item["price"] for item in items),
        "status": ["new", "paid", "shipped"][i % 3],
        "placed": placed,
        "receipt": i.to_bytes(4, "big") + b"\x00\xff",
    }


async def main() -> None:
    async with open_gotask(HERE) as gt:
        orders = Collection(gt, "orders")
        await orders.drop()

        sent = [order(i) for i in range(1000)]
        ids: dict[int, Any] = {}
        read: dict[int, Doc] = {}

        async def insert(batch: list[Doc]) -> None:
            for doc, oid in zip(batch, await orders.insert(*batch), strict=True):
                ids[doc["number"]] = oid

        async def read_back(numbers: range) -> None:
            for n in numbers:
                found = await orders.find_one({"_id": ids[n]})
                assert found is not None
                read[n] = found

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for caller in range(50):
                nursery.start_soon(insert, sent[caller * 20 : caller * 20 + 20])
        async with trio.open_nursery() as nursery:
            for caller in range(50):
                nursery.start_soon(read_back, range(caller * 20, caller * 20 + 20))
        differences = sum(read[doc["number"]] != {**doc, "_id": ids[doc["number"]]} for doc in sent)
        seconds = trio.current_time() - start
        print(f"50 callers inserted 1000 orders and read each back by _id: {differences} differences")
        print(
            f"  (in {seconds:.2f} s; an ObjectID arrives as {{'$oid': ...}}, a datetime aware, bytes as bytes)"
        )

        # One accumulator per $group: FerretDB 1.24 computes only the first (MongoDB, all of them).
        revenue = await orders.aggregate(
            {"$group": {"_id": "$status", "revenue": {"$sum": "$total"}}}, {"$sort": {"_id": 1}}
        )
        print("revenue by status: " + ", ".join(f"{row['_id']} {row['revenue']:.2f} EUR" for row in revenue))
        big = await orders.count({"total": {"$gte": 30}, "customer.address.city": "Lyon"})
        print(f"orders of 30 EUR or more to Lyon: {big}")

        # The largest orders first, until they make half the revenue: how many that takes shows only
        # on the way. Leaving the stream there cancels the Go method, which stops reading the cursor;
        # with a small window, Go sends only a few documents more than this loop takes.
        half = sum(row["revenue"] for row in revenue) / 2
        largest, running = 0, 0.0
        async with orders.find(sort=[("total", -1)], window=16 << 10) as by_total:
            async for doc in by_total:
                largest += 1
                running += doc["total"]
                if running >= half:
                    break
        print(f"half the revenue comes from the {largest} largest of {len(sent)} orders")

        async with orders.find({"status": "new"}, sort=[("placed", -1)], limit=1) as newest:
            latest = await newest.receive()
        print(f"latest new order: #{latest['number']}, placed {latest['placed']:%Y-%m-%d %H:%M %Z}")

        # Waiting is cancellable: the timeout cancels the Go method's context, and it stops asking.
        wanted = {"number": latest["number"], "status": "shipped"}
        with trio.move_on_after(0.5) as waited:
            await orders.wait_for(wanted)
        print(f"waiting for #{latest['number']} to ship was given up on: {waited.cancelled_caught}")

        async def ship() -> None:
            await orders.update({"number": latest["number"]}, {"status": "shipped"})

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ship)
            shipped = await orders.wait_for(wanted)
        print(f"and once shipped, a waiter sees it: #{shipped['number']} is {shipped['status']}")


if __name__ == "__main__":
    if "MONGODB_URI" not in os.environ:
        print(
            "set MONGODB_URI (e.g. mongodb://localhost:27017); see examples/mongodb/README.md",
            file=sys.stderr,
        )
    trio.run(main)
