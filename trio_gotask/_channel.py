"""Channels: the stream a `Connection` moves its bytes through, one writer and one reader."""

from __future__ import annotations

import abc
import contextlib
import fcntl
import os
from collections.abc import Callable
from typing import Final, final

import trio

PIPE_BUFFER_SIZE: Final = 256 * 1024


def enlarge_pipe(stream: trio.lowlevel.FdStream) -> None:
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
    if set_size is not None:
        with contextlib.suppress(OSError):  # over the user's pipe quota: only a speed-up
            fcntl.fcntl(stream.fileno(), set_size, PIPE_BUFFER_SIZE)


class Channel(abc.ABC):
    """A stream as a `Connection` uses it: one task writes whole chunks with `send_all`, and one
    task at a time reads. `send_now` lets a caller write without waking the writer when it is
    idle.

    Two implementations, which read differently: `FdChannel` reads and writes the descriptors of
    a socket or a pair of pipes directly, which pays on every call (docs/performance.md, "The
    descriptor fast path"), and lets the `Connection` choose when to wait and when to read;
    `StreamChannel` works with any `trio.abc.Stream` (TLS, memory streams in tests).
    """

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream: Final = stream

    @abc.abstractmethod
    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of ``data``; a checkpoint."""

    @abc.abstractmethod
    def send_now(self, data: bytes | bytearray | memoryview) -> int:
        """Write what can be written of ``data`` without blocking, and return how much; 0 when
        nothing can (an error included: `send_all` meets it and says so)."""

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


def open_channel(stream: trio.abc.Stream) -> Channel:
    """The fastest `Channel` over ``stream``."""
    if isinstance(stream, trio.SocketStream):
        fileno = stream.socket.fileno
        return FdChannel(stream, fileno, fileno)
    if (
        isinstance(stream, trio.StapledStream)
        and isinstance(stream.receive_stream, trio.lowlevel.FdStream)
        and isinstance(stream.send_stream, trio.lowlevel.FdStream)
    ):
        return FdChannel(stream, stream.receive_stream.fileno, stream.send_stream.fileno)
    return StreamChannel(stream)


@final
class StreamChannel(Channel):
    """A `Channel` over any Trio stream."""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    def send_now(self, data: bytes | bytearray | memoryview) -> int:
        return 0

    async def receive_some(self, max_bytes: int) -> bytes | bytearray:
        """Read up to ``max_bytes``; ``b""`` at the end of the stream."""
        return await self.stream.receive_some(max_bytes)

    async def receive_into(self, buffer: memoryview) -> int:
        """Read into the start of ``buffer``; return the byte count, 0 at the end of the stream."""
        data = await self.stream.receive_some(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@final
class FdChannel(Channel):
    """A `Channel` that reads and writes non-blocking descriptors itself.

    Reading is in two steps, waiting (`wait_readable`) and reading what is there (`read_now`,
    or `read_into_now` straight into a large frame's own buffer), so that the `Connection`
    decides which to do when, and in which task. Descriptors are looked up on every use: once
    the stream is closed the number is -1 and I/O fails, rather than reaching a file that has
    since reused the number.
    """

    def __init__(
        self, stream: trio.abc.Stream, read_fd: Callable[[], int], write_fd: Callable[[], int]
    ) -> None:
        super().__init__(stream)
        self._read_fd = read_fd
        self._write_fd = write_fd

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        with memoryview(data) as view:
            sent = 0
            while sent < len(view):
                try:
                    sent += os.write(self._write_fd(), view[sent:])
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(self._write_fd())
        await trio.lowlevel.cancel_shielded_checkpoint()

    def send_now(self, data: bytes | bytearray | memoryview) -> int:
        try:
            return os.write(self._write_fd(), data)
        except OSError:
            return 0

    def read_fileno(self) -> int:
        """The descriptor it reads (-1 once closed)."""
        return self._read_fd()

    async def wait_readable(self) -> None:
        """Wait until the read descriptor has bytes (or its end) to read."""
        await trio.lowlevel.wait_readable(self._read_fd())

    def read_now(self, max_bytes: int) -> bytes | None:
        """Read up to ``max_bytes`` without waiting: ``None`` when there is nothing yet, ``b""``
        at the end of the stream."""
        try:
            return os.read(self._read_fd(), max_bytes)
        except BlockingIOError:
            return None

    def read_into_now(self, buffer: memoryview) -> int | None:
        """Read into the start of ``buffer`` without waiting: the byte count, 0 at the end of the
        stream, ``None`` when there is nothing yet."""
        try:
            return os.readv(self._read_fd(), [buffer])
        except BlockingIOError:
            return None


class PeerClosed(Exception):
    def __str__(self) -> str:
        return "the sidecar closed the connection"
