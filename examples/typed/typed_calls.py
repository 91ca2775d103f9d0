"""Typed calls through generated stubs: python examples/typed/typed_calls.py [SIDECAR]

example_api.py, next to this file, is generated from the example sidecar's Go code by
``trio-gotask stubs go/example -o examples/typed/example_api.py``. SIDECAR defaults to the example
Go package in go/example, built on first use.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

import trio
from example_api import AddArgs, Address, App, LineItem, Order

from trio_gotask import open_gotask

EXAMPLE = Path(__file__).resolve().parent.parent.parent / "go" / "example"


async def main(sidecar: str) -> None:
    async with open_gotask(sidecar) as gt:
        app = App(gt)
        print("App.Add:", await app.Add(AddArgs(a=2, b=40)))

        order = Order(
            id=7,
            customer="Ada",
            items=[LineItem(sku="apple", quantity=2, price=0.5), LineItem(sku="fig", quantity=1, price=1.25)],
            ship_to=Address(street="1 Analytical Row", city="London"),
            placed=datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc),
            class_="express",
        )
        receipt = await app.PlaceOrder(order)  # a Receipt, every field checked
        print(f"receipt {receipt.order_id}: total {receipt.total:.2f}, due {receipt.due:%Y-%m-%d %H:%M}")
        for line in receipt.lines:
            print("  " + line)

        async with app.TrackOrder(order) as steps:  # a stream of Shipment
            async for step in steps:
                where = f" in {step.where.city}" if step.where is not None else ""
                print(f"step {step.step}: {step.status} at {step.at:%H:%M}{where}")


if __name__ == "__main__":
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else str(EXAMPLE))
