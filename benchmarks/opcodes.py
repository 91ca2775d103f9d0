"""Python bytecodes executed per call: trio_gotask against the floor, with no Go and no I/O.

Timings on a shared machine drift by 2x between runs; a count of bytecodes does not. Both clients
talk to an in-process peer that answers every request at once, with 64 callers at a time, and
every bytecode executed (the client's, Trio's and the peer's) is counted by function:

    python benchmarks/opcodes.py [--callers 64] [--top 25]

A bytecode is not a fixed cost (a call into msgpack is one bytecode), so this ranks where the
Python work of a call goes; `bench.py` measures what it costs.
"""

from __future__ import annotations

import argparse
import struct
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

import msgpack
import trio
from floor import Floor, request_frame

from trio_gotask._client import GoTask
from trio_gotask._errors import lost_without_explanation
from trio_gotask._opening import Opened
from trio_gotask._pool import Pool
from trio_gotask._settings import Limits, PoolSettings
from trio_gotask._wire import PROTOCOL_VERSION, Hello

_HEADER = struct.Struct(">I")


class InstantPeer(trio.abc.Stream):
    """A stream whose other end echoes each request's argument back at once."""

    def __init__(self) -> None:
        self._replies = bytearray()
        self._arrived = trio.Event()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            (length,) = _HEADER.unpack_from(view, pos)
            request = msgpack.unpackb(view[pos + 4 : pos + 4 + length])
            reply = msgpack.packb([1, request[1], None, request[3]])
            self._replies += _HEADER.pack(len(reply)) + reply
            pos += 4 + length
        self._arrived.set()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        while not self._replies:
            await self._arrived.wait()
            self._arrived = trio.Event()
        await trio.lowlevel.cancel_shielded_checkpoint()
        data = bytes(self._replies)
        self._replies.clear()
        return data

    async def send_eof(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def run_calls(call: Callable[[], Awaitable[object]], calls: int, callers: int) -> None:
    async def caller() -> None:
        for _ in range(calls // callers):
            await call()

    async with trio.open_nursery() as nursery:
        for _ in range(callers):
            nursery.start_soon(caller)


def count_bytecodes(counts: Counter[str]) -> Callable[[FrameType, str, Any], Any]:
    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            counts[f"{code.co_filename.rsplit('/', 1)[-1]}:{code.co_name}"] += 1
        return trace

    return trace


async def main(callers: int, top: int) -> None:
    calls = 100 * callers
    async with trio.open_nursery() as nursery:

        async def connect() -> Opened:
            return Opened(InstantPeer(), Hello(PROTOCOL_VERSION, 1 << 26, 1 << 16), b"")

        pool = Pool(
            nursery,
            connect,
            PoolSettings(1, Limits(1 << 26, 1 << 16), keepalive_timeout=None),
            explain=lost_without_explanation,
        )
        await pool.warm_up()
        pool.address = "in-process"
        gotask = GoTask(pool)
        floor = Floor(InstantPeer())
        nursery.start_soon(floor.run)
        frame = request_frame("App.Echo", 1)
        variants: dict[str, Callable[[], Awaitable[object]]] = {
            "floor": lambda: floor.call(frame),
            "trio_gotask": lambda: gotask.call("App.Echo", 1),
        }
        for name, call in variants.items():
            await run_calls(call, calls // 10, callers)  # warm up
            counts: Counter[str] = Counter()
            sys.settrace(count_bytecodes(counts))
            await run_calls(call, calls, callers)
            sys.settrace(None)
            print(f"\n{name}: {sum(counts.values()) / calls:.0f} bytecodes a call ({callers} callers)\n")
            print("| bytecodes a call | function |\n|---:|---|")
            for function, count in counts.most_common(top):
                print(f"| {count / calls:.1f} | `{function}` |")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--top", type=int, default=25)
    options = parser.parse_args()
    trio.run(main, options.callers, options.top)
