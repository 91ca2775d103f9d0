"""GoTask's wire format, free of I/O: goridge v2 frames carrying net/rpc calls
(docs/goridge.md).

A frame is a 17-byte prefix (flags, then the payload's length as uint64 little-endian and again as
uint64 big-endian) and the payload. A call is two frames each way: a header frame (control|raw:
the method name, then the sequence number as uint64 little-endian) and a body frame (JSON; raw
bytes; an error message; or empty for nil). `FrameDecoder` splits a byte stream into frames;
`encode_call` and `Replies` turn calls into bytes and frames into replies.

A goridge server reads each 17-byte prefix with a single read, so a client must write a prefix in
the same write as what precedes it: `encode_call` returns a call's two frames as one buffer. It
reads a body with a buffer sized for the whole body, so after a short read it can take the next
frame's bytes as the body's and freeze: a client keeps one call in flight on a connection unless
told otherwise (``max_inflight``; docs/goridge.md, "One call per connection").
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass
from typing import Any, Final, final

from ._errors import GoTaskError, ProtocolError
from ._protocol import Call, CallTable, Event

EMPTY: Final = 2
RAW: Final = 4
ERROR: Final = 8
CONTROL: Final = 16
PREFIX_SIZE: Final = 17
MAX_SEQ: Final = 2**64 - 1
NO_METADATA_GORIDGE: Final = (
    'GoTask\'s wire format (protocol="goridge") carries no metadata: an interceptor set '
    "CallInfo.metadata entries that this call cannot send. Leave metadata empty for this GoTask, "
    "or use a sidecar built with trio-gotask's Go package (the default protocol)"
)

_LITTLE = struct.Struct("<BQ")
_BIG = struct.Struct(">Q")
_SEQ = struct.Struct("<Q")


def frame(flags: int, payload: bytes = b"") -> bytes:
    """One frame: the prefix for ``payload`` with ``flags``, then ``payload``."""
    return _LITTLE.pack(flags, len(payload)) + _BIG.pack(len(payload)) + payload


@dataclass(frozen=True, slots=True)
class Frame:
    flags: int
    payload: bytes


class FrameDecoder:
    """Splits a byte stream into `Frame` objects. Feed it with `receive_data`, take frames with
    `next_frame` until it returns ``None``. A prefix whose two lengths differ, or a payload larger
    than ``max_frame_size``, raises `ProtocolError`; the decoder must not be used after that."""

    def __init__(self, max_frame_size: int) -> None:
        self.max_frame_size = max_frame_size
        self._buf = bytearray()
        self._pos = 0
        """Where the next frame starts in ``_buf``: the bytes before it are decoded."""

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        """The bytes this decoder holds."""
        return len(self._buf)

    def next_frame(self) -> Frame | None:
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < PREFIX_SIZE:
            return None
        flags, size = _LITTLE.unpack_from(buf, pos)
        (again,) = _BIG.unpack_from(buf, pos + 9)
        if size != again:
            raise ProtocolError(
                "bad_prefix",
                f"a goridge prefix says {size} bytes little-endian and {again} big-endian: the stream is corrupt",
            )
        if flags & EMPTY:
            size = 0  # goridge ignores the length of an empty frame
        if size > self.max_frame_size:
            raise ProtocolError(
                "too_large", f"received a frame of {size} bytes; the limit is {self.max_frame_size}"
            )
        start = pos + PREFIX_SIZE
        end = start + size
        if len(buf) < end:
            return None
        with memoryview(buf) as view:
            payload = bytes(view[start:end])
        self._pos = end
        return Frame(flags, payload)

    def receive_eof(self) -> None:
        """Raise `ProtocolError` (``truncated``) if the stream ended inside a frame."""
        left = len(self._buf) - self._pos
        if left:
            raise ProtocolError("truncated", f"stream ended inside a frame ({left} bytes left over)")


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")  # encoding/json's rule for []byte
    raise TypeError(f"JSON cannot carry {type(value).__name__}: {value!r:.100}")


def encode_call(method: str, seq: int, arg: Any) -> bytes:
    """A call's header and body frames, as one buffer. ``bytes`` go raw (for a Go ``*[]byte``
    argument), ``None`` as an empty frame, anything else as JSON (``bytes`` inside it as base64).
    Raises `TypeError` or `ValueError` for what JSON cannot carry."""
    header = frame(CONTROL | RAW, method.encode("utf-8") + _SEQ.pack(seq))
    if arg is None:
        body = frame(EMPTY)
    elif isinstance(arg, (bytes, bytearray, memoryview)):
        body = frame(RAW, bytes(arg))
    else:
        text = json.dumps(arg, default=_json_default, allow_nan=False, separators=(",", ":"))
        body = frame(0, text.encode("utf-8"))
    return header + body


@dataclass(frozen=True, slots=True)
class Reply:
    """A whole reply: its method and sequence number, and its result or its error, as the
    protocol's error map (``type`` ``error`` for a Go error, ``bad_reply`` for a body this client
    cannot decode: only that call fails)."""

    method: str
    seq: int
    result: Any
    error: dict[str, str] | None


class Replies:
    """Pairs the frames of replies: a header frame, then the body frame of the same call."""

    def __init__(self) -> None:
        self._header: tuple[str, int] | None = None

    def feed(self, received: Frame) -> Reply | None:
        """Take one frame; return a reply once its body arrived. Raises `ProtocolError` for frames
        out of order or of the wrong kind."""
        if self._header is None:
            if not (received.flags & CONTROL and received.flags & RAW) or len(received.payload) < 8:
                raise ProtocolError(
                    "bad_message", f"expected a reply's header frame, got flags {received.flags}"
                )
            method = received.payload[:-8].decode("utf-8", "replace")
            (seq,) = _SEQ.unpack_from(received.payload, len(received.payload) - 8)
            self._header = (method, seq)
            return None
        method, seq = self._header
        self._header = None
        if received.flags & CONTROL:
            raise ProtocolError("bad_message", "a header frame came where a reply's body was due")
        if received.flags & ERROR:
            return Reply(
                method, seq, None, {"type": "error", "message": received.payload.decode("utf-8", "replace")}
            )
        if received.flags & RAW:  # a *[]byte reply, b"" when empty: what GoTask's PHP client gets
            return Reply(method, seq, received.payload, None)
        if received.flags & EMPTY or not received.payload:
            return Reply(method, seq, None, None)
        try:
            return Reply(method, seq, json.loads(received.payload), None)
        except ValueError as exc:  # the frame is whole: only this call fails
            why = f"the reply is not JSON: {exc}"
        except RecursionError:
            why = "this client cannot decode the reply: it nests arrays and objects deeper than Python's json decodes"
        return Reply(method, seq, None, {"type": "bad_reply", "message": why})


@final
class GoridgeProtocol(CallTable):
    """The client side of one goridge connection, free of I/O: `ClientProtocol`'s counterpart for
    GoTask's format, with the same methods, so that a `Connection` runs either.

    Sequence numbers take the place of msgids. There is no way to cancel a call in Go: an
    abandoned call that was sent keeps its slot until its reply comes, and the reply is dropped.
    There is no greeting, no deadline on the wire, and no host calls.
    """

    def __init__(self, *, max_frame_size: int, max_inflight: int) -> None:
        self.max_request: Final = max_frame_size
        self.max_inflight: Final = max_inflight
        self._decoder = FrameDecoder(max_frame_size)
        super().__init__(self._decoder)
        self._replies = Replies()
        self._last_seq = -1
        self._outgoing: list[tuple[Call, bytes]] = []

    def send_request(
        self,
        method: str,
        arg: Any,
        timeout: float | None,
        owner: Any,
        metadata: dict[str, str] | None = None,
    ) -> Call:
        """Queue a call; ``timeout`` is not carried (the format has no deadlines). Raises
        `GoTaskError` for ``metadata`` with entries: the format has no place for it."""
        if metadata:
            raise GoTaskError(NO_METADATA_GORIDGE)
        if self.closed:
            raise RuntimeError("the protocol is closed")
        if len(self._calls) >= self.max_inflight:
            raise RuntimeError(f"no free slot: {self.max_inflight} calls are in flight already")
        seq = self._last_seq + 1 if self._last_seq < MAX_SEQ else 0
        data = encode_call(method, seq, arg)
        if len(data) > self.max_request + 2 * PREFIX_SIZE + len(method.encode()) + 8:
            raise ValueError(
                f"the request to {method} is {len(data)} bytes; the frame limit is {self.max_request}"
            )
        self._last_seq = seq
        call = Call(seq, method, owner)
        self._calls[seq] = call
        self._outgoing.append((call, data))
        return call

    # No _cancel: the format cannot tell Go, which runs the call to the end; its reply is dropped.

    @property
    def has_data_to_send(self) -> bool:
        return bool(self._outgoing)

    def data_to_send(self) -> list[bytes | bytearray | memoryview]:
        frames, self._outgoing = self._outgoing, []
        out = bytearray()
        for call, data in frames:
            if call.abandoned:
                continue
            call.sent = True
            out += data
        return [out] if out else []

    @property
    def read_size(self) -> int:
        return 64 * 1024

    def receive_buffer(self) -> memoryview | None:
        return None

    def received_into(self, count: int) -> None:
        raise AssertionError("goridge frames are read with receive_data")

    def _decode(self, out: list[Event]) -> None:
        """The calls answered."""
        while (received := self._decoder.next_frame()) is not None:
            reply = self._replies.feed(received)
            if reply is None:
                continue
            call = self._calls.pop(reply.seq, None)
            if call is None or not call.sent:
                raise ProtocolError(
                    "unknown_msgid", f"the sidecar answered sequence {reply.seq}, which is not in flight"
                )
            call.error = reply.error
            call.result = reply.result
            out.append(call)

    def send_response(self, msgid: int, error: dict[str, Any] | None, result: Any = None) -> None:
        raise AssertionError("goridge has no host calls")

    def take_answer_bytes(self) -> int:
        return 0  # no host calls: nothing is ever answered

    def _forget(self) -> None:
        self._outgoing.clear()
