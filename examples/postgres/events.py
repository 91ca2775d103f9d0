"""A blocking database driver kept off the Trio loop: python examples/postgres/events.py

The Go sidecar in this folder queries PostgreSQL through pgx. Trio keeps running while the queries
run in Go (a ticker proves it), runs many of them at once, and cancels a slow one with a timeout:
the Go handler's context is cancelled, and pgx asks PostgreSQL to stop the query.

It needs a PostgreSQL server it may create a table in: set DATABASE_URL
(postgres://user:password@localhost:5432/dbname) or libpq's PGHOST, PGUSER, PGDATABASE...
"""

from __future__ import annotations

import logging
from pathlib import Path

import trio

from trio_gotask import GoTask, open_gotask

SIDECAR = Path(__file__).resolve().parent
TIMEOUT = 0.5  # seconds of PostgreSQL's time for the report, which would take a minute


class Ticker:
    """Ticks every 10 ms for as long as the Trio loop is free to run it."""

    def __init__(self) -> None:
        self.ticks = 0

    async def run(self) -> None:
        while True:
            await trio.sleep(0.01)
            self.ticks += 1


async def recent(gt: GoTask, user: int, found: dict[int, list[dict[str, object]]]) -> None:
    found[user] = await gt.call("DB.Recent", user)


async def report(gt: GoTask, seconds: float) -> list[dict[str, object]] | None:
    """The busiest users (DB.Report), or None if PostgreSQL takes more than ``seconds`` over them.

    The timeout counts from when the server starts running the query, as DB.ReportRunning tells:
    time spent waiting for a free connection, or on a busy machine, does not use it up. Once
    cancelled, it returns when the server has stopped the query.
    """
    with trio.CancelScope() as timeout:
        async with trio.open_nursery() as nursery:

            async def start_the_clock() -> None:
                await gt.call("DB.ReportRunning", True)
                timeout.deadline = trio.current_time() + seconds

            nursery.start_soon(start_the_clock)
            busiest: list[dict[str, object]] = await gt.call("DB.Report")
            nursery.cancel_scope.cancel()
            return busiest
    await gt.call("DB.ReportRunning", False)
    return None


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s: %(message)s")
    async with open_gotask(SIDECAR) as gt, trio.open_nursery() as nursery:
        ticker = Ticker()
        nursery.start_soon(ticker.run)

        loaded = await gt.call("DB.Seed", 100_000)
        print(f"loaded {loaded} events with COPY")

        found: dict[int, list[dict[str, object]]] = {}
        start = trio.current_time()
        async with trio.open_nursery() as queries:  # 50 queries at once, over pgx's pool
            for user in range(1, 51):
                queries.start_soon(recent, gt, user, found)
        latest = found[7][0]
        print(f"50 queries at once in {trio.current_time() - start:.2f} s; the latest event of user 7:")
        print(f"  #{latest['id']} {latest['kind']} at {latest['at']:%Y-%m-%d %H:%M} UTC")

        ticks = ticker.ticks
        busiest = await report(gt, TIMEOUT)
        if busiest is None:
            print(f"the report was cancelled by its {TIMEOUT} s timeout, and PostgreSQL stopped it")
        else:
            print(f"the report finished: user {busiest[0]['user']} is the busiest")
        print(f"the ticker ticked {ticker.ticks - ticks} times meanwhile: the Trio loop never blocked")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
