"""A stream's consumer side: `ItemStream`, the Trio receive channel `GoTask.stream` gives
(docs/streams.md; the wire is docs/protocol.md, section 2, "Streams")."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, Protocol, final

import trio

from ._errors import remote_error
from ._protocol import StreamCall

DEFAULT_WINDOW: Final = 1 << 20
"""The credit a stream opens with, in bytes of items: what the client holds at most (plus one
item) when its consumer falls behind."""

_YIELD_EVERY: Final = 16
"""`ItemStream.receive` yields to other tasks at least once in this many items."""


class Source(Protocol):
    """Where an `ItemStream`'s items come from: its `Connection`."""

    def credit_queued(self) -> None:
        """Taking an item queued a ``$credit``: have it written."""

    async def wait_items(self, stream: StreamCall) -> None: ...

    def close_stream(self, stream: StreamCall) -> None: ...


@final
class ItemStream(trio.abc.ReceiveChannel[Any]):
    """The items of one stream, in the order the Go method sent them: a Trio receive channel.

    `receive` returns the next item, waiting for it; once the Go method has returned, it raises
    `trio.EndOfChannel`, or, if the method failed, the method's error (a `RemoteError`) after the
    items sent before it, and `trio.EndOfChannel` after that. ``async for item in stream`` does
    the same and ends at the end. If the sidecar or its connection is lost, the items that had
    arrived come first, then the `SidecarError` (or `ProtocolError`).

    Closing it (`aclose`, or leaving the ``async with`` of `GoTask.stream`) before the end cancels
    the Go method's context at once; cancelling a `receive` alone does not (as with any Trio
    channel): the stream stays open and the next `receive` goes on from where it was.

    Every `receive` is a cancel point; when items are waiting it yields to other tasks only
    once in 16 items (a stream of small items would otherwise spend most of its time in the
    scheduler), and always when it waits. One task at a time may receive.
    """

    def __init__(self, connection: Source, stream: StreamCall, take: Callable[[StreamCall], Any]) -> None:
        self._connection = connection
        self._stream = stream
        self._take = take
        """`ClientProtocol.take_item`, called on every item."""
        self._closed = False
        self._finished = False
        self._released = False
        self._since_yield = 0
        self._on_end: Callable[[BaseException | None], None] | None = None
        """Told once how the stream ended: its error, or ``None`` (`on_end`)."""

    def on_end(self, callback: Callable[[BaseException | None], None]) -> None:
        """Have ``callback`` told, once, how the stream ended: with the error `receive` raised
        for it, or ``None`` when it ended without one or was closed before its end (what
        tracing uses to end a stream's span)."""
        self._on_end = callback

    def _ended(self, error: BaseException | None) -> None:
        callback, self._on_end = self._on_end, None
        if callback is not None:
            callback(error)

    @property
    def method(self) -> str:
        """The Go method this stream runs, ``"Service.Method"``."""
        return self._stream.method

    @trio.lowlevel.enable_ki_protection
    async def receive(self) -> Any:
        """The next item, waiting for it if none has arrived; `trio.EndOfChannel` at the end, or
        the error that ended the stream (once, then `trio.EndOfChannel`). Raises
        `trio.ClosedResourceError` once the stream is closed, and `trio.BusyResourceError` while
        another task receives."""
        await trio.lowlevel.checkpoint_if_cancelled()
        stream = self._stream
        if stream.items and self._since_yield < _YIELD_EVERY - 1 and not self._closed:
            self._since_yield += 1
            return self._take_first(stream)
        return await self._receive()

    @trio.lowlevel.enable_ki_protection
    async def __anext__(self) -> Any:
        # receive's body again, rather than trio's __anext__ around it: a coroutine less per item.
        await trio.lowlevel.checkpoint_if_cancelled()
        stream = self._stream
        if stream.items and self._since_yield < _YIELD_EVERY - 1 and not self._closed:
            self._since_yield += 1
            return self._take_first(stream)
        try:
            return await self._receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def _take_first(self, stream: StreamCall) -> Any:
        item = self._take(stream)
        if not stream.taken:  # reset: this take granted credit (an item is never 0 bytes)
            self._connection.credit_queued()
        return item

    async def _receive(self) -> Any:
        """`receive` past its fast path: yield to other tasks now and then, wait, or end."""
        stream = self._stream
        while True:
            if self._closed:
                raise trio.ClosedResourceError("the stream was closed")
            if stream.items:
                self._since_yield += 1
                if self._since_yield < _YIELD_EVERY:
                    return self._take_first(stream)
                self._since_yield = 0
                await trio.lowlevel.cancel_shielded_checkpoint()
                continue  # another task may have closed it meanwhile
            if self._finished:
                raise trio.EndOfChannel
            if stream.ended or stream.failure is not None:
                await self._finish()
            if stream.waiter is not None:
                raise trio.BusyResourceError("another task is receiving from this stream")
            await self._connection.wait_items(stream)
            self._since_yield = 0

    async def _finish(self) -> None:
        """The stream ended and every item was taken: raise its error, or `trio.EndOfChannel`."""
        self._finished = True
        stream = self._stream
        self._release()
        failure = stream.failure
        if failure is not None:
            stream.failure = None  # raised once; then EndOfChannel
            self._ended(failure)
            await trio.lowlevel.cancel_shielded_checkpoint()
            raise failure
        error = stream.error
        if error is None:
            self._ended(None)
            await trio.lowlevel.cancel_shielded_checkpoint()
            raise trio.EndOfChannel
        if error.get("type") == "deadline_exceeded":
            # As for a call: the caller's own scope, with the same deadline, may win the race.
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
        exc = remote_error(stream.method, error)
        self._ended(exc)
        raise exc

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._connection.close_stream(self._stream)

    def close(self) -> None:
        """Close the stream now, without a checkpoint: see `aclose`."""
        if self._closed:
            return
        self._closed = True
        self._release()
        self._ended(None)
        wake(self._stream)  # a receive in another task: it gets ClosedResourceError

    async def aclose(self) -> None:
        """Close the stream: if the Go method is still running, its context is cancelled, and
        the items that were on their way are dropped. Idempotent."""
        self.close()
        await trio.lowlevel.checkpoint()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "finished" if self._finished else "open"
        return f"<ItemStream {self._stream.method} {state}>"


def wake(stream: StreamCall) -> None:
    """Wake the task waiting in ``stream``'s `ItemStream.receive`, if one is: it looks again."""
    waiter = stream.waiter
    if waiter is not None:
        stream.waiter = None
        trio.lowlevel.reschedule(waiter)


@final
class StreamOpening:
    """What `GoTask.stream` returns: ``async with`` it to open the stream and get its
    `ItemStream`, closed when the block ends."""

    __slots__ = ("_arg", "_method", "_open", "_stream", "_window")

    def __init__(self, open_stream: Any, method: str, arg: Any, window: int) -> None:
        self._open = open_stream
        self._method = method
        self._arg = arg
        self._window = window
        self._stream: ItemStream | None = None

    async def __aenter__(self) -> ItemStream:
        if self._stream is not None:
            raise RuntimeError("this stream was opened already: call GoTask.stream again for another")
        self._stream = await self._open(self._method, self._arg, self._window)
        return self._stream

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._stream is not None
        await self._stream.aclose()


def check_window(window: object) -> int:
    """``window`` as a stream's credit, or `TypeError` / `ValueError` saying why not."""
    if type(window) is not int:
        raise TypeError(f"window must be an int, a number of bytes, not {type(window).__name__}")
    if not 1 <= window < 2**63:
        raise ValueError(f"window must be at least 1 byte (and below 2**63), not {window}")
    return window
