"""Go calls Python: python examples/host_calls/orders.py

The Go sidecar in this folder totals orders. It asks this program for each price (a host call,
`gotask.CallHost`), reads the currency from the configuration given to `open_gotask`
(`gotask.Config`), and logs through `log/slog` into Python's `logging`. The folder is built with
`go build` on first use.
"""

from __future__ import annotations

import logging
from pathlib import Path

import trio

from trio_gotask import RemoteError, open_gotask

SIDECAR = Path(__file__).resolve().parent


class Prices:
    """What the Python application knows and Go does not."""

    def __init__(self, table: dict[str, float]) -> None:
        self.table = table

    def lookup(self, item: str) -> float:
        return self.table[item]  # an unknown item raises KeyError, which Go receives


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s: %(message)s")
    prices = Prices({"apple": 0.5, "pear": 0.75, "fig": 1.25})
    async with open_gotask(SIDECAR, config={"currency": "EUR"}) as gt:
        gt.register("Prices.Lookup", prices.lookup)
        total = await gt.call("Orders.Total", ["apple", "pear", "fig"])
        print(f"total: {total:.2f} EUR")
        try:
            await gt.call("Orders.Total", ["apple", "durian"])
        except RemoteError as exc:
            print(f"refused: {exc}")


if __name__ == "__main__":
    trio.run(main)
