"""Rewrite the golden vectors in this folder.

    python tests/vectors/generate.py

The definitions below are the source; the JSON files are what the Go and Python test suites read.
Encoding uses the reference `msgpack` package, and every vector is decoded back and compared before
it is written. See docs/protocol.md, section 6, for the JSON tags. A request vector about
application metadata also has ``"metadata"``: the map a receiver reads from it (`METADATA`).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import msgpack

HERE = Path(__file__).parent


class Map:
    """A map written with `$map` (any keys, order kept)."""

    def __init__(self, *items: tuple[Any, Any]) -> None:
        self.items = list(items)


class F32:
    def __init__(self, value: float) -> None:
        self.value = value


def to_python(v: Any) -> Any:
    if isinstance(v, Map):
        return {to_python(k): to_python(x) for k, x in v.items}
    if isinstance(v, F32):
        return struct.unpack(">f", struct.pack(">f", v.value))[0]
    if isinstance(v, dict):
        return {k: to_python(x) for k, x in v.items()}
    if isinstance(v, list):
        return [to_python(x) for x in v]
    return v


def to_json(v: Any) -> Any:
    if isinstance(v, Map):
        return {"$map": [[to_json(k), to_json(x)] for k, x in v.items]}
    if isinstance(v, F32):
        return {"$f32": v.value}
    if isinstance(v, bytes):
        return {"$bin": v.hex()}
    if isinstance(v, msgpack.Timestamp):
        return {"$ts": [v.seconds, v.nanoseconds]}
    if isinstance(v, float) and math.isinf(v):
        return {"$float": "inf" if v > 0 else "-inf"}
    if isinstance(v, dict):
        return {k: to_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [to_json(x) for x in v]
    return v


def pack(v: Any) -> bytes:
    data: bytes = msgpack.packb(to_python(v), use_bin_type=True)
    return data


def unpack(b: bytes) -> Any:
    return msgpack.unpackb(b, raw=False, strict_map_key=False)


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


TS = msgpack.Timestamp

# (name, value, canonical)
VALUES: list[tuple[str, Any, bool]] = [
    ("nil", None, True),
    ("true", True, True),
    ("false", False, True),
    ("int_zero", 0, True),
    ("int_fixpos_max", 127, True),
    ("int_fixneg_min", -32, True),
    ("uint8", 255, True),
    ("uint16", 65535, True),
    ("uint32", 4294967295, True),
    ("uint64_max", 2**64 - 1, True),
    ("int8_min", -128, True),
    ("int16_min", -32768, True),
    ("int32_min", -(2**31), True),
    ("int64_min", -(2**63), True),
    ("float64", 1.5, True),
    ("float64_negative_small", -0.1, True),
    ("float64_inf", math.inf, True),
    ("float64_neg_inf", -math.inf, True),
    ("float32", F32(0.25), False),
    ("str_empty", "", True),
    ("str_ascii", "hello", True),
    ("str_utf8", "héllo wörld ✓", True),
    ("str8", "x" * 40, True),
    ("str16", "y" * 300, True),
    ("bin_empty", b"", True),
    ("bin_small", b"\x00\x01\xfe\xff", True),
    ("bin16", bytes(range(256)) * 2, True),
    ("array_empty", [], True),
    ("array_mixed", [1, "two", None, True, 2.5, b"\x03"], True),
    ("array16", list(range(20)), True),
    ("array_nested", [[1, [2, [3]]], []], True),
    ("map_empty", {}, True),
    ("map_str_key", {"hello": "Reasno"}, True),
    ("map_str_keys_ordered", {"a": 1, "b": [True, None], "c": {"d": b"e"}}, False),
    ("map_int_key", Map((1, "one")), True),
    ("map_int_keys", Map((1, "one"), (-2, "minus two"), (300, "three hundred")), False),
    ("map16", {f"k{i:02d}": i for i in range(16)}, False),
    ("timestamp32", TS(1700000000, 0), True),
    ("timestamp64", TS(1700000000, 123456789), True),
    ("timestamp96_pre_epoch", TS(-1, 500000000), True),
    ("timestamp96_far_future", TS(2**34 + 5, 1), True),
]

_REQ_META = {"timeout": 0.25}
# (name, message, canonical)
MESSAGES: list[tuple[str, Any, bool]] = [
    ("request", [0, 1, "App.Hi", "Reasno", None], True),
    ("request_with_timeout", [0, 2, "App.Slow", 5000, _REQ_META], True),
    ("request_no_meta", [0, 3, "App.Hi", "Reasno"], True),
    ("request_msgid_max", [0, 2**32 - 1, "App.Echo", None, None], True),
    ("request_bytes_param", [0, 7, "App.Bytes", b"\x00\x01\x02", None], True),
    ("request_struct_param", [0, 8, "App.Add", {"a": 1, "b": 2}, None], False),
    ("request_unknown_meta_key", [0, 9, "App.Hi", "x", {"future": True}], True),
    ("response_result", [1, 1, None, {"hello": "Reasno"}], True),
    ("response_nil_result", [1, 5, None, None], True),
    ("response_error", [1, 4, {"type": "error", "message": "boom"}, None], False),
    (
        "response_panic",
        [1, 6, {"type": "panic", "message": "oops", "stack": "main.go:1"}, None],
        False,
    ),
    ("response_unknown_error_type", [1, 7, {"type": "teapot", "message": "short and stout"}, None], False),
    ("notification_cancel", [2, "$cancel", 42], True),
    (
        "notification_hello_sidecar",
        [
            2,
            "$hello",
            {"version": 2, "max_frame_size": 67108864, "max_inflight": 1024, "streams": True, "ping": True},
        ],
        False,  # a map of several keys: TestVectorHello checks the sidecar's own bytes
    ),
    (
        "notification_hello_sidecar_before_streams",
        [2, "$hello", {"version": 2, "max_frame_size": 67108864, "max_inflight": 1024, "ping": True}],
        False,  # an older sidecar's: a client opens no stream to it
    ),
    (
        "notification_hello_client",
        [2, "$hello", {"version": 2, "max_frame_size": 67108864, "ping": True}],
        False,
    ),
    ("notification_refused", [2, "$refused", "authentication failed: wrong secret"], True),
    ("notification_goaway", [2, "$goaway", "the sidecar is shutting down"], True),
    (
        "notification_drained",
        [2, "$drained", "the sidecar answered every call it ran; it runs no other"],
        True,
    ),
    (
        "notification_hello_client_host_calls",
        [2, "$hello", {"version": 2, "max_frame_size": 67108864, "max_host_calls": 64, "ping": True}],
        False,
    ),
    ("request_host_call", [0, 5, "Py.Upper", "reasno", {"timeout": 1.5}], True),
    ("response_host_call", [1, 5, None, "REASNO"], True),
    ("response_host_call_error", [1, 6, {"type": "error", "message": "ValueError: no"}, None], False),
    (
        "notification_log",
        [
            2,
            "$log",
            {"level": 4, "logger": "db", "message": "disk almost full", "time": None, "attrs": {"free": 3}},
        ],
        False,
    ),
    ("notification_ping", [2, "$ping", 7], True),
    ("notification_pong", [2, "$pong", 7], True),
    ("notification_unknown", [2, "$future", [1, 2]], True),
    # Streams (section 2, "Streams"): the request that opens one, its items, credit, its end.
    ("request_stream", [0, 10, "App.Count", 3, {"stream": 1048576}], True),
    ("request_stream_with_timeout", [0, 11, "App.Count", 3, {"timeout": 0.25, "stream": 65536}], True),
    ("item", [3, 10, 0], True),
    ("item_map", [3, 10, {"name": "a", "n": 1}], False),
    ("item_bytes", [3, 10, b"\x1f\x8b\x08"], True),
    ("notification_credit", [2, "$credit", [10, 32768]], True),
    ("response_stream_end", [1, 10, None, None], True),
    (
        "response_stream_error",
        [1, 10, {"type": "error", "message": "cursor died after 2 items"}, None],
        False,
    ),
    (
        "response_stream_mismatch",
        [1, 12, {"type": "stream_mismatch", "message": "App.Hi returns one reply: call it"}, None],
        False,
    ),
]

# Application metadata (section 2): a request's meta may carry "metadata", a map of strings. Each
# of these vectors sets "metadata" in its entry too: what a receiver reads from the request, its
# entries of other types (and a value that is not a map) ignored.
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
METADATA: list[tuple[str, Any, dict[str, str]]] = [
    (
        "request_metadata",
        [
            0,
            12,
            "App.Hi",
            "Reasno",
            {"timeout": 0.25, "metadata": {"traceparent": TRACEPARENT, "tenant": "acme"}},
        ],
        {"traceparent": TRACEPARENT, "tenant": "acme"},
    ),
    # A host call, as the sidecar sends it.
    (
        "request_host_metadata",
        [0, 6, "Py.Upper", "reasno", {"timeout": 1.5, "metadata": {"traceparent": TRACEPARENT}}],
        {"traceparent": TRACEPARENT},
    ),
    ("request_metadata_not_map", [0, 13, "App.Hi", "x", {"metadata": ["traceparent", TRACEPARENT]}], {}),
    (
        "request_metadata_entries_not_str",
        [0, 14, "App.Hi", "x", {"metadata": Map(("tenant", "acme"), ("retries", 3), (7, "seven"))}],
        {"tenant": "acme"},
    ),
]
MESSAGES += [(name, message, True) for name, message, _ in METADATA]

MAX = 64 * 1024 * 1024


def bad_msgpack_frames() -> list[tuple[str, bytes]]:
    return [
        ("bad_msgpack_reserved_byte", frame(b"\xc1")),
        ("bad_msgpack_truncated_object", frame(b"\x94\x00\x01")),
        ("bad_msgpack_trailing_bytes", frame(pack([1, 1, None, None]) + b"\x00")),
    ]


# (name, stream bytes, error code, max_frame_size or None)
def malformed() -> list[tuple[str, bytes, str, int | None]]:
    out: list[tuple[str, bytes, str, int | None]] = [
        ("too_large_4gib", b"\xff\xff\xff\xff", "too_large", None),
        ("too_large_one_over_default", struct.pack(">I", MAX + 1), "too_large", None),
        ("too_large_configured", frame(pack([1, 1, None, "x" * 20])), "too_large", 16),
        ("empty_frame", b"\x00\x00\x00\x00", "empty_frame", None),
        ("truncated_length", b"\x00\x00", "truncated", None),
        ("truncated_payload", b"\x00\x00\x00\x05\x94\x01", "truncated", None),
    ]
    out += [(n, b, "bad_msgpack", None) for n, b in bad_msgpack_frames()]
    bad_messages: list[tuple[str, Any]] = [
        ("not_an_array", {"type": 0}),
        ("an_integer", 7),
        ("empty_array", []),
        ("unknown_type", [3, 1, "x", None]),
        ("unknown_type_4", [4, 1, "x"]),
        ("item_too_short", [3, 1]),
        ("item_msgid_not_int", [3, "1", 5]),
        ("item_msgid_too_big", [3, 2**32, 5]),
        ("type_not_int", ["0", 1, "App.Hi", None, None]),
        ("request_too_short", [0, 1, "App.Hi"]),
        ("request_too_long", [0, 1, "App.Hi", None, None, None]),
        ("request_msgid_negative", [0, -1, "App.Hi", None, None]),
        ("request_msgid_too_big", [0, 2**32, "App.Hi", None, None]),
        ("request_msgid_not_int", [0, "1", "App.Hi", None, None]),
        ("request_method_not_str", [0, 1, b"App.Hi", None, None]),
        ("request_meta_not_map", [0, 1, "App.Hi", None, [1]]),
        ("response_too_short", [1, 1, None]),
        ("response_error_not_map", [1, 1, "boom", None]),
        ("response_error_missing_message", [1, 1, {"type": "error"}, None]),
        ("response_error_type_not_str", [1, 1, {"type": 1, "message": "m"}, None]),
        ("notification_too_long", [2, "$cancel", 1, 2]),
        ("notification_method_not_str", [2, 5, 1]),
    ]
    out += [(f"bad_message_{n}", frame(pack(m)), "bad_message", None) for n, m in bad_messages]
    return out


def goridge_frame(flags: int, payload: bytes) -> bytes:
    """GoTask's goridge v2 frame, from its byte layout: flags, the length as uint64 little-endian,
    the length again as uint64 big-endian, the payload."""
    n = len(payload)
    return bytes([flags]) + n.to_bytes(8, "little") + n.to_bytes(8, "big") + payload


def goridge_header(method: str, seq: int) -> bytes:
    return goridge_frame(16 | 4, method.encode() + seq.to_bytes(8, "little"))  # control | raw


# (name, what, hex, meaning): calls as the client sends them, replies as a GoTask sidecar sends them.
GORIDGE: list[tuple[str, str, bytes, Any]] = [
    (
        "call_app_hi",
        "call",
        goridge_header("App.Hi", 0) + goridge_frame(0, b'"Hyperf"'),
        ["App.Hi", 0, "Hyperf"],
    ),
    ("call_bytes_raw", "call", goridge_header("App.Bytes", 1) + goridge_frame(4, b"\x00\x01\x02"), None),
    ("call_nil", "call", goridge_header("App.Now", 2) + goridge_frame(2, b""), ["App.Now", 2, None]),
    (
        "call_map",
        "call",
        goridge_header("App.Add", 3) + goridge_frame(0, b'{"a":1,"b":2}'),
        ["App.Add", 3, {"a": 1, "b": 2}],
    ),
    (
        "reply_app_hi",
        "reply",
        goridge_header("App.Hi", 0) + goridge_frame(0, b'{"hello":"Hyperf"}'),
        {"method": "App.Hi", "seq": 0, "result": {"hello": "Hyperf"}, "error": None},
    ),
    ("reply_raw", "reply", goridge_header("App.Bytes", 1) + goridge_frame(4, b"\x02\x01"), None),
    (
        "reply_error",
        "reply",
        goridge_header("App.Fail", 2**40 + 5) + goridge_frame(8 | 4, b"boom"),
        {"method": "App.Fail", "seq": 2**40 + 5, "result": None, "error": "boom"},
    ),
    (
        "reply_empty",
        "reply",
        goridge_header("App.Nothing", 7) + goridge_frame(2, b""),
        {"method": "App.Nothing", "seq": 7, "result": None, "error": None},
    ),
    (
        "corrupt_prefix",
        "corrupt",
        bytes([0]) + (5).to_bytes(8, "little") + (6).to_bytes(8, "big") + b"12345",
        None,
    ),
]


def main() -> None:
    values = []
    for name, value, canonical in VALUES:
        # The Python encoder never produces float 32: write those bytes by hand.
        data = b"\xca" + struct.pack(">f", value.value) if isinstance(value, F32) else pack(value)
        assert unpack(data) == to_python(value), name
        values.append({"name": name, "hex": data.hex(), "value": to_json(value), "canonical": canonical})

    metadata = {name: read for name, _, read in METADATA}
    messages = []
    for name, msg, canonical in MESSAGES:
        data = frame(pack(msg))
        message = {"name": name, "hex": data.hex(), "message": to_json(msg), "canonical": canonical}
        if name in metadata:
            message["metadata"] = metadata[name]
        messages.append(message)

    bad = []
    for name, data, code, max_size in malformed():
        entry: dict[str, Any] = {"name": name, "hex": data.hex(), "error": code}
        if max_size is not None:
            entry["max_frame_size"] = max_size
        bad.append(entry)

    goridge = [{"name": n, "kind": k, "hex": data.hex(), "meaning": m} for n, k, data, m in GORIDGE]

    for fname, content in [
        ("values.json", values),
        ("messages.json", messages),
        ("malformed.json", bad),
        ("goridge.json", goridge),
    ]:
        (HERE / fname).write_text(json.dumps(content, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
