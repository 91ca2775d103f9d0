"""One connection to a sidecar: the Trio side of a `ClientProtocol` (or of a `GoridgeProtocol`,
for GoTask's own format).

The protocol decides what goes on the wire and what a reply means; this module moves the bytes
(one reader task, one writer task), parks and wakes the callers, and runs host calls' handlers.
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Awaitable, Callable
from typing import Any, Final, NoReturn, final

import outcome
import trio

from ._channel import FdChannel, PeerClosed, StreamChannel, open_channel
from ._errors import (
    ErrorFactory,
    Explain,
    GoTaskError,
    ProtocolError,
    RemoteError,
    ShuttingDown,
    SidecarError,
    error_factory,
    lost_without_explanation,
    protocol_failure,
    remote_error,
)
from ._handlers import Handlers, error_map, log_record
from ._opening import Opened
from ._protocol import (
    Call,
    ClientProtocol,
    Drained,
    GoingAway,
    HostCall,
    HostCancel,
    HostLog,
    ItemsArrived,
    StreamCall,
)
from ._settings import PoolSettings
from ._stream import ItemStream, wake
from ._wire import MAX_MSGID

# How long a closing connection lets its writer finish the frames it began. Only a peer that has
# stopped reading makes it wait; it then gets half a frame, as it would without the wait.
_FINISH_WRITING: Final = 1.0

# A peer that sends host calls faster than it reads their answers: the reader stops reading while
# this many bytes of answers are unsent, so that what the client holds stays bounded.
MAX_UNSENT_ANSWERS: Final = 1 << 20


# What `Connection._read_now` found.
_NOTHING: Final = 0
"""Nothing to read yet."""
_SOME: Final = 1
"""Bytes, and the descriptor is likely empty now: wait before reading again."""
_MORE: Final = 2
"""Bytes, and likely more behind them: read again before waiting."""

# A lone caller looks for its reply after each of this many passes of the run loop before it
# sleeps on the descriptor, while the calls before it took less than _QUICK seconds: about what
# the sidecar takes to answer a trivial call here (docs/performance.md, "Spinning").
_SPINS: Final = 8
_QUICK: Final = 250e-6


class _Spinning:
    caller = 0
    """Nonzero while a caller spins (`Connection._lead`): one at a time in the process."""


_spinning: Final = _Spinning()

# What a lone caller's own read may meet besides a bad frame: the end of the stream, a reset, a
# descriptor `fail` closed.
_READ_ERRORS: Final = (
    PeerClosed,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    OSError,
)

NO_STREAMS_GORIDGE: Final = (
    "GoTask's wire format (protocol=\"goridge\") has no streams: a Go method's result comes in one "
    "frame. Stream from a sidecar built with trio-gotask's Go package (the default protocol), or "
    "page through the results with calls"
)
NO_STREAMS_SIDECAR: Final = (
    "the sidecar does not serve streams: its gotask Go package predates them (its $hello does not "
    'say "streams"); rebuild it against the Go package of this trio_gotask'
)

_WENT_AWAY: Final = error_factory(
    SidecarError, "the sidecar is shutting down: it asked for no more calls on this connection ($goaway)"
)


class State(enum.Enum):
    """Where a `Connection` is in its life; it only moves down this list."""

    OPEN = enum.auto()
    """Calls are sent here."""
    GOING_AWAY = enum.auto()
    """The sidecar said ``$goaway``: no new call is sent here; those in flight finish, then it closes."""
    BROKEN = enum.auto()
    """It failed or was closed: every call in flight failed, and no call is sent here."""


_OPEN: Final = State.OPEN  # read on every call: a global, not an attribute of the enum


class Unsent(Exception):
    """A call that waited for a slot on a connection that broke meanwhile: nothing was sent, so
    it may go to another connection. ``error`` is what its caller sees when there is none."""

    def __init__(self, error: GoTaskError) -> None:
        super().__init__(error)
        self.error = error

    def reraise(self) -> NoReturn:
        raise self.error from self.error.__cause__


@final
class Connection:
    """Calls multiplexed over one stream.

    A caller takes a slot (one of `max_inflight`; further callers wait for one,
    and get `Unsent` if the connection breaks meanwhile),
    queues its request in the protocol and parks until the reader hands it the reply (or, alone
    on a connection over a socket or pipes, reads the reply itself: `_lead`). One writer
    task writes everything queued, batched; a lone call, with the writer idle, writes its own
    frame without waking it, synchronously, so that no cancel can cut it short. A shared stream
    therefore never carries half a frame. A cancelled caller abandons its call and
    leaves at once; the protocol sends a ``$cancel`` if the request went out.

    The limits are the lower of the caller's and those the sidecar announced in its ``$hello``
    (see `ClientProtocol`). Run `run` in a nursery before calling `call`; `fail` stops it, and
    tells ``on_broken``.

    When the sidecar says ``$goaway`` (it is shutting down), ``on_going_away`` is told, so that
    no more calls are sent here, and the connection closes once every call sent on it is
    answered; a request that crossed the ``$goaway`` is answered ``shutting_down``. When it says
    ``$drained`` (it answered every call it ran), the calls still unanswered get `Unsent`, since
    they never ran, and the connection closes.

    Host calls (the sidecar calling ``handlers``) run as tasks of `run`'s nursery, each under the
    Go caller's deadline and cancelled by its ``$cancel``; the reader only starts them, so a slow
    or stuck handler never holds up the connection. The greeting announced how many may run at
    once (`Opened.max_host_calls`); the protocol answers ``busy`` past that. While more than
    `MAX_UNSENT_ANSWERS` bytes of answers wait to be written (a sidecar that calls and does not
    read), the reader stops reading, so that the sidecar feels the backpressure, not the client's
    memory.

    Keepalive: with ``keepalive_timeout`` (seconds) and a sidecar whose ``$hello`` says it answers
    ``$ping``, a connection on which the sidecar has said nothing for half of it is sent a
    ``$ping``; if the sidecar still says nothing by the end of it, the sidecar is taken for frozen
    (or the path to it for broken): the connection fails with `SidecarError`, as if it had closed.
    Any bytes count as life, so a busy connection is never pinged.
    """

    def __init__(
        self,
        opened: Opened,
        settings: PoolSettings,
        *,
        explain: Explain = lost_without_explanation,
        on_broken: Callable[[Connection], None] | None = None,
        on_going_away: Callable[[Connection], None] | None = None,
        handlers: Handlers | None = None,
    ) -> None:
        self._channel = open_channel(opened.stream)
        limits = settings.limits
        self._protocol = opened.speaks(opened, limits.max_frame_size, limits.max_inflight)
        self.max_inflight: Final = self._protocol.max_inflight
        """Calls this connection carries at once; further callers wait for a slot."""
        # The slots: a count, and a lot where callers wait for one (`_release_slot` hands it
        # over). Not a trio.Semaphore: two method calls less on every call.
        self._free_slots = self.max_inflight
        self._slot_waiters = 0
        self._slot_lot = trio.lowlevel.ParkingLot()
        self._explain = explain
        self._on_broken = on_broken
        self._handlers = handlers if handlers is not None else Handlers()
        self._host_scopes: dict[int, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None
        # The writer parks here when the protocol has nothing to send (and says so in
        # _writer_idle, a flag being cheaper to test than the lot).
        self._writer_lot = trio.lowlevel.ParkingLot()
        self._writer_idle = False
        self._writing = trio.CancelScope(shield=True)
        self._writer_busy = False
        self._stopping = False
        # Bytes a caller's own write left over; the writer sends them before anything else.
        self._unsent: list[bytes | bytearray | memoryview] = []
        # Bound once: every parked call points at it (Call.on_abort), no object made per call.
        self._abort_call = self._abort
        self._state = State.OPEN
        self._failure: ErrorFactory | None = None
        """Set with `State.BROKEN`: what failed the calls."""
        self._on_going_away = on_going_away
        self._cancel_scope = trio.CancelScope()
        self._keepalive_timeout = settings.keepalive_timeout if opened.hello.ping else None
        self._reads = 0
        """Reads that returned bytes: the keepalive's sign of life, cheaper than the clock."""
        self._unsent_answers = 0
        """Bytes of answers queued (gathered from the protocol's `take_answer_bytes`) and not yet
        written: what the reader's backpressure counts."""
        self._answers_written = trio.lowlevel.ParkingLot()
        # A lone caller reads its own reply (`_lead`): it waits on a duplicate of the descriptor,
        # so that its wait and the reader task's never collide, and `fail` can wake it alone.
        self._fd = self._channel if isinstance(self._channel, FdChannel) else None
        """The channel, when a caller can read its descriptor itself."""
        self._lead_fd = -1
        """The duplicate a leading caller waits on, from `run`'s start to its end (-1 otherwise)."""
        self._lead_call: Call | None = None
        """The call whose caller reads the descriptor now; the reader task keeps off it."""
        self._lead_done = False
        """Whether the outcome of `_lead_call` is known: `_dispatch` or `fail` sets this, and
        `_lead_result` or `_lead_error` (no `outcome` object: this is the fast path)."""
        self._lead_result: Any = None
        self._lead_error: BaseException | None = None
        self._lead_over = trio.lowlevel.ParkingLot()
        """Where the reader task waits while a caller reads."""
        self._quick = True
        """Whether the last call a caller read for itself was answered within _QUICK: only then
        does the next one spin (`_lead`)."""
        self.load = 0
        """Callers currently inside `call` on this connection, and streams open on it."""
        self.streams = 0
        """Streams open on this connection (`open_stream`), until their consumer closes them."""
        self.given_up = 0
        """Calls sent here whose callers gave up, not yet answered: each keeps its slot until the
        sidecar answers it (soon after a ``$cancel``; in GoTask's format, when the Go method ends)."""

    @property
    def broken(self) -> bool:
        return self._state is State.BROKEN

    def _refusal(self) -> ErrorFactory:
        """The error a caller who waited for a slot gets, inside `Unsent`, once no call may be
        sent here."""
        if self._state is State.BROKEN:
            assert self._failure is not None
            return self._failure
        return _WENT_AWAY

    @property
    def busy(self) -> int:
        """Slots taken or waited for: `load` and `given_up`. A caller finds a free slot at once
        when this is below `max_inflight`."""
        return self.load + self.given_up

    # Ctrl-C must not land between queueing the call and parking in wait_task_rescheduled: a
    # queued call whose caller left would later be woken by the reader, inside whatever the caller
    # waits on by then. Protected, KeyboardInterrupt reaches the caller where it parks, through
    # `abort`, like a cancellation.
    @trio.lowlevel.enable_ki_protection
    async def call(self, method: str, arg: Any = None, metadata: dict[str, str] | None = None) -> Any:
        """Make the call, ``metadata`` (checked strings) with it; see the class docstring."""
        self.load += 1
        try:
            # The deadline travels to Go; -inf means the caller is cancelled already, and then
            # it sends nothing: this is checkpoint_if_cancelled, with one walk of the cancel
            # scopes instead of two.
            deadline = trio.current_effective_deadline()
            if deadline == -math.inf:
                await trio.lowlevel.checkpoint()
            if self._free_slots:
                self._free_slots -= 1
            else:
                await self._wait_for_slot()
                deadline = trio.current_effective_deadline()
            if self._state is not _OPEN:
                self._release_slot()
                raise Unsent(self._refusal()())
            timeout = None if deadline == math.inf else deadline - trio.current_time()
            protocol = self._protocol
            try:
                call = protocol.send_request(method, arg, timeout, trio.lowlevel.current_task(), metadata)
            except BaseException:
                self._release_slot()
                raise
            if self.load == 1 and self._writer_idle:
                self._write_alone()
                if self._lead_fd >= 0:
                    return await self._lead(call)
            else:
                self._wake_writer()  # it batches what every caller queued by the time it runs

            call.on_abort = self._abort_call
            return await trio.lowlevel.wait_task_rescheduled(call)  # cancelled: self._abort(call)
        except RemoteError as exc:
            if exc.type == "deadline_exceeded":
                # The Go context shares the caller's deadline, and its reply can beat Trio to
                # noticing that deadline. One more checkpoint lets the caller's own scope win, so
                # fail_after still raises TooSlowError and move_on_after still moves on.
                await trio.lowlevel.checkpoint()
            raise
        finally:
            self.load -= 1

    async def _wait_for_slot(self) -> None:
        """Wait until `_release_slot` hands this caller a slot."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self._slot_waiters += 1
        try:
            await self._slot_lot.park()
        finally:
            self._slot_waiters -= 1

    def _release_slot(self) -> None:
        # _slot_waiters also counts waiters woken (or cancelled) that have not run yet: only
        # the lot knows whether one is still parked.
        if not (self._slot_waiters and self._slot_lot.unpark()):
            self._free_slots += 1

    def _abort(self, call: Call) -> trio.lowlevel.Abort:
        """A parked caller is cancelled: it gives up its call (see `ClientProtocol.abandon`)."""
        if self._protocol.abandon(call):
            self._release_slot()
        else:
            self.given_up += 1
            self._wake_writer()  # for the $cancel
        return trio.lowlevel.Abort.SUCCEEDED

    @trio.lowlevel.enable_ki_protection
    async def _lead(self, call: Call) -> Any:
        """Read the descriptor in the caller's own task until ``call``'s reply comes, saving the
        pass of Trio's run loop in which the reader task would wake the caller, and, while calls
        answer quickly, the sleep itself (see the comment on spinning below).

        The caller waits on a duplicate of the descriptor (Trio lets one task wait per
        descriptor), which `fail` can wake alone. The reader task keeps off the descriptor
        meanwhile: if it was waiting already, it parks once it wakes, until the caller is done.
        Whatever else is read on the way (other replies, host calls, logs, ``$goaway``) is
        handled as the reader would. The caller stops reading when the reply comes, when it is
        cancelled (it gives up the call, as a parked caller would), when `fail` wakes it, or
        when its read fails or answers pile up unsent: it then hands the descriptor back and
        waits for its reply like any caller (after failing the connection itself, for a bad
        frame, whose bytes the reader task will not see).
        """
        fd = self._fd
        assert fd is not None
        call.owner = None  # `_dispatch` and `fail` see it and set _lead_done
        self._lead_call = call
        self._lead_done = False
        try:
            # Look for the reply after each of a few passes of the run loop before sleeping
            # until the descriptor is readable: a reply that comes meanwhile costs no sleep and
            # no wake-up, which on a VM take longer than the sidecar takes to answer. Only while
            # this connection's calls answer quickly (after a slow one, sleep at once), and only
            # one caller in the process at a time: callers alone on each of many connections
            # would otherwise all spin, each pass reading every descriptor for nothing.
            spins = 0
            if self._quick and not _spinning.caller:
                _spinning.caller = spins = _SPINS
            start = trio.current_time()
            found = _NOTHING
            while not self._lead_done:
                self._unsent_answers += self._protocol.take_answer_bytes()
                if self._unsent_answers > MAX_UNSENT_ANSWERS:
                    break  # the reader task waits for the writer
                if found == _MORE:
                    await trio.lowlevel.checkpoint()  # a large reply: let other tasks run
                elif spins:
                    spins -= 1
                    if not spins:
                        _spinning.caller = 0
                    await trio.lowlevel.checkpoint()
                else:
                    await trio.lowlevel.wait_readable(self._lead_fd)
                found = self._read_now(fd)
            self._quick = trio.current_time() - start < _QUICK
        except ProtocolError as exc:
            # The bytes are gone: the reader task, waiting or parked, would never meet them.
            if self._state is not State.BROKEN:
                self.fail(protocol_failure(exc))
        except _READ_ERRORS:
            # The end of the stream (or a reset) stays readable: the reader task meets it too,
            # once this caller leaves, and fails the connection with the sidecar's explanation.
            # Or `fail` woke this caller (notify_closing).
            pass
        except BaseException:
            if not self._lead_done:
                self._abort(call)  # cancelled (or interrupted) before the reply
            raise
        finally:
            if spins:
                _spinning.caller = 0
            self._lead_call = None
            if self._lead_over:
                self._lead_over.unpark_all()
        if self._lead_done:
            error = self._lead_error
            if error is None:
                result, self._lead_result = self._lead_result, None
                return result
            self._lead_error = None
            raise error
        call.owner = trio.lowlevel.current_task()
        call.on_abort = self._abort_call
        return await trio.lowlevel.wait_task_rescheduled(call)  # cancelled: self._abort(call)

    @trio.lowlevel.enable_ki_protection
    async def open_stream(
        self, method: str, arg: Any, window: int, metadata: dict[str, str] | None = None
    ) -> ItemStream:
        """Send the request that opens a stream of ``method``, holding a slot (waited for like a
        call's) until its response; its `ItemStream` takes the items (with the protocol's
        `ClientProtocol.take_item`, and `wait_items`) and ends it (`close_stream`). Raises
        `Unsent` like `call`, and `GoTaskError` for a connection that cannot carry streams."""
        protocol = self._protocol
        if not isinstance(protocol, ClientProtocol):
            raise GoTaskError(NO_STREAMS_GORIDGE)
        if not protocol.streams:
            raise GoTaskError(NO_STREAMS_SIDECAR)
        self.load += 1
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            if self._free_slots:
                self._free_slots -= 1
            else:
                await self._wait_for_slot()
            if self._state is not _OPEN:
                self._release_slot()
                raise Unsent(self._refusal()())
            deadline = trio.current_effective_deadline()
            timeout = None if deadline == math.inf else deadline - trio.current_time()
            try:
                stream = protocol.open_stream(method, arg, timeout, window, metadata)
            except BaseException:
                self._release_slot()
                raise
        except BaseException:
            self.load -= 1
            raise
        self.streams += 1
        self._wake_writer()
        return ItemStream(self, stream, protocol.take_item)

    def credit_queued(self) -> None:
        self._wake_writer()

    async def wait_items(self, stream: StreamCall) -> None:
        """Wait until ``stream`` has an item, has ended or has failed (the caller checks which);
        a cancelled wait leaves the stream as it was."""
        stream.waiter = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            stream.waiter = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def close_stream(self, stream: StreamCall) -> None:
        """The consumer is done with ``stream``: if it has not ended, it is cancelled (a
        ``$cancel``, and its slot stays taken until the sidecar answers, as for a call given up).
        Call once per stream."""
        self.load -= 1
        self.streams -= 1
        if stream.ended or stream.failure is not None:
            return
        if self._protocol.abandon(stream):
            self._release_slot()
        elif stream.abandoned:
            self.given_up += 1
            self._wake_writer()  # for the $cancel

    def _wake_writer(self) -> None:
        if self._writer_idle:  # cheaper than unpark() when the writer is busy, as it mostly is
            self._writer_idle = False
            self._writer_lot.unpark()

    def _write_alone(self) -> None:
        """Write the only call's request here and now, saving the writer's wake-up; hand the
        writer what the stream did not take."""
        protocol = self._protocol
        chunks = protocol.data_to_send()
        self._unsent_answers += protocol.take_answer_bytes()
        send_now = self._channel.send_now
        for i, chunk in enumerate(chunks):
            sent = send_now(chunk)
            if sent < len(chunk):
                self._unsent = [memoryview(chunk)[sent:], *chunks[i + 1 :]]
                self._wake_writer()
                return
        if self._unsent_answers:
            self._unsent_answers = 0
            self._answers_written.unpark_all()

    @trio.lowlevel.enable_ki_protection
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the connection until it breaks or `fail` is called; never raises on its own account."""
        try:
            if self._fd is not None and self._fd.read_fileno() >= 0:
                self._lead_fd = os.dup(self._fd.read_fileno())
            with self._cancel_scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery  # where host calls' handlers run
                    nursery.start_soon(self._guard, self._read_loop)
                    nursery.start_soon(self._guard, self._write_loop)
                    if self._keepalive_timeout is not None:
                        nursery.start_soon(self._keepalive)
                    task_status.started()
        finally:
            self.fail(error_factory(SidecarError, "the connection to the sidecar was closed"))
            with trio.CancelScope(shield=True):
                await self._channel.aclose()
            if self._lead_fd >= 0:
                trio.lowlevel.notify_closing(self._lead_fd)
                os.close(self._lead_fd)
                self._lead_fd = -1

    def fail(self, make_error: ErrorFactory, *, unrun: bool = False) -> None:
        """Fail every call in flight with a fresh error from ``make_error``, then stop. With
        ``unrun`` (the sidecar said it ran none of them), each gets `Unsent` carrying a
        `ShuttingDown` instead, so that it may be sent elsewhere."""
        if self._state is State.BROKEN:
            return
        self._state = State.BROKEN
        self._failure = make_error
        held = self._protocol.in_flight
        for call in self._protocol.close():
            if type(call) is StreamCall:
                call.failure = (
                    ShuttingDown(
                        call.method, "shutting_down", "the sidecar shut down before it ran the stream"
                    )
                    if unrun
                    else make_error()
                )
                wake(call)
                continue
            if unrun:
                error: BaseException = Unsent(
                    ShuttingDown(call.method, "shutting_down", "the sidecar shut down before it ran the call")
                )
            else:
                error = make_error()
            if call.owner is None:  # its caller reads for itself (_lead): wake it
                self._lead_error = error
                self._lead_done = True
                trio.lowlevel.notify_closing(self._lead_fd)  # closed when `run` ends
            else:
                trio.lowlevel.reschedule(call.owner, outcome.Error(error))
        for _ in range(held):
            self._release_slot()  # a waiter wakes, sees the failure and passes its slot on
        self._unsent.clear()
        self._cancel_scope.cancel()
        self._stop_writing()
        if self._on_broken is not None:
            self._on_broken(self)

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
            if self._state is not State.BROKEN:
                self.fail(await self._explain(exc))
        finally:
            self._cancel_scope.cancel()
            self._stop_writing()

    @trio.lowlevel.enable_ki_protection
    async def _write_loop(self) -> None:
        protocol = self._protocol
        send_all = self._channel.send_all
        # Shielded, so that closing never cuts a frame in half (the sidecar would take the rest of
        # the stream for a broken frame): `_stop_writing` ends it between batches, or lets the
        # batch under way finish, for a while.
        with self._writing:
            while True:
                while not (self._unsent or protocol.has_data_to_send):
                    if self._stopping:
                        return
                    self._writer_idle = True
                    try:
                        await self._writer_lot.park()
                    finally:
                        self._writer_idle = False
                chunks, self._unsent = self._unsent, []
                self._writer_busy = True
                chunks += protocol.data_to_send()
                self._unsent_answers += protocol.take_answer_bytes()
                answers = self._unsent_answers  # every answer counted so far is in this batch
                for chunk in chunks:
                    await send_all(chunk)
                self._writer_busy = False
                if answers:
                    self._unsent_answers -= answers
                    self._answers_written.unpark_all()

    async def _keepalive(self) -> None:
        """Ping a silent sidecar; fail the connection if it stays silent for keepalive_timeout."""
        assert isinstance(self._protocol, ClientProtocol) and self._keepalive_timeout is not None
        timeout = self._keepalive_timeout
        half = timeout / 2
        token = 0
        while True:
            reads = self._reads
            await trio.sleep(half)
            if self._reads != reads:
                continue
            token = token + 1 if token < MAX_MSGID else 0
            self._protocol.ping(token)
            self._wake_writer()
            await trio.sleep(half)
            if self._reads == reads:
                self.fail(
                    error_factory(
                        SidecarError,
                        f"the sidecar said nothing for {timeout:g} s, not even to a $ping "
                        "(keepalive_timeout): it is frozen or overloaded, or the network path to it "
                        "is broken; the connection was closed",
                    )
                )
                return

    def _stop_writing(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        if self._writer_busy:
            self._writing.deadline = trio.current_time() + _FINISH_WRITING
        else:
            self._writing.cancel()

    async def _backpressure(self) -> None:
        """Wait while more than `MAX_UNSENT_ANSWERS` bytes of answers are unsent."""
        while True:
            self._unsent_answers += self._protocol.take_answer_bytes()
            if self._unsent_answers <= MAX_UNSENT_ANSWERS:
                return
            await self._answers_written.park()

    @trio.lowlevel.enable_ki_protection
    async def _read_loop(self) -> None:
        if self._fd is not None:
            await self._read_fd_loop(self._fd)
            return
        protocol = self._protocol
        channel = self._channel
        assert isinstance(channel, StreamChannel)
        self._dispatch()  # replies that came with the greeting
        while True:
            await self._backpressure()
            buffer = protocol.receive_buffer()
            if buffer is None:
                data = await channel.receive_some(protocol.read_size)
                if not data:
                    protocol.receive_eof()
                    raise PeerClosed
                protocol.receive_data(data)
            else:
                with buffer:
                    count = await channel.receive_into(buffer)
                if not count:
                    protocol.receive_eof()
                    raise PeerClosed
                protocol.received_into(count)
            self._reads += 1
            self._dispatch()

    async def _read_fd_loop(self, fd: FdChannel) -> None:
        """The reader task over a descriptor, which it lends to a lone caller (`_lead`)."""
        self._dispatch()  # replies that came with the greeting
        found = _SOME
        while True:
            await self._backpressure()
            if self._lead_call is not None:
                await self._lead_over.park()
                continue
            if found == _MORE or (found == _SOME and self._protocol.in_flight):
                await trio.lowlevel.checkpoint()
            else:
                await fd.wait_readable()
            if self._lead_call is None:  # else a caller took over meanwhile, and reads
                found = self._read_now(fd)

    def _read_now(self, fd: FdChannel) -> int:
        """Read what the descriptor holds, without waiting, and act on it: `_NOTHING`, `_SOME` or
        `_MORE`. Raises `PeerClosed` at its end, and what decoding raises."""
        protocol = self._protocol
        buffer = protocol.receive_buffer()
        if buffer is None:
            size = protocol.read_size
            data = fd.read_now(size)
            if data is None:
                return _NOTHING
            if not data:
                protocol.receive_eof()
                raise PeerClosed
            protocol.receive_data(data)
            found = _MORE if len(data) == size else _SOME
        else:
            with buffer:
                count = fd.read_into_now(buffer)
            if count is None:
                return _NOTHING
            if not count:
                protocol.receive_eof()
                raise PeerClosed
            protocol.received_into(count)
            found = _MORE  # more of the large frame is on its way: read before waiting
        self._reads += 1
        self._dispatch()
        return found

    def _dispatch(self) -> None:
        release = self._release_slot
        reschedule = trio.lowlevel.reschedule
        for event in self._protocol.events():
            if type(event) is Call:
                release()
                if event.abandoned:
                    self.given_up -= 1
                    continue
                owner = event.owner
                if owner is None:  # its caller reads for itself (_lead)
                    if event.error is None:
                        self._lead_result = event.result
                    else:
                        self._lead_error = remote_error(event.method, event.error)
                    self._lead_done = True
                elif event.error is None:
                    reschedule(owner, outcome.Value(event.result))
                else:
                    reschedule(owner, outcome.Error(remote_error(event.method, event.error)))
            elif type(event) is ItemsArrived:
                wake(event.stream)
            elif type(event) is StreamCall:
                release()
                if event.abandoned:
                    self.given_up -= 1
                    continue
                wake(event)
            elif type(event) is HostCall:
                assert self._nursery is not None
                self._nursery.start_soon(self._serve_host_call, event)
            elif type(event) is HostCancel:
                scope = self._host_scopes.get(event.msgid)
                if scope is not None:
                    scope.cancel()
            elif type(event) is HostLog:
                log_record(event)
            elif type(event) is GoingAway:
                self._go_away()
            elif type(event) is Drained:
                self.fail(_WENT_AWAY, unrun=True)
        self._protocol.raise_pending()  # a bad frame after those: fail the rest now
        if self._state is State.GOING_AWAY and not self._protocol.in_flight:
            self.fail(_WENT_AWAY)  # every call sent here is answered: close, so the sidecar may exit
        if self._protocol.has_data_to_send:
            self._wake_writer()  # answers the protocol gave itself (busy)

    def _go_away(self) -> None:
        """The sidecar said ``$goaway``: send nothing more here (callers waiting for a slot go
        elsewhere), and tell the pool."""
        if self._state is not State.OPEN:  # going away already, or broken
            return
        self._state = State.GOING_AWAY
        if self._on_going_away is not None:
            self._on_going_away(self)

    async def _serve_host_call(self, call: HostCall) -> None:
        """Run the handler of a host call under the Go caller's deadline, and answer it."""
        error: dict[str, Any] | None = None
        result: Any = None
        deadline = math.inf if call.timeout is None else trio.current_time() + call.timeout
        with trio.CancelScope(deadline=deadline) as scope:
            self._host_scopes[call.msgid] = scope
            try:
                result = await self._handlers.run(call.method, call.params, call.metadata)
            except Exception as exc:
                error = error_map(exc)
            finally:
                del self._host_scopes[call.msgid]
        if scope.cancelled_caught:
            if trio.current_time() >= deadline:
                error = {
                    "type": "deadline_exceeded",
                    "message": f"{call.method}: the Go caller's deadline passed",
                }
            else:
                error = {"type": "cancelled", "message": f"{call.method}: the Go caller cancelled the call"}
            result = None
        self._protocol.send_response(call.msgid, error, result)
        self._wake_writer()
