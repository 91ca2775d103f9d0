"""GoTask's classic example through trio_gotask: python examples/hello.py [SIDECAR]

SIDECAR defaults to the example Go package in go/example, built on first use.
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

from trio_gotask import RemoteError, open_gotask

EXAMPLE = Path(__file__).resolve().parent.parent / "go" / "example"


async def main(sidecar: str) -> None:
    async with open_gotask(sidecar) as gt:
        print("App.Hi:", await gt.call("App.Hi", "Reasno"))

        app = gt.service("App")
        print("App.Add:", await app.Add({"a": 2, "b": 40}))
        print("App.Bytes:", await app.Bytes(b"\x00\x01\x02"))

        with trio.move_on_after(0.2) as scope:
            await app.Slow(3_600_000)  # an hour of work, given up after 0.2 s
        print("App.Slow cancelled after 0.2 s:", scope.cancelled_caught)

        try:
            await app.Fail("no such user")
        except RemoteError as exc:
            print("App.Fail raised:", repr(exc))


if __name__ == "__main__":
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else str(EXAMPLE))
