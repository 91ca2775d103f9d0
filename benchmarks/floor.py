"""The floor: the least work a Trio program can do to get a reply from the Go sidecar.

One connection, request frames encoded once in advance, reply frames split by their length prefix
and never decoded, no msgids matched, no cancellation, no errors handled. No library can beat this
from Trio; trio_gotask is measured against it.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgpack
import trio


def request_frame(method: str, arg: object) -> bytes:
    body: bytes = msgpack.packb([0, 1, method, arg, None], use_bin_type=True)
    return struct.pack(">I", len(body)) + body


@asynccontextmanager
async def floor_sidecar(sidecar: str, path: str) -> AsyncIterator[str]:
    """Run ``sidecar`` by hand on the Unix socket ``path``, with no secret (trio_gotask sets one
    for the sidecars it starts, which only it knows); yield the address once it hands shake."""
    async with standalone_sidecar(sidecar, path) as (address, _):
        yield address


@asynccontextmanager
async def standalone_sidecar(sidecar: str, address: str) -> AsyncIterator[tuple[str, int]]:
    """Run ``sidecar -standalone -address ADDRESS`` with no secret; yield the address it
    announced (the real port, for port 0) and its pid once it hands shake. Stopped with SIGTERM."""
    env = {k: v for k, v in os.environ.items() if k != "GOTASK_SECRET"}
    process = await trio.lowlevel.open_process(
        [sidecar, "-standalone", "-address", address], stdout=subprocess.PIPE, env=env
    )
    assert process.stdout is not None
    try:
        line = b""
        with trio.fail_after(10):
            while not line.endswith(b"\n"):
                line += await process.stdout.receive_some(1)
        yield line.decode().strip().split("|")[3], process.pid
    finally:
        process.terminate()
        with trio.CancelScope(shield=True):
            await process.wait()
            await process.stdout.aclose()


class Floor:
    """`call_direct` sends and reads in the caller (one caller at a time); `call` shares the
    connection between many callers through one batching writer task and one reader task."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._outgoing: list[bytes] = []
        self._wake_writer = trio.Event()
        self._waiters: deque[trio.lowlevel.Task] = deque()

    async def skip_hello(self) -> None:
        """Read past the sidecar's $hello, the first frame of every connection."""
        while self._frames_ready() == 0:
            self._buffer += await self._stream.receive_some(65536)
        self._consume(1)

    async def call_direct(self, frame: bytes) -> None:
        await self._stream.send_all(frame)
        while self._frames_ready() == 0:
            self._buffer += await self._stream.receive_some(65536)
        self._consume(1)

    def _frames_ready(self) -> int:
        count, pos, buf = 0, 0, self._buffer
        while len(buf) - pos >= 4:
            (length,) = struct.unpack_from(">I", buf, pos)
            if len(buf) - pos - 4 < length:
                break
            pos += 4 + length
            count += 1
        return count

    def _consume(self, frames: int) -> None:
        pos = 0
        for _ in range(frames):
            (length,) = struct.unpack_from(">I", self._buffer, pos)
            pos += 4 + length
        del self._buffer[:pos]

    async def call(self, frame: bytes) -> None:
        self._outgoing.append(frame)
        self._wake_writer.set()
        self._waiters.append(trio.lowlevel.current_task())
        await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write_loop)
            nursery.start_soon(self._read_loop)
            task_status.started()

    async def _write_loop(self) -> None:
        while True:
            await self._wake_writer.wait()
            self._wake_writer = trio.Event()
            batch, self._outgoing = self._outgoing, []
            await self._stream.send_all(b"".join(batch))

    async def _read_loop(self) -> None:
        while data := await self._stream.receive_some(65536):
            self._buffer += data
            ready = self._frames_ready()
            if ready:
                self._consume(ready)
                for _ in range(ready):
                    trio.lowlevel.reschedule(self._waiters.popleft())


class BlockingEcho:
    """No Trio at all: a blocking socket that sends a pre-encoded frame and reads the reply into
    a buffer allocated once, without decoding it. What this machine can move through the sidecar
    from Python, as a ceiling for the payload sweep; it blocks the event loop while it runs."""

    def __init__(self, path: str) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(path)
        self._buffer = bytearray(64 * 1024)
        self._receive_frame()  # the sidecar's $hello

    def call(self, frame: bytes) -> None:
        self._sock.sendall(frame)
        self._receive_frame()

    def _receive_frame(self) -> None:
        (length,) = struct.unpack(">I", self._sock.recv(4, socket.MSG_WAITALL))
        if len(self._buffer) < length:
            self._buffer = bytearray(length)
        with memoryview(self._buffer) as view:
            got = 0
            while got < length:
                got += self._sock.recv_into(view[got:length])

    def close(self) -> None:
        self._sock.close()
