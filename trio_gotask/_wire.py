"""The wire format, free of I/O (docs/protocol.md): frames, messages, the handshake line.

`Encoder` turns calls into frame payloads; `Decoder` is fed bytes with `receive_data()` and hands
back messages with `next_message()`. Neither knows about sockets or Trio, so the golden vectors and
property tests drive them directly.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from ._errors import ProtocolError

PROTOCOL_VERSION: Final = 2
DEFAULT_MAX_FRAME_SIZE: Final = 64 * 1024 * 1024
MIN_FRAME_SIZE: Final = 1024
"""The smallest frame limit a peer may set or announce: every error reply fits in it."""
HANDSHAKE_MARKER: Final = "gotask"
MAX_HANDSHAKE_LINE: Final = 4096
LAUNCH_COOKIE_KEY: Final = "GOTASK_MAGIC_COOKIE"
LAUNCH_COOKIE_VALUE: Final = "d3a1c2b7e6f54a09"

REQUEST: Final = 0
RESPONSE: Final = 1
NOTIFICATION: Final = 2
ITEM: Final = 3
CANCEL: Final = "$cancel"
AUTH: Final = "$auth"
HELLO: Final = "$hello"
REFUSED: Final = "$refused"
LOG: Final = "$log"
GOAWAY: Final = "$goaway"
DRAINED: Final = "$drained"
PING: Final = "$ping"
PONG: Final = "$pong"
CREDIT: Final = "$credit"
MAX_MSGID: Final = 2**32 - 1
METADATA: Final = "metadata"
"""The meta key of a request's application metadata (section 2)."""

_HEADER = struct.Struct(">I")
_SLICE_BELOW = 16 * 1024
SPARE_LIMIT: Final = 32 << 20
"""The largest receive buffer a connection keeps for its next large frame."""
LARGE_FRAME_READ: Final = 4 << 20
"""How far the buffer of a large frame grows ahead of the bytes received, for a read into it."""
_ZEROS: Final = bytes(LARGE_FRAME_READ)  # allocated zeroed, so its pages cost nothing until read
_UNICODE_ERRORS = "surrogateescape"


# Plain slotted dataclasses, not frozen ones: a frozen dataclass's __init__ costs several times
# more, and a Response is built for every reply.
@dataclass(slots=True)
class Request:
    msgid: int
    method: str
    params: Any
    meta: dict[str, Any] | None


@dataclass(slots=True)
class Response:
    msgid: int
    error: dict[str, Any] | None
    result: Any


@dataclass(slots=True)
class Notification:
    method: str
    params: Any


@dataclass(slots=True)
class Item:
    """One item of a stream (section 2, "Streams")."""

    msgid: int
    item: Any


Message = Request | Response | Notification | Item


@dataclass(frozen=True)
class Hello:
    """What a sidecar announces in its ``$hello``, the first frame of every connection."""

    version: int
    max_frame_size: int
    """The largest frame it accepts: requests must not be larger."""
    max_inflight: int
    """The most calls it runs at once on the connection: a client sends no more."""
    ping: bool = False
    """Whether it answers ``$ping`` (keepalive); older sidecars do not say so, and are not asked."""
    streams: bool = False
    """Whether it serves streams; a client opens none on a sidecar that does not say so."""


def parse_hello(params: Any) -> Hello:
    """Check the params of a sidecar's ``$hello``; raise `ProtocolError` (``handshake``)."""
    if type(params) is not dict:
        raise _bad("$hello params must be a map", params, code="handshake")
    version = params.get("version")
    if version != PROTOCOL_VERSION or type(version) is not int:
        raise ProtocolError(
            "handshake",
            f"the sidecar speaks gotask protocol version {version!r}; this client speaks version "
            f"{PROTOCOL_VERSION}: rebuild the sidecar with a matching gotask Go package",
        )
    limits = []
    for key, low in (("max_frame_size", MIN_FRAME_SIZE), ("max_inflight", 1)):
        value = params.get(key)
        if type(value) is not int or value < low:
            raise _bad(f"$hello {key} must be an integer of at least {low}", params, code="handshake")
        limits.append(value)
    return Hello(version, limits[0], limits[1], params.get("ping") is True, params.get("streams") is True)


def frame_header(length: int) -> bytes:
    """The four bytes that precede a payload of ``length`` bytes."""
    return _HEADER.pack(length)


_BINARY: Final = (bytes, bytearray)
_LARGE_BINARY: Final = 64 * 1024
LARGE_BYTES: Final = _LARGE_BINARY
"""`bytes` params this large are sent without a copy (`Encoder.request_around`)."""
_BIN32: Final = struct.Struct(">BI")


def _packer(**options: Any) -> msgpack.Packer:
    return msgpack.Packer(use_bin_type=True, datetime=True, unicode_errors=_UNICODE_ERRORS, **options)


class Encoder:
    """Encodes messages into frame payloads (without the length header).

    Raises `TypeError` or `ValueError` for a value the type mapping does not cover (a set, a naive
    datetime) and `OverflowError` for an integer outside 64 bits, before anything is sent.
    """

    def __init__(self) -> None:
        self._packer = _packer()

    def request(
        self,
        msgid: int,
        method: str,
        params: Any,
        timeout: float | None = None,
        metadata: dict[str, str] | None = None,
    ) -> bytes | memoryview:
        """The payload of a request; a view of a buffer of its own when ``params`` is large binary.

        ``metadata``, the call's application metadata (section 2), is sent when it has entries;
        the caller has checked that its keys and values are strings."""
        meta = _meta(timeout, metadata) if metadata else None if timeout is None else {"timeout": timeout}
        message = [REQUEST, msgid, method, params, meta]
        if type(params) in _BINARY and len(params) >= _LARGE_BINARY:
            # Packed into a buffer of its final size (docs/performance.md, "Payload sizes").
            packer = _packer(autoreset=False, buf_size=len(params) + 4 * len(method) + 64)
            packer.pack(message)
            return packer.getbuffer()  # type: ignore[no-any-return]
        return self._packer.pack(message)  # type: ignore[no-any-return]

    def request_around(
        self,
        msgid: int,
        method: str,
        size: int,
        timeout: float | None = None,
        metadata: dict[str, str] | None = None,
    ) -> tuple[bytes, bytes]:
        """What goes before and after ``size`` bytes of `bytes` params in a request's payload: the
        params are sent from the caller's own object, never copied (the payload is the three
        joined). For ``size`` of at least 64 KiB, so that the params are a msgpack bin 32."""
        packer = self._packer
        head = packer.pack_array_header(5) + packer.pack(REQUEST) + packer.pack(msgid) + packer.pack(method)
        meta = _meta(timeout, metadata) if metadata else None if timeout is None else {"timeout": timeout}
        tail = packer.pack(meta)
        return head + _BIN32.pack(0xC6, size), tail

    def stream_request(
        self,
        msgid: int,
        method: str,
        params: Any,
        timeout: float | None,
        window: int,
        metadata: dict[str, str] | None = None,
    ) -> bytes:
        """The payload of a request that opens a stream with ``window`` bytes of credit, and
        ``metadata`` as `request` sends it."""
        meta: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        meta["stream"] = window
        if metadata:
            meta[METADATA] = metadata
        return self._packer.pack([REQUEST, msgid, method, params, meta])  # type: ignore[no-any-return]

    def credit(self, msgid: int, amount: int) -> bytes:
        return self._packer.pack([NOTIFICATION, CREDIT, [msgid, amount]])  # type: ignore[no-any-return]

    def auth(self, secret: str) -> bytes:
        return self._packer.pack([NOTIFICATION, AUTH, secret])  # type: ignore[no-any-return]

    def cancel(self, msgid: int) -> bytes:
        return self._packer.pack([NOTIFICATION, CANCEL, msgid])  # type: ignore[no-any-return]

    def hello(self, max_frame_size: int, max_host_calls: int = 0) -> bytes:
        """The client's ``$hello``: the largest frame it accepts, which bounds the replies, how
        many host calls it runs at once (announced only when it takes any), and that it answers
        ``$ping``."""
        params: dict[str, Any] = {"version": PROTOCOL_VERSION, "max_frame_size": max_frame_size}
        if max_host_calls:
            params["max_host_calls"] = max_host_calls
        params["ping"] = True
        return self._packer.pack([NOTIFICATION, HELLO, params])  # type: ignore[no-any-return]

    def ping(self, token: int) -> bytes:
        return self._packer.pack([NOTIFICATION, PING, token])  # type: ignore[no-any-return]

    def pong(self, token: int) -> bytes:
        return self._packer.pack([NOTIFICATION, PONG, token])  # type: ignore[no-any-return]

    def response(self, msgid: int, error: dict[str, Any] | None, result: Any) -> bytes:
        """The payload of the client's response to a host call; raises like `request` for a
        result msgpack cannot carry."""
        return self._packer.pack([RESPONSE, msgid, error, result])  # type: ignore[no-any-return]


def _meta(timeout: float | None, metadata: dict[str, str]) -> dict[str, Any]:
    """A request's meta map with ``metadata``: its keys in the order of section 2."""
    if timeout is None:
        return {METADATA: metadata}
    return {"timeout": timeout, METADATA: metadata}


def request_metadata(meta: dict[str, Any] | None) -> dict[str, str]:
    """The application metadata in a received request's ``meta``: the ``"metadata"`` map's
    entries whose key and value are strings (section 2 ignores the others, and a value that is
    not a map); empty when there are none."""
    if meta is None:
        return {}
    metadata = meta.get(METADATA)
    if type(metadata) is not dict:
        return {}
    for key, value in metadata.items():
        if type(key) is not str or type(value) is not str:
            return {k: v for k, v in metadata.items() if type(k) is str and type(v) is str}
    return metadata


def decode_value(data: bytes | bytearray | memoryview) -> Any:
    """Decode exactly one msgpack value, raising `ProtocolError` (``bad_msgpack``) otherwise."""
    try:
        return msgpack.unpackb(data, timestamp=3, **_UNPACK_OPTIONS)
    except Exception as exc:
        raise ProtocolError("bad_msgpack", f"frame is not one msgpack value: {exc}") from exc


def _decode_payload(data: bytes | bytearray | memoryview) -> Any:
    """`decode_value`, except that a whole response this client cannot represent becomes a
    ``bad_reply`` error response, failing its call and not the connection."""
    try:
        return msgpack.unpackb(
            data, raw=False, strict_map_key=False, timestamp=3, unicode_errors=_UNICODE_ERRORS
        )
    except Exception as exc:
        return _undecodable(bytes(data), exc)


def _bad(why: str, obj: Any, *, code: str = "bad_message") -> ProtocolError:
    return ProtocolError(code, f"{why}: {short_repr(obj)}")


_CONTAINERS: Final[dict[type, tuple[str, str]]] = {list: ("[", "]"), tuple: ("(", ")"), dict: ("{", "}")}
_SEQUENCES: Final = (str, bytes, bytearray)


def short_repr(value: Any, limit: int = 200) -> str:
    """``repr(value)`` cut after ``limit`` characters, at a cost bounded by ``limit`` whatever
    ``value`` holds: a frame's worth of bytes, or containers nested a thousand deep (whose
    ``repr`` would raise `RecursionError`) are shown as far as the limit reaches."""
    out: list[str] = []
    _repr_into(value, out, limit + 1, 0)
    text = "".join(out)
    return text if len(text) <= limit else text[:limit] + "..."


def _repr_into(value: Any, out: list[str], room: int, depth: int) -> int:
    """Append the start of ``repr(value)`` to ``out``, about ``room`` characters at most (fewer
    than 1: nothing); return the room left."""
    if room <= 0:
        return room
    kind = type(value)
    brackets = _CONTAINERS.get(kind)
    if brackets is not None:
        opening, closing = brackets
        if depth >= 8:
            out.append(opening + "..." + closing)
            return room - 5
        out.append(opening)
        room -= 1
        first = True
        for item in value.items() if kind is dict else value:
            if room <= 0:
                break
            if not first:
                out.append(", ")
                room -= 2
            first = False
            if kind is dict:
                room = _repr_into(item[0], out, room, depth + 1)
                out.append(": ")
                room = _repr_into(item[1], out, room - 2, depth + 1)
            else:
                room = _repr_into(item, out, room, depth + 1)
        if kind is tuple and len(value) == 1:
            out.append(",")
            room -= 1
        out.append(closing)
        return room - 1
    if kind in _SEQUENCES and len(value) > room:
        text = repr(value[:room])
    elif kind is msgpack.ExtType:
        text = f"ExtType(code={value.code}, data={value.data[:room]!r})"
    else:
        text = repr(value)
    out.append(text)
    return room - len(text)


_UNPACK_OPTIONS: Final[dict[str, Any]] = {
    "raw": False,
    "strict_map_key": False,
    "unicode_errors": _UNICODE_ERRORS,
}


def _undecodable(payload: bytes, exc: Exception) -> list[Any]:
    """For a payload that ``unpackb`` refused with ``exc``: if it is a well-formed response whose
    result Python cannot represent, that response with a ``bad_reply`` error (or its own error)
    in place of the result; else raise `ProtocolError`. The frame was whole, so only its call
    fails."""
    malformed = ProtocolError("bad_msgpack", f"frame is not one msgpack value: {exc}")
    if isinstance(exc, (msgpack.FormatError, msgpack.ExtraData)):
        raise malformed from exc
    unpacker = msgpack.Unpacker(timestamp=0, max_buffer_size=max(len(payload), 1), **_UNPACK_OPTIONS)
    unpacker.feed(payload)
    try:
        length = unpacker.read_array_header()
        kind, msgid = unpacker.unpack(), unpacker.unpack()
        if length == 3 and type(kind) is int and kind == ITEM and _is_msgid(msgid):
            raise ProtocolError(
                "bad_message",
                f"the sidecar sent an item of stream {msgid} that this client cannot decode "
                f"({_why_undecodable(exc)}); a gotask sidecar refuses such an item in Send",
            ) from exc
        if length != 4:
            raise malformed from exc
        error = unpacker.unpack()
    except ProtocolError:
        raise
    except Exception:
        raise malformed from exc
    if type(kind) is not int or kind != RESPONSE or not _is_msgid(msgid):
        raise malformed from exc
    if error is not None and not (
        type(error) is dict and type(error.get("type")) is str and type(error.get("message")) is str
    ):
        raise malformed from exc
    try:
        unpacker.skip()
    except msgpack.StackError:
        pass  # well formed as far as this decoder can nest; the reason says so
    except Exception:
        raise malformed from exc
    else:
        if unpacker.tell() != len(payload):
            raise malformed from exc
    if error is None:
        error = {
            "type": "bad_reply",
            "message": f"this client cannot decode the reply: {_why_undecodable(exc)}",
        }
    return [RESPONSE, msgid, error, None]


def _why_undecodable(exc: Exception) -> str:
    if isinstance(exc, msgpack.StackError):
        return "it nests arrays and maps deeper than the 1024 levels Python's msgpack decodes"
    if isinstance(exc, TypeError) and "unhashable" in str(exc):
        return f"it holds a map whose key is an array or a map, which a dict cannot use ({exc})"
    if isinstance(exc, (OverflowError, ValueError)) and ("date" in str(exc) or "year" in str(exc)):
        return f"it holds a timestamp outside the years 1-9999 that datetime holds ({exc})"
    return f"{type(exc).__name__}: {exc}"


def _is_msgid(v: Any) -> bool:
    return type(v) is int and 0 <= v <= MAX_MSGID


def is_error_map(error: Any) -> bool:
    """Whether ``error`` is an error map: a map with string ``type`` and ``message``."""
    return type(error) is dict and type(error.get("type")) is str and type(error.get("message")) is str


def parse_error(obj: Any) -> ProtocolError:
    """The error for a decoded payload that `parse_message` refuses."""
    try:
        parse_message(obj)
    except ProtocolError as exc:
        return exc
    raise ValueError(f"{obj!r:.200} is a valid message")


def parse_message(obj: Any) -> Message:
    """Check a decoded payload against the message shapes and return the message."""
    if type(obj) is not list or not obj:
        raise _bad("a message must be a non-empty array", obj)
    kind = obj[0]
    n = len(obj)
    if kind == RESPONSE and type(kind) is int:
        if n != 4:
            raise _bad("a response has 4 elements", obj)
        _, msgid, error, result = obj
        if not (type(msgid) is int and 0 <= msgid <= MAX_MSGID):
            raise _bad("msgid must be an unsigned 32-bit integer", obj)
        if error is not None and not is_error_map(error):
            raise _bad("error must be nil or a map with string type and message", obj)
        return Response(msgid, error, result)
    if kind == REQUEST and type(kind) is int:
        if n not in (4, 5):
            raise _bad("a request has 5 elements (4 without meta)", obj)
        msgid, method, params = obj[1], obj[2], obj[3]
        meta = obj[4] if n == 5 else None
        if not _is_msgid(msgid):
            raise _bad("msgid must be an unsigned 32-bit integer", obj)
        if type(method) is not str:
            raise _bad("method must be a string", obj)
        if meta is not None and type(meta) is not dict:
            raise _bad("meta must be a map or nil", obj)
        return Request(msgid, method, params, meta)
    if kind == NOTIFICATION and type(kind) is int:
        if n != 3:
            raise _bad("a notification has 3 elements", obj)
        if type(obj[1]) is not str:
            raise _bad("method must be a string", obj)
        return Notification(obj[1], obj[2])
    if kind == ITEM and type(kind) is int:
        if n != 3:
            raise _bad("an item has 3 elements", obj)
        if not _is_msgid(obj[1]):
            raise _bad("msgid must be an unsigned 32-bit integer", obj)
        return Item(obj[1], obj[2])
    raise _bad("unknown message type", obj)


class Decoder:
    """Splits a byte stream into frames and frames into messages.

    Feed it with `receive_data()`, then call `next_message()` until it returns ``None`` (more bytes
    needed). Call `receive_eof()` when the stream ends. Any protocol violation raises
    `ProtocolError`; after that the decoder must not be used again.

    A frame of at least ``large_frame`` bytes gets a buffer of its own: `receive_data()` copies
    into it, or a reader that can receive into memory fills the view from `large_frame_view()`
    and reports with `large_frame_filled()`. A big payload is then copied once instead of being
    grown chunk by chunk. The buffer grows with what arrives, never ahead of it by more than a
    read (`LARGE_FRAME_READ`), whatever length the frame's header declares. Decoding copies every
    value out of it, so the buffer of a frame of up to ``spare_limit`` bytes is kept for the next
    large frame: a fresh one costs a page fault every 4 KiB as it fills.
    """

    def __init__(
        self,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        *,
        large_frame: int = 1 << 18,
        spare_limit: int = SPARE_LIMIT,
    ) -> None:
        self.max_frame_size = max_frame_size
        self._large_frame = large_frame
        self._spare_limit = spare_limit
        self._buf = bytearray()
        self._pos = 0
        self._large: bytearray | None = None
        """The buffer of the large frame being received (the spare, or one of its own)."""
        self._large_size = 0
        """The payload length of that frame: the buffer holds at most this much of it."""
        self._large_filled = 0
        self._spare: bytearray | None = None
        self.pending_error: ProtocolError | None = None
        """A bad frame met after good ones that `payloads` returned: the next call raises it."""

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        large = self._large
        if large is not None:
            filled = self._large_filled
            take = min(len(data), self._large_size - filled)
            _put(large, filled, data if take == len(data) else memoryview(data)[:take])
            self._large_filled = filled + take
            if take == len(data):
                return
            data = memoryview(data)[take:]
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def large_frame_view(self) -> memoryview | None:
        """Where the next bytes of the large frame being read go, or ``None`` if none is being
        read: at most `LARGE_FRAME_READ` bytes past those received. Release it before the
        decoder is used again."""
        large = self._large
        if large is None:
            return None
        filled = self._large_filled
        if len(large) == filled:  # grow by a read's worth (zeros from pages never written)
            large += memoryview(_ZEROS)[: min(LARGE_FRAME_READ, self._large_size - filled)]
        return memoryview(large)[filled : min(len(large), self._large_size)]

    def large_frame_filled(self, count: int) -> None:
        """Record that ``count`` bytes were written at the start of `large_frame_view()`."""
        assert self._large is not None
        self._large_filled += count

    def receive_eof(self) -> None:
        """Raise `ProtocolError` (``truncated``) if the stream ended inside a frame."""
        left = len(self._buf) - self._pos
        if self._large is not None:
            left += 4 + self._large_filled
        if left:
            raise ProtocolError("truncated", f"stream ended inside a frame ({left} bytes left over)")

    @property
    def between_frames(self) -> bool:
        """Whether every byte received so far belongs to a whole frame (so none is half read)."""
        return self._large is None and self._pos == len(self._buf)

    @property
    def bytes_wanted(self) -> int:
        """How many more bytes would complete the frame being read (4 when between frames)."""
        if self._large is not None:
            return self._large_size - self._large_filled
        left = len(self._buf) - self._pos
        if left < 4:
            return 4 - left
        length: int = _HEADER.unpack_from(self._buf, self._pos)[0]
        return max(0, 4 + length - left)

    @property
    def buffered(self) -> int:
        """The bytes this decoder holds: what it received and has not decoded, the buffer of a
        large frame, and the spare kept for the next one."""
        held = len(self._buf)
        if self._large is not None and self._large is not self._spare:
            held += len(self._large)
        if self._spare is not None:
            held += len(self._spare)
        return held

    def next_payload(self) -> Any | None:
        """Return the next decoded payload, or ``None`` when no whole frame is left; see
        `payloads`."""
        got = self.payloads(1)
        return got[0] if got else None

    def payloads(self, most: int = 0) -> list[Any]:
        """Decode the whole frames received so far, in order, up to ``most`` of them (0: all).

        A payload is not yet checked against the message shapes, and one that starts like an item
        (``[3, ...``) comes as ``(length, payload)``, with its frame's length; a response whose result cannot
        be represented comes with a ``bad_reply`` error instead. A connection's reader takes
        every frame a read completed in one call: the per-frame work is this loop's. A bad frame
        raises `ProtocolError`, unless frames before it were decoded: they are returned, and the
        error waits in `pending_error` for the next call.
        """
        if self.pending_error is not None:
            raise self.pending_error
        out: list[Any] = []
        try:
            self._decode_into(out, most)
        except ProtocolError as exc:
            if not out:
                raise
            self.pending_error = exc
        return out

    def _decode_into(self, out: list[Any], most: int) -> None:
        large = self._large
        if large is not None:
            size = self._large_size
            if self._large_filled < size:
                return
            self._large = None
            with memoryview(large) as view, view[:size] as payload:
                decoded = _decode_payload(payload)
            out.append((size, decoded) if large[0] == 0x93 and large[1] == ITEM else decoded)
            if most == 1:  # the greeting reads one frame at a time
                return
        buf = self._buf
        pos = self._pos
        size = len(buf)
        limit = self.max_frame_size
        unpack = _HEADER.unpack_from
        while size - pos >= 4:
            (length,) = unpack(buf, pos)
            if not 0 < length <= limit:
                self._pos = pos
                if length == 0:
                    raise ProtocolError("empty_frame", "received a frame of length 0")
                raise ProtocolError("too_large", f"received a frame of {length} bytes; the limit is {limit}")
            end = pos + 4 + length
            if size < end:
                if length >= self._large_frame:
                    # What has arrived moves to the frame's own buffer, where the rest will go.
                    if length <= self._spare_limit:
                        if self._spare is None:
                            self._spare = bytearray()
                        large = self._spare
                    else:
                        large = bytearray()
                    with memoryview(buf) as view, view[pos + 4 :] as arrived:
                        _put(large, 0, arrived)
                        self._large_filled = len(arrived)
                    self._large = large
                    self._large_size = length
                    buf.clear()  # all of it was taken
                    pos = 0
                break
            self._pos = pos  # where a bad frame's error leaves it
            if length < _SLICE_BELOW:
                decoded = _decode_payload(buf[pos + 4 : end])  # a copy, but cheaper than a view
            else:
                with memoryview(buf) as view, view[pos + 4 : end] as payload:
                    decoded = _decode_payload(payload)
            # An item, [3, ...], comes out with its length: a stream's credit counts it.
            out.append((length, decoded) if buf[pos + 4] == 0x93 and buf[pos + 5] == ITEM else decoded)
            pos = end
            if len(out) == most:
                break
        self._pos = pos

    def next_message(self) -> Message | None:
        obj = self.next_payload()
        if obj is None:
            return None
        if type(obj) is tuple:
            obj = obj[1]
        return parse_message(obj)

    def unconsumed(self) -> bytes:
        """The bytes received past the last whole frame (before a large frame began)."""
        assert self._large is None
        return bytes(self._buf[self._pos :])


def _put(buffer: bytearray, at: int, data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` into ``buffer`` at ``at``, growing it only as far as ``data`` reaches."""
    end = at + len(data)
    if end <= len(buffer):
        buffer[at:end] = data
    else:
        buffer[at:] = data


def parse_handshake(line: bytes, transport: str) -> str:
    """Check the sidecar's handshake line and return the address it names.

    Raises `ProtocolError` (code ``handshake``) with a message a user can act on.
    """
    text = line.decode("utf-8", "replace").rstrip("\r\n")
    parts = text.split("|", 3)
    if len(parts) != 4 or parts[0] != HANDSHAKE_MARKER:
        raise ProtocolError(
            "handshake",
            f"expected the handshake line 'gotask|{PROTOCOL_VERSION}|...' first on the sidecar's "
            f"stdout, got {text[:200]!r}; is this a gotask sidecar, and does it print nothing "
            "else to stdout?",
        )
    _, version, got_transport, address = parts
    if version != str(PROTOCOL_VERSION):
        raise ProtocolError(
            "handshake",
            f"the sidecar speaks gotask protocol version {version}; this client speaks version "
            f"{PROTOCOL_VERSION}: rebuild the sidecar with a matching gotask Go package",
        )
    if got_transport != transport:
        raise ProtocolError(
            "handshake", f"asked the sidecar for transport {transport!r}, it reports {got_transport!r}"
        )
    return address
