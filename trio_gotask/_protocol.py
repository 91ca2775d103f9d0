"""The client side of one connection, free of I/O (docs/protocol.md, section 2).

`ClientProtocol` is what a connection knows: which msgids are in flight and for whom, what is
waiting to be written, when a cancelled call needs a ``$cancel``, what a late reply of an abandoned
call means, and how many calls the sidecar lets it send; and, for host calls (the sidecar calling
the client), which are running and how many may. It is fed bytes with `receive_data` and hands back
events with `events`: an answered `Call`, a `HostCall` to run, a `HostCancel`, a `HostLog`,
`GOING_AWAY` or `SIDECAR_DRAINED`. It hands out bytes to write with `data_to_send`. It knows
nothing of sockets, tasks or clocks, so its tests drive it alone.

The greeting that opens a connection is here too: `greeting` is what the client sends first, and
`read_greeting` finds the sidecar's answer in a `Decoder`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Final, NoReturn, Protocol, final

from ._errors import ProtocolError
from ._wire import (
    CANCEL,
    DRAINED,
    GOAWAY,
    HELLO,
    LARGE_BYTES,
    LOG,
    MAX_MSGID,
    PING,
    REFUSED,
    RESPONSE,
    Decoder,
    Encoder,
    Hello,
    Notification,
    Request,
    frame_header,
    is_error_map,
    parse_error,
    parse_hello,
    parse_message,
    request_metadata,
    short_repr,
)

BIG_PAYLOAD: Final = 64 * 1024
"""Payloads at least this large are handed out as chunks of their own instead of being copied
into a batch."""
assert LARGE_BYTES >= BIG_PAYLOAD, "a frame with a tail must be a big one (data_to_send)"
_MIN_READ: Final = 64 * 1024
_MAX_READ: Final = 4 * 1024 * 1024


class Refused(Exception):
    """The sidecar turned the connection away (a ``$refused`` notification): ``str()`` is why."""


def greeting(max_frame_size: int, secret: str | None, max_host_calls: int = 0) -> bytes:
    """What a client writes first on a new connection: its secret (if any), then its ``$hello``."""
    encoder = Encoder()
    out = b""
    if secret is not None:
        auth = encoder.auth(secret)
        out += frame_header(len(auth)) + auth
    hello = encoder.hello(max_frame_size, max_host_calls)
    return out + frame_header(len(hello)) + hello


def read_greeting(decoder: Decoder) -> Hello | None:
    """The sidecar's ``$hello`` if ``decoder`` holds it, ``None`` if more bytes are needed.

    Raises `Refused` when the sidecar sent ``$refused``, and `ProtocolError` when it sent
    anything else first (notifications other than these two are skipped, as everywhere), or
    anything at all that this decoder fails on.
    """
    try:
        while (message := decoder.next_message()) is not None:
            if type(message) is not Notification:
                raise ProtocolError(
                    "handshake", f"the sidecar sent {type(message).__name__} before its $hello"
                )
            if message.method == HELLO:
                return parse_hello(message.params)
            if message.method == REFUSED:
                why = message.params
                raise Refused(why[:_MAX_REASON] if type(why) is str else short_repr(why))
    except (ProtocolError, Refused):
        raise
    except Exception as exc:
        raise decoder_failed(exc) from exc
    return None


_MAX_REASON: Final = 1000
"""How much of a ``$refused`` reason is kept."""


def decoder_failed(exc: Exception) -> ProtocolError:
    """The `ProtocolError` for an exception the decoding of a peer's bytes raised, which only a
    bug of the decoder lets out: the peer's connection ends as for any bad frame, and nothing
    else does. ``exc`` is its ``__cause__``."""
    error = ProtocolError(
        "decoder_failed",
        f"decoding the peer's bytes failed with {type(exc).__name__}: {str(exc)[:200]} "
        "(a bug of trio_gotask: please report it)",
    )
    error.__cause__ = exc  # set here: compiled by mypyc, `raise ... from exc` drops it
    return error


@final
class Call:
    """One call from its request to its reply.

    ``owner`` is whatever the I/O layer needs to hand the outcome back (a task); the protocol
    never looks at it. When `ClientProtocol.events` returns the call, ``error`` (the
    protocol's error map) or ``result`` holds the outcome.

    Calling a call runs ``on_abort(call)``, a hook the I/O layer may set: a parked caller's abort
    function can then be its call, instead of an object made for each call.
    """

    __slots__ = ("abandoned", "error", "method", "msgid", "on_abort", "owner", "result", "sent")
    error: dict[str, Any] | None
    result: Any
    on_abort: Callable[[Call], Any]

    def __init__(self, msgid: int, method: str, owner: Any) -> None:
        self.msgid = msgid
        self.method = method
        self.owner = owner
        self.sent = False
        """Whether its request was handed out by `ClientProtocol.data_to_send`."""
        self.abandoned = False
        """Whether its caller gave up on it (`ClientProtocol.abandon`)."""
        # error and result are set when the reply arrives, not before: a call is made per call.

    def __call__(self, _: Any) -> Any:
        return self.on_abort(self)

    def __repr__(self) -> str:
        state = "abandoned" if self.abandoned else "sent" if self.sent else "queued"
        return f"<Call {self.method} msgid={self.msgid} {state}>"


@final
class StreamCall:
    """One stream from its request to its response: the items received and not yet taken, and
    the credit (docs/protocol.md, section 2, "Streams").

    Like a `Call`, once `ClientProtocol.events` returns it (the response came), it has ``error``
    and ``result``. ``waiter`` is the I/O layer's: what to wake when items arrive (the protocol
    returns the stream's `ItemsArrived` then, if it is set) or when the stream ends.
    """

    __slots__ = (
        "abandoned",
        "arrived",
        "credit",
        "ended",
        "error",
        "failure",
        "items",
        "method",
        "msgid",
        "result",
        "sent",
        "sizes",
        "taken",
        "waiter",
        "window",
    )
    error: dict[str, Any] | None
    result: Any

    def __init__(self, msgid: int, method: str, window: int) -> None:
        self.msgid = msgid
        self.method = method
        self.sent = False
        self.abandoned = False
        self.window = window
        self.credit = window
        """What the sidecar may still send, as this side counts it: it sends while it is positive."""
        self.taken = 0
        """Bytes of items taken since the last ``$credit``."""
        self.items: deque[Any] = deque()
        self.sizes: deque[int] = deque()
        self.ended = False
        """Whether the response came: ``error`` (or ``result``) is set."""
        self.failure: BaseException | None = None
        """Why the stream ended without a response (the connection failed): set by the I/O layer."""
        self.waiter: Any = None
        self.arrived = ItemsArrived(self)
        self.error = None
        self.result = None

    def __repr__(self) -> str:
        state = (
            "abandoned" if self.abandoned else "ended" if self.ended else "sent" if self.sent else "queued"
        )
        return f"<StreamCall {self.method} msgid={self.msgid} {state} items={len(self.items)}>"


@final
class ItemsArrived:
    """Items arrived for ``stream``, whose consumer waits for them (its ``waiter`` is set)."""

    __slots__ = ("stream",)

    def __init__(self, stream: StreamCall) -> None:
        self.stream = stream

    def __repr__(self) -> str:
        return f"<ItemsArrived {self.stream!r}>"


@final
class HostCall:
    """The sidecar calls the client: run the handler ``method`` with ``params``, then answer with
    `ClientProtocol.send_response`. ``timeout`` is the seconds left before the Go caller's
    deadline, or ``None``; ``metadata`` the request's application metadata (its entries of
    string keys and values; empty when it carried none)."""

    __slots__ = ("metadata", "method", "msgid", "params", "timeout")

    def __init__(
        self,
        msgid: int,
        method: str,
        params: Any,
        timeout: float | None,
        metadata: dict[str, str],
    ) -> None:
        self.msgid = msgid
        self.method = method
        self.params = params
        self.timeout = timeout
        self.metadata = metadata

    def __repr__(self) -> str:
        return f"<HostCall {self.method} msgid={self.msgid}>"


@final
class HostCancel:
    """The Go caller of a running host call gave up on it: cancel its handler (it is still
    answered)."""

    __slots__ = ("msgid",)

    def __init__(self, msgid: int) -> None:
        self.msgid = msgid

    def __repr__(self) -> str:
        return f"<HostCancel msgid={self.msgid}>"


@final
class HostLog:
    """A log record of the sidecar (a ``$log`` notification), for the client's logging: ``level``
    on Go's ``log/slog`` scale, ``logger`` a name or ``""``, ``attrs`` a map (or ``None``)."""

    __slots__ = ("attrs", "level", "logger", "message", "time")

    def __init__(
        self, level: int, logger: str, message: str, time: Any, attrs: dict[str, Any] | None
    ) -> None:
        self.level = level
        self.logger = logger
        self.message = message
        self.time = time
        self.attrs = attrs

    def __repr__(self) -> str:
        return f"<HostLog {self.level} {self.logger!r} {self.message!r}>"


@final
class GoingAway:
    """The sidecar is shutting down (a ``$goaway`` notification): send no more calls on this
    connection, and close it once the calls in flight are answered. `GOING_AWAY` is the one."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<GoingAway>"


GOING_AWAY: Final = GoingAway()


@final
class Drained:
    """The sidecar answered every call it ran on this connection (a ``$drained`` notification,
    after ``$goaway``): the calls still in flight were not run, and will not be.
    `SIDECAR_DRAINED` is the one."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<Drained>"


SIDECAR_DRAINED: Final = Drained()

Event = Call | StreamCall | ItemsArrived | HostCall | HostCancel | HostLog | GoingAway | Drained
Pending = Call | StreamCall
"""A request in flight: a call or a stream."""

_Frame = tuple[Pending | None, bytes, "bytes | memoryview", bytes]
"""A frame to send: the call it is the request of (if any), then its bytes in three pieces: the
header (and the head of the payload), the body, and the tail of the payload (often empty)."""


class FrameInput(Protocol):
    """What a format's frame decoder takes in: bytes as they arrive, and the end of the stream."""

    def receive_data(self, data: bytes | bytearray | memoryview) -> None: ...

    def receive_eof(self) -> None: ...


class CallTable:
    """What the protocols of both wire formats share (`ClientProtocol`, and `GoridgeProtocol` for
    GoTask's): the calls in flight by msgid, bytes in, giving up on one, the end, and how a bad
    frame met after good ones is reported. A subclass gives its frame decoder (``frames``), reads
    frames from it (`_decode`) and says how to cancel (`_cancel`).
    """

    def __init__(self, frames: FrameInput) -> None:
        self._frames = frames
        self._calls: dict[int, Pending] = {}
        self.closed = False
        self._error: ProtocolError | None = None
        """A bad frame met after other events, raised by the next `events`."""

    @property
    def in_flight(self) -> int:
        """Calls holding a slot: sent or queued, and abandoned ones awaiting their late reply."""
        return len(self._calls)

    def abandon(self, call: Pending) -> bool:
        """Give up on ``call``; return whether its slot is free now.

        It is free at once when the request was never handed out (it will not be). Otherwise the
        peer is told if the format can (`_cancel`), and the slot is freed by the reply, which
        `events` returns marked abandoned. Abandoning an answered call, or one of a closed
        protocol, does nothing (and returns ``False``).
        """
        if call.abandoned or self.closed or self._calls.get(call.msgid) is not call:
            return False
        call.abandoned = True
        if type(call) is StreamCall:
            call.items.clear()
            call.sizes.clear()
        if not call.sent:
            del self._calls[call.msgid]
            return True
        self._cancel(call)
        return False

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Take bytes received; `events` says what they complete."""
        try:
            self._frames.receive_data(data)
        except Exception as exc:
            raise decoder_failed(exc) from exc

    def receive_eof(self) -> None:
        """The stream ended: raise `ProtocolError` (``truncated``) if it ended inside a frame."""
        try:
            self._frames.receive_eof()
        except ProtocolError:
            raise
        except Exception as exc:
            raise decoder_failed(exc) from exc

    def _cancel(self, call: Pending) -> None:
        """Tell the peer that ``call``, sent, was given up on (nothing, if the format cannot)."""

    def events(self) -> list[Event]:
        """The events the bytes received so far complete, in order (empty when more bytes are
        needed); each `Call` answered leaves the table. When a frame is bad, the events before
        it are returned first, since their calls already left the table, and the
        `ProtocolError` is raised by `raise_pending`, or the next call.

        Whatever the bytes, this raises nothing but `ProtocolError`: an exception of any other
        kind from decoding becomes one (``decoder_failed``), caused by it."""
        if self._error is not None:
            raise self._error
        out: list[Event] = []
        try:
            self._decode(out)
        except ProtocolError as exc:
            if not out:
                raise
            self._error = exc
        except Exception as exc:
            error = decoder_failed(exc)
            if not out:
                raise error from exc
            self._error = error
        return out

    def raise_pending(self) -> None:
        """Raise the `ProtocolError` of a bad frame that came after the events `events`
        returned, if there was one: call it once those events are handled, so that the calls
        still in flight fail now, not when more bytes arrive."""
        if self._error is not None:
            raise self._error

    def _decode(self, out: list[Event]) -> None:
        """Append to ``out`` the events of every whole frame received; raise `ProtocolError` at
        the first bad one."""
        raise NotImplementedError

    def close(self) -> list[Pending]:
        """End the protocol: return the calls in flight that were not abandoned (their callers
        wait for an outcome) and forget everything else. Idempotent."""
        waiting = [call for call in self._calls.values() if not call.abandoned]
        self._calls.clear()
        self.closed = True
        self._forget()
        return waiting

    def _forget(self) -> None:
        """Drop what else the subclass holds, at `close`."""


@final
class ClientProtocol(CallTable):
    """The state of one connection after its greeting.

    Sending: `send_request` takes a free slot (there are `max_inflight`; `free_slots` says how many
    are left, and a request beyond them is a bug of the caller, not of the peer) and queues the
    request; `data_to_send` hands out everything queued, in order. `abandon` tells the protocol
    that a caller gave up: a request not yet handed out is dropped and its slot freed at once;
    one that was is followed by a ``$cancel``, and its slot stays taken until the sidecar answers.

    Receiving: `receive_data` feeds bytes, `events` returns each call the sidecar answered,
    in order, with its slot freed. A call that was abandoned is returned too, marked so, since its
    slot was freed by the late reply. A reply to a msgid not in flight, a request from the
    sidecar, or malformed bytes raise `ProtocolError`, after which the connection is beyond use.

    Host calls: a request from the sidecar comes out of `events` as a `HostCall`, and a
    ``$cancel`` for one as a `HostCancel`; `send_response` answers it (every host call is answered
    once). At most ``max_host_calls`` run at once: one past them is answered ``busy`` here, and
    never becomes an event. With ``max_host_calls`` 0 a request from the sidecar is a
    `ProtocolError`.

    `close` ends the protocol and returns the calls still in flight, so that their callers can be
    told why.
    """

    def __init__(
        self,
        peer: Hello,
        *,
        max_frame_size: int,
        max_inflight: int,
        max_host_calls: int = 0,
        initial_data: bytes = b"",
    ) -> None:
        self.max_request: Final = min(max_frame_size, peer.max_frame_size)
        """The largest request payload the sidecar accepts (and this client will send)."""
        self.max_inflight: Final = min(max_inflight, peer.max_inflight)
        """How many calls may be in flight at once."""
        self.streams: Final = peer.streams
        """Whether the sidecar serves streams (`open_stream`)."""
        self._decoder = Decoder(max_frame_size)
        super().__init__(self._decoder)
        self._encoder = Encoder()
        self._decoder.receive_data(initial_data)
        self._last_msgid = MAX_MSGID
        self._outgoing: list[_Frame] = []
        self._room = self.max_inflight  # 0 once closed: one test on the hot path for both
        self.max_host_calls: Final = max_host_calls
        self._host_calls: set[int] = set()
        """The msgids of the host calls running (not yet answered)."""
        self._answer_bytes = 0
        self._going_away = False
        """Whether the sidecar said ``$goaway``: only then may ``$drained`` follow."""
        """The size of the answers queued since the last `take_answer_bytes`."""

    # -- sending --------------------------------------------------------------------------------

    @property
    def free_slots(self) -> int:
        """How many more calls `send_request` accepts now (none once closed)."""
        return self._room - len(self._calls)

    def send_request(
        self,
        method: str,
        arg: Any,
        timeout: float | None,
        owner: Any,
        metadata: dict[str, str] | None = None,
    ) -> Call:
        """Queue a request for ``method`` and return its call.

        ``timeout`` (seconds, or ``None``) becomes the Go context's deadline; ``metadata``, the
        call's application metadata (string keys and values, which the caller checked), is sent
        when it has entries. Raises what the encoder raises for an argument msgpack cannot carry,
        and `ValueError` for a request larger than the sidecar accepts; nothing is queued then.
        """
        if len(self._calls) >= self._room:
            self._no_room()
        msgid = self._last_msgid + 1
        if msgid > MAX_MSGID or msgid in self._calls:
            msgid = self._next_free_msgid()
        body: bytes | memoryview
        if type(arg) is not bytes or len(arg) < LARGE_BYTES:
            try:
                body = self._encoder.request(msgid, method, arg, timeout, metadata)
            except (TypeError, ValueError, OverflowError) as exc:
                raise _unsendable(method, exc) from exc
            size = len(body)
            head = frame_header(size)
            tail = b""
        else:
            head, tail = self._encoder.request_around(msgid, method, len(arg), timeout, metadata)
            body = arg
            size = len(head) + len(body) + len(tail)
            head = frame_header(size) + head
        if size > self.max_request:
            self._too_large(method, size)
        self._last_msgid = msgid
        call = Call(msgid, method, owner)
        self._calls[msgid] = call
        self._outgoing.append((call, head, body, tail))
        return call

    def open_stream(
        self,
        method: str,
        arg: Any,
        timeout: float | None,
        window: int,
        metadata: dict[str, str] | None = None,
    ) -> StreamCall:
        """Queue the request that opens a stream of ``method`` with ``window`` bytes of credit
        (at least 1) and ``metadata`` (as `send_request` sends it), and return the stream; raises
        like `send_request`, and `RuntimeError` when the sidecar did not say that it serves
        streams (`streams`)."""
        if not self.streams:
            raise RuntimeError("the sidecar does not serve streams")
        if len(self._calls) >= self._room:
            self._no_room()
        msgid = self._last_msgid + 1
        if msgid > MAX_MSGID or msgid in self._calls:
            msgid = self._next_free_msgid()
        try:
            body = self._encoder.stream_request(msgid, method, arg, timeout, window, metadata)
        except (TypeError, ValueError, OverflowError) as exc:
            raise _unsendable(method, exc) from exc
        if len(body) > self.max_request:
            self._too_large(method, len(body))
        self._last_msgid = msgid
        stream = StreamCall(msgid, method, window)
        self._calls[msgid] = stream
        self._outgoing.append((stream, frame_header(len(body)), body, b""))
        return stream

    def take_item(self, stream: StreamCall) -> Any:
        """Take the first item of ``stream`` (it has one); once half of the window was taken
        since the last grant, queue a ``$credit`` for it, so that the sidecar sends on, and set
        ``stream.taken`` to 0 (it is never 0 otherwise: an item frame has 4 bytes at least)."""
        size = stream.sizes.popleft()
        taken = stream.taken + size
        if taken * 2 >= stream.window and not (stream.ended or stream.abandoned or self.closed):
            stream.credit += taken
            stream.taken = 0
            credit = self._encoder.credit(stream.msgid, taken)
            self._outgoing.append((None, frame_header(len(credit)), credit, b""))
        else:
            stream.taken = taken
        return stream.items.popleft()

    def _no_room(self) -> NoReturn:
        if self.closed:
            raise RuntimeError("the protocol is closed")
        raise RuntimeError(f"no free slot: {self.max_inflight} calls are in flight already")

    def _too_large(self, method: str, size: int) -> NoReturn:
        raise ValueError(
            f"the request to {method} is {size} bytes; the frame limit is "
            f"{self.max_request} (the lower of max_frame_size and the sidecar's -max-frame-size)"
        )

    def _next_free_msgid(self) -> int:
        msgid = self._last_msgid
        while True:
            msgid = msgid + 1 if msgid < MAX_MSGID else 0
            if msgid not in self._calls:
                return msgid

    def ping(self, token: int) -> None:
        """Queue a ``$ping`` (only for a sidecar whose ``$hello`` said it answers one)."""
        ping = self._encoder.ping(token)
        self._outgoing.append((None, frame_header(len(ping)), ping, b""))

    def _cancel(self, call: Pending) -> None:
        cancel = self._encoder.cancel(call.msgid)
        self._outgoing.append((None, frame_header(len(cancel)), cancel, b""))

    @property
    def has_data_to_send(self) -> bool:
        return bool(self._outgoing)

    def data_to_send(self) -> list[bytes | bytearray | memoryview]:
        """Everything queued, as chunks to write in this order: the small frames first, joined
        into one chunk, then each big payload as a chunk of its own, so that small calls queued
        with a big one need not wait for it to cross. The requests among them count as sent."""
        frames, self._outgoing = self._outgoing, []
        out = bytearray()
        big: list[_Frame] = []
        for frame in frames:
            call, head, body, tail = frame
            if call is not None:
                if call.abandoned:
                    continue
                call.sent = True
            if len(body) >= BIG_PAYLOAD:
                big.append(frame)
            else:  # a tail comes only with a big body
                out += head
                out += body
        chunks: list[bytes | bytearray | memoryview] = []
        for _, head, body, tail in big:
            out += head
            chunks.append(out)
            chunks.append(body)
            out = bytearray(tail)
        if out:
            chunks.append(out)
        return chunks

    # -- receiving ------------------------------------------------------------------------------

    @property
    def read_size(self) -> int:
        """How many bytes to ask for in the next read: the rest of the frame being read, within
        bounds."""
        return min(max(self._decoder.bytes_wanted, _MIN_READ), _MAX_READ)

    def receive_buffer(self) -> memoryview | None:
        """Where the rest of a large frame goes, for a reader that can receive into memory (then
        report with `received_into`); ``None`` when no large frame is being read."""
        return self._decoder.large_frame_view()

    def received_into(self, count: int) -> None:
        """Record that ``count`` bytes were written at the start of `receive_buffer()`."""
        self._decoder.large_frame_filled(count)

    def _decode(self, out: list[Event]) -> None:
        """The events: each `Call` the sidecar answered, `HostCall` to run, `HostCancel`,
        `HostLog`, `GOING_AWAY` and `SIDECAR_DRAINED`. See the class docstring for abandoned
        calls and what raises."""
        calls = self._calls
        for payload in self._decoder.payloads():
            if type(payload) is tuple:  # an item, with its frame's length
                self._item(payload[0], payload[1], out)
                continue
            # A reply, [1, msgid, error, result], is most of what arrives: it is taken apart
            # here, without a Response object. parse_message takes everything else, and says
            # what is wrong with a reply that is not well formed.
            if (
                type(payload) is list
                and len(payload) == 4
                and payload[0] == RESPONSE
                and type(payload[0]) is int
            ):
                _, msgid, error, result = payload
                if type(msgid) is not int or not (error is None or is_error_map(error)):
                    raise parse_error(payload)
                call = calls.pop(msgid, None)
                if call is None or not call.sent:  # the protocol is beyond use after this
                    raise ProtocolError(
                        "unknown_msgid", f"the sidecar answered msgid {msgid}, which is not in flight"
                    )
                call.error = error
                call.result = result
                if type(call) is StreamCall:
                    call.ended = True
                out.append(call)
                continue
            message = parse_message(payload)
            if type(message) is Request:
                if (host_call := self._host_call(message)) is not None:
                    out.append(host_call)
            elif type(message) is Notification:
                if message.method == GOAWAY:
                    self._going_away = True
                    out.append(GOING_AWAY)
                elif message.method == DRAINED:
                    # Only after $goaway (section 2): a stray one would have the calls in flight
                    # sent elsewhere as never run, though they may have run.
                    if self._going_away:
                        out.append(SIDECAR_DRAINED)
                elif message.method == PING:
                    token = message.params
                    if type(token) is int and 0 <= token < 2**64:
                        self._queue_answer(self._encoder.pong(token))
                elif not self.max_host_calls:
                    pass
                elif message.method == CANCEL:
                    msgid = message.params
                    if type(msgid) is int and msgid in self._host_calls:
                        out.append(HostCancel(msgid))
                elif message.method == LOG:
                    out.append(_host_log(message.params))
        if self._decoder.pending_error is not None:
            raise self._decoder.pending_error

    def _item(self, length: int, payload: Any, out: list[Event]) -> None:
        """Take an item of ``length`` bytes into its stream's buffer; raise `ProtocolError` for
        one that no stream of this side awaits, or that its credit did not allow."""
        if type(payload) is not list or len(payload) != 3 or type(payload[1]) is not int:
            raise parse_error(payload)
        msgid = payload[1]
        stream = self._calls.get(msgid)
        if stream is None or not stream.sent:
            raise ProtocolError(
                "unknown_msgid", f"the sidecar sent an item for msgid {msgid}, which is not in flight"
            )
        if type(stream) is not StreamCall:
            raise ProtocolError(
                "bad_message", f"the sidecar sent an item for msgid {msgid}, a call and not a stream"
            )
        if stream.abandoned:
            return  # on its way before the $cancel
        if stream.credit <= 0:
            raise ProtocolError(
                "bad_message",
                f"the sidecar sent an item of stream {msgid} ({stream.method}) past its credit",
            )
        stream.credit -= length
        items = stream.items
        if not items and stream.waiter is not None:
            out.append(stream.arrived)
        items.append(payload[2])
        stream.sizes.append(length)

    def _host_call(self, request: Request) -> HostCall | None:
        if not self.max_host_calls:
            raise ProtocolError(
                "bad_message", "the sidecar sent a request, and this client announced no max_host_calls"
            )
        if request.msgid in self._host_calls:
            raise ProtocolError(
                "bad_message", f"the sidecar reused msgid {request.msgid} of a running host call"
            )
        if len(self._host_calls) >= self.max_host_calls:
            self._queue_response(
                request.msgid,
                {"type": "busy", "message": f"{self.max_host_calls} host calls are running already"},
                None,
            )
            return None
        self._host_calls.add(request.msgid)
        meta = request.meta
        timeout = None if meta is None else meta.get("timeout")
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout != timeout:
            timeout = None  # not a number, or NaN: no deadline (section 2)
        return HostCall(request.msgid, request.method, request.params, timeout, request_metadata(meta))

    def send_response(self, msgid: int, error: dict[str, Any] | None, result: Any = None) -> None:
        """Answer the host call ``msgid``. A result msgpack cannot carry is answered ``bad_reply``,
        one larger than the sidecar accepts ``too_large``. Answering a host call that is not
        running (or a closed protocol) does nothing."""
        if msgid not in self._host_calls or self.closed:
            return
        self._host_calls.discard(msgid)
        self._queue_response(msgid, error, result)

    def _queue_response(self, msgid: int, error: dict[str, Any] | None, result: Any) -> None:
        try:
            payload = self._encoder.response(msgid, error, result)
        except (TypeError, ValueError, OverflowError) as exc:
            error = {"type": "bad_reply", "message": f"msgpack cannot carry the result: {exc}"}
            payload = self._encoder.response(msgid, error, None)
        if len(payload) > self.max_request:
            error = {
                "type": "too_large",
                "message": f"the result is {len(payload)} bytes encoded; the sidecar accepts {self.max_request}",
            }
            payload = self._encoder.response(msgid, error, None)
        self._queue_answer(payload)

    def _queue_answer(self, payload: bytes) -> None:
        self._answer_bytes += len(payload)
        self._outgoing.append((None, frame_header(len(payload)), payload, b""))

    def take_answer_bytes(self) -> int:
        """How many bytes of answers (to host calls, and ``$pong``) were queued since the last
        call: the I/O layer counts them as unsent until it has written what `data_to_send`
        handed out, and stops reading while they are too many (a peer that sends host calls and
        never reads the answers must not grow the client without limit)."""
        count, self._answer_bytes = self._answer_bytes, 0
        return count

    @property
    def host_calls(self) -> int:
        """Host calls running: received, not yet answered."""
        return len(self._host_calls)

    # -- the end --------------------------------------------------------------------------------

    def _forget(self) -> None:
        self._host_calls.clear()
        self._outgoing.clear()
        self._room = 0


def _unsendable(method: str, exc: Exception) -> Exception:
    """The error for an argument msgpack cannot carry: of the same kind, naming the call."""
    kind = (
        TypeError
        if isinstance(exc, TypeError)
        else OverflowError
        if isinstance(exc, OverflowError)
        else ValueError
    )
    return kind(
        f"{method}: the argument cannot be sent: {exc} (docs/protocol.md, section 3, lists the types "
        "that go over the wire)"
    )


def _host_log(record: Any) -> HostLog:
    """A `HostLog` from the params of ``$log``; a record of the wrong shape is logged as what it
    is rather than failing the connection (it is only a log line)."""
    if type(record) is not dict:
        return HostLog(0, "", f"(a $log record that is not a map: {short_repr(record)})", None, None)
    level = record.get("level")
    logger = record.get("logger")
    message = record.get("message")
    attrs = record.get("attrs")
    return HostLog(
        level if type(level) is int else 0,
        logger if type(logger) is str else "",
        message if type(message) is str else short_repr(message),
        record.get("time"),
        attrs if type(attrs) is dict else None,
    )
