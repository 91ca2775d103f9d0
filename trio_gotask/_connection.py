"""One multiplexed connection to a sidecar: a writer task, a reader task, calls matched by msgid."""

from __future__ import annotations

import math
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, final

import outcome
import trio

from ._errors import GoTaskError, ProtocolError, RemoteError, SidecarError, remote_error
from ._protocol import (
    HELLO,
    MAX_MSGID,
    REFUSED,
    Decoder,
    Encoder,
    Hello,
    Notification,
    Response,
    frame_header,
    parse_hello,
)

ErrorFactory = Callable[[], GoTaskError]
"""Makes a fresh exception for each failed caller (one exception object must not be raised twice)."""

Explain = Callable[[BaseException], Awaitable[ErrorFactory]]
"""Turns the reason a connection was lost into the error its callers see."""

# Payloads at least this big are sent on their own, not copied into a batch.
_BIG: Final = 64 * 1024
_MIN_READ: Final = 64 * 1024
_MAX_READ: Final = 4 * 1024 * 1024


def error_factory(
    cls: type[GoTaskError], *args: Any, cause: BaseException | None = None, **kw: Any
) -> ErrorFactory:
    def make() -> GoTaskError:
        exc = cls(*args, **kw)
        exc.__cause__ = cause
        return exc

    return make


async def lost_without_explanation(cause: BaseException) -> ErrorFactory:
    if isinstance(cause, ProtocolError):
        return error_factory(ProtocolError, cause.code, str(cause), cause=cause)
    return error_factory(SidecarError, f"lost the connection to the sidecar: {cause}", cause=cause)


def _descriptors(stream: trio.abc.Stream) -> tuple[Callable[[], int], Callable[[], int]] | None:
    """Getters of the stream's (read, write) file descriptors, where it has them: a socket, or a
    pair of pipes.

    A descriptor is looked up on every use: once the stream is closed it is -1 and I/O on it
    fails, rather than reaching a file that has since reused the number.
    """
    if isinstance(stream, trio.SocketStream):
        fileno = stream.socket.fileno
        return fileno, fileno
    if (
        isinstance(stream, trio.StapledStream)
        and isinstance(stream.receive_stream, trio.lowlevel.FdStream)
        and isinstance(stream.send_stream, trio.lowlevel.FdStream)
    ):
        return stream.receive_stream.fileno, stream.send_stream.fileno
    return None


class Refused(Exception):
    """The sidecar turned the connection away (a ``$refused`` notification): ``str()`` is why."""


class PeerClosed(Exception):
    def __str__(self) -> str:
        return "the sidecar closed the connection"


@dataclass(frozen=True)
class Opened:
    """A stream to the sidecar after the greeting, ready for a `Connection`."""

    stream: trio.abc.Stream
    hello: Hello
    initial_data: bytes
    """Bytes that arrived after the sidecar's ``$hello``."""


async def greet(
    stream: trio.abc.Stream, *, max_frame_size: int, secret: str | None, initial_data: bytes = b""
) -> Opened:
    """Open the protocol on a fresh ``stream``: present ``secret`` (if any) and the client's
    ``$hello``, then read up to the sidecar's ``$hello``.

    Raises `Refused` when the sidecar says why it turns the connection away, `PeerClosed` when it
    closes the stream first, and `ProtocolError` when it sends anything else. The stream is not
    shared yet, so a cancelled greeting leaves nothing to clean up but the stream itself.
    """
    encoder = Encoder()
    out = b""
    if secret is not None:
        auth = encoder.auth(secret)
        out += frame_header(len(auth)) + auth
    hello = encoder.hello(max_frame_size)
    await stream.send_all(out + frame_header(len(hello)) + hello)
    decoder = Decoder(max_frame_size)
    decoder.receive_data(initial_data)
    while True:
        message = decoder.next_message()
        if message is None:
            data = await stream.receive_some(_MIN_READ)
            if not data:
                raise PeerClosed
            decoder.receive_data(data)
            continue
        if type(message) is Notification and message.method == HELLO:
            return Opened(stream, parse_hello(message.params), decoder.unconsumed())
        if type(message) is Notification and message.method == REFUSED:
            raise Refused(str(message.params))
        if type(message) is not Notification:
            raise ProtocolError("handshake", f"the sidecar sent {type(message).__name__} before its $hello")


def _read_size(decoder: Decoder) -> int:
    return min(max(decoder.bytes_wanted, _MIN_READ), _MAX_READ)


class _Call:
    __slots__ = ("abandoned", "method", "msgid", "sent", "task")

    def __init__(self, task: trio.lowlevel.Task, method: str, msgid: int) -> None:
        self.task = task
        self.method = method
        self.msgid = msgid
        self.sent = False
        self.abandoned = False


@final
class Connection:
    """Calls multiplexed over one stream.

    Callers queue whole frames; one writer task drains everything queued into a single
    ``send_all``, and one reader task decodes every frame a read returned and wakes the callers.
    (The queue is a list, not a memory channel: this is the hot path, and a channel's bookkeeping
    cost more per frame than the rest of the write.) A lone call with the writer idle writes its
    own frame, synchronously. A cancelled caller abandons its reply slot (and tells the sidecar
    with ``$cancel``): it never touches the stream, so a shared connection is never left with half
    a frame.

    The limits are the lower of the caller's and those the sidecar announced in its ``$hello``:
    at most `max_inflight` calls are in flight (so the sidecar always reads, and a ``$cancel``
    always gets through), and no request is larger than the sidecar accepts.

    Run `run` in a nursery before calling `call`; `fail` stops it.
    """

    def __init__(
        self,
        opened: Opened,
        *,
        max_frame_size: int,
        max_inflight: int,
        explain: Explain = lost_without_explanation,
    ) -> None:
        stream = opened.stream
        self._stream = stream
        self._encoder = Encoder()
        self._decoder = Decoder(max_frame_size)
        self._decoder.receive_data(opened.initial_data)
        self._max_request = min(max_frame_size, opened.hello.max_frame_size)
        self.max_inflight: Final = min(max_inflight, opened.hello.max_inflight)
        """Calls this connection carries at once; further callers wait for a slot."""
        self._explain = explain
        self._pending: dict[int, _Call] = {}
        self._last_msgid = MAX_MSGID
        # What the writer task sends next: (call or None, header, payload). A caller appends and,
        # if the writer waits for work, wakes it; the writer takes everything queued at once.
        self._queue: list[tuple[_Call | None, bytes, bytes | memoryview]] = []
        self._idle_writer: trio.lowlevel.Task | None = None
        self._descriptors = _descriptors(stream)
        # A slot is a msgid in flight: taken before a request is encoded, given back when its msgid
        # is free again. Callers beyond max_inflight wait in _slot_waiters; a freed slot is handed
        # to the first of them (trio.Semaphore's rules, inlined for the hot path).
        self._free_slots = self.max_inflight
        self._slot_waiters = trio.lowlevel.ParkingLot()
        self._failure: ErrorFactory | None = None
        self._cancel_scope = trio.CancelScope()
        self.load = 0
        """Callers currently inside `call` on this connection."""

    @property
    def broken(self) -> bool:
        return self._failure is not None

    # Ctrl-C must not land between registering the call and parking in wait_task_rescheduled:
    # a registered call whose caller left would later be woken by the reader, inside whatever the
    # caller waits on by then. Protected, KeyboardInterrupt reaches the caller where it parks,
    # through `abort`, like a cancellation.
    @trio.lowlevel.enable_ki_protection
    async def call(self, method: str, arg: Any = None) -> Any:
        self.load += 1
        try:
            # The call always parks below (a checkpoint). A caller cancelled already is stopped
            # here, before anything is sent: its effective deadline is -inf. (This stands in for
            # checkpoint_if_cancelled, and saves walking the cancel scopes twice a call.)
            deadline = trio.current_effective_deadline()
            if deadline == -math.inf:
                await trio.lowlevel.checkpoint()
            # A free slot is taken without yielding; only a full connection makes callers wait.
            if self._free_slots:  # then nobody waits: see _release_slot
                self._free_slots -= 1
            else:
                await self._slot_waiters.park()  # returns holding the slot that woke it
                deadline = trio.current_effective_deadline()
            if self._failure is not None:
                self._release_slot()
                raise self._failure()
            timeout = None if deadline == math.inf else deadline - trio.current_time()
            msgid = self._last_msgid + 1
            if msgid > MAX_MSGID or msgid in self._pending:
                msgid = self._next_free_msgid()
            self._last_msgid = msgid
            try:
                payload = self._encoder.request(msgid, method, arg, timeout)
                if len(payload) > self._max_request:
                    raise ValueError(
                        f"the request to {method} is {len(payload)} bytes; the frame limit is "
                        f"{self._max_request} (the lower of max_frame_size and the sidecar's "
                        "-max-frame-size)"
                    )
            except BaseException:
                self._release_slot()
                raise
            call = _Call(trio.lowlevel.current_task(), method, msgid)
            alone = not self._pending
            self._pending[msgid] = call
            header = frame_header(len(payload))
            if (
                alone
                and self._idle_writer is not None
                and self._descriptors is not None
                and len(payload) < _BIG
            ):
                # The only call, and the writer waits for work (so nothing is queued or half
                # written): write the frame now, without waking the writer. (With other calls
                # about, leave it to the writer, which batches what they queue into one write.)
                # This is synchronous, so no cancel can cut it; whatever the socket did not take
                # goes to the writer, first in line.
                frame = header + payload
                try:
                    sent = os.write(self._descriptors[1](), frame)
                except OSError:
                    sent = 0  # the writer will meet the error and fail the connection
                if sent:
                    call.sent = True
                    if sent < len(frame):
                        self._enqueue(None, b"", frame[sent:])
                else:
                    self._enqueue(call, header, payload)
            else:
                self._enqueue(call, header, payload)

            def abort(_: Any) -> trio.lowlevel.Abort:
                call.abandoned = True
                if call.sent and self._failure is None:
                    cancel = self._encoder.cancel(msgid)
                    self._enqueue(None, frame_header(len(cancel)), cancel)
                # Not sent yet: the writer drops the request and frees the msgid.
                return trio.lowlevel.Abort.SUCCEEDED

            return await trio.lowlevel.wait_task_rescheduled(abort)
        except RemoteError as exc:
            if exc.type == "deadline_exceeded":
                # The Go context shares the caller's deadline, and its reply can beat Trio to
                # noticing that deadline. One more checkpoint lets the caller's own scope win, so
                # fail_after still raises TooSlowError and move_on_after still moves on.
                await trio.lowlevel.checkpoint()
            raise
        finally:
            self.load -= 1

    def _enqueue(self, call: _Call | None, header: bytes, payload: bytes | memoryview) -> None:
        self._queue.append((call, header, payload))
        writer = self._idle_writer
        if writer is not None:
            self._idle_writer = None
            trio.lowlevel.reschedule(writer)

    def _release_slot(self) -> None:
        # Callers wait only while no slot is free, and a slot freed while they wait is handed
        # to the first of them: so while _free_slots > 0, nobody waits.
        if self._free_slots or not self._slot_waiters:
            self._free_slots += 1
        else:
            self._slot_waiters.unpark()

    def _next_free_msgid(self) -> int:
        msgid = self._last_msgid
        while True:
            msgid = msgid + 1 if msgid < MAX_MSGID else 0
            if msgid not in self._pending:
                return msgid

    def _free(self, msgid: int) -> _Call:
        call = self._pending.pop(msgid)
        self._release_slot()
        return call

    @trio.lowlevel.enable_ki_protection
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the connection until it breaks or `fail` is called; never raises on its own account."""
        try:
            with self._cancel_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._guard, self._read_loop)
                    nursery.start_soon(self._guard, self._write_loop)
                    task_status.started()
        finally:
            self.fail(error_factory(SidecarError, "the connection to the sidecar was closed"))
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self._stream)

    def fail(self, make_error: ErrorFactory) -> None:
        """Fail every call in flight with a fresh error from ``make_error``, then stop."""
        if self._failure is not None:
            return
        self._failure = make_error
        for call in self._pending.values():
            if not call.abandoned:
                trio.lowlevel.reschedule(call.task, outcome.Error(make_error()))
            self._release_slot()
        self._pending.clear()
        self._queue.clear()
        self._cancel_scope.cancel()

    @trio.lowlevel.enable_ki_protection
    async def _guard(self, loop: Callable[[], Awaitable[None]]) -> None:
        try:
            await loop()
        except (
            ProtocolError,
            PeerClosed,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            OSError,
        ) as exc:
            if self._failure is None:
                self.fail(await self._explain(exc))
        finally:
            self._cancel_scope.cancel()

    @trio.lowlevel.enable_ki_protection
    async def _write_loop(self) -> None:
        send_all = self._stream.send_all

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._idle_writer = None
            return trio.lowlevel.Abort.SUCCEEDED

        while True:
            if not self._queue:
                self._idle_writer = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(abort)
            batch, self._queue = self._queue, []
            if self._failure is not None:
                return
            out = bytearray()
            for call, header, payload in batch:
                if call is not None:
                    if call.abandoned:
                        self._free(call.msgid)
                        continue
                    call.sent = True
                out += header
                if len(payload) >= _BIG:
                    await send_all(out)
                    out = bytearray()
                    await send_all(payload)
                else:
                    out += payload
            if out:
                await send_all(out)

    @trio.lowlevel.enable_ki_protection
    async def _read_loop(self) -> None:
        decoder = self._decoder
        self._dispatch()
        if self._descriptors is None:
            while True:
                data = await self._stream.receive_some(_read_size(decoder))
                if not data:
                    decoder.receive_eof()
                    raise PeerClosed
                decoder.receive_data(data)
                self._dispatch()
        # With a descriptor, read it directly. Between frames the last read took all there was,
        # so wait for more before reading: reading first (as receive_some does) would meet
        # EAGAIN, a system call between a reply and its caller. Inside a frame more is on its
        # way, so read first. A large frame is read straight into its own buffer.
        fileno = self._descriptors[0]
        wait_readable = trio.lowlevel.wait_readable
        while True:
            try:
                count = self._read_now(fileno())
            except BlockingIOError:
                await wait_readable(fileno())
                continue
            if not count:
                decoder.receive_eof()
                raise PeerClosed
            self._dispatch()
            if decoder.between_frames:
                await wait_readable(fileno())
            else:
                await trio.lowlevel.cancel_shielded_checkpoint()

    def _read_now(self, fd: int) -> int:
        """Read what ``fd`` has into the decoder, without blocking; return the byte count (0 at
        the end of the stream)."""
        decoder = self._decoder
        view = decoder.large_frame_view()
        if view is None:
            data = os.read(fd, _read_size(decoder))
            decoder.receive_data(data)
            return len(data)
        with view:
            count = os.readv(fd, [view])
        decoder.large_frame_filled(count)
        return count

    def _dispatch(self) -> None:
        decoder = self._decoder
        pending = self._pending
        while (message := decoder.next_message()) is not None:
            if type(message) is Response:
                call = pending.pop(message.msgid, None)
                if call is None:
                    raise ProtocolError(
                        "unknown_msgid", f"the sidecar answered msgid {message.msgid}, which is not in flight"
                    )
                self._release_slot()
                if call.abandoned:
                    continue
                if message.error is None:
                    trio.lowlevel.reschedule(call.task, outcome.Value(message.result))
                else:
                    trio.lowlevel.reschedule(
                        call.task, outcome.Error(remote_error(call.method, message.error))
                    )
            elif type(message) is not Notification:
                raise ProtocolError("bad_message", "the sidecar sent a request; clients take no requests")
