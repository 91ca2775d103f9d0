"""The shared golden vectors (tests/vectors/, docs/protocol.md section 6) against the Python core."""

from __future__ import annotations

import datetime
import json
import math
import struct
from pathlib import Path
from typing import Any

import msgpack
import pytest
from wirehelpers import encode, pack

from trio_gotask._errors import ProtocolError
from trio_gotask._protocol import ClientProtocol, HostCall, HostLog, ItemsArrived, StreamCall
from trio_gotask._wire import (
    LARGE_BYTES,
    PROTOCOL_VERSION,
    Decoder,
    Encoder,
    Hello,
    Item,
    Notification,
    Request,
    Response,
    decode_value,
    frame_header,
    parse_hello,
    parse_message,
)

pytestmark = pytest.mark.fast  # no process: nox -s fast

VECTORS = Path(__file__).parent / "vectors"
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def load(name: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((VECTORS / name).read_text())
    return data


def from_json(v: Any, *, exact_timestamps: bool = False) -> Any:
    """Turn the tagged JSON notation into the Python value the decoder must produce.

    Timestamps become `datetime` (microseconds), or with ``exact_timestamps`` `msgpack.Timestamp`,
    which the encoder also takes and which keeps nanoseconds.
    """
    if isinstance(v, list):
        return [from_json(x, exact_timestamps=exact_timestamps) for x in v]
    if isinstance(v, dict):
        if len(v) == 1:
            ((tag, x),) = v.items()
            if tag == "$bin":
                return bytes.fromhex(x)
            if tag == "$map":
                return {from_json(k): from_json(val) for k, val in x}
            if tag == "$ts":
                seconds, nanoseconds = x
                if exact_timestamps:
                    return msgpack.Timestamp(seconds, nanoseconds)
                return EPOCH + datetime.timedelta(seconds=seconds, microseconds=nanoseconds // 1000)
            if tag == "$float":
                return math.inf if x == "inf" else -math.inf
            if tag == "$f32":
                return struct.unpack(">f", struct.pack(">f", x))[0]
        return {k: from_json(x) for k, x in v.items()}
    return v


def ids(vector: dict[str, Any]) -> str:
    return str(vector["name"])


VALUES = load("values.json")
MESSAGES = load("messages.json")
MALFORMED = load("malformed.json")


def test_vectors_cover_every_shape() -> None:
    names = {v["name"].split("_")[0] for v in MESSAGES}
    assert {"request", "response", "notification"} <= names
    codes = {v["error"] for v in MALFORMED}
    assert codes == {"too_large", "empty_frame", "bad_msgpack", "bad_message", "truncated"}


@pytest.mark.parametrize("vector", VALUES, ids=ids)
def test_value_decodes(vector: dict[str, Any]) -> None:
    assert decode_value(bytes.fromhex(vector["hex"])) == from_json(vector["value"])


@pytest.mark.parametrize("vector", [v for v in VALUES if v["canonical"]], ids=ids)
def test_value_encodes_canonically(vector: dict[str, Any]) -> None:
    value = from_json(vector["value"], exact_timestamps=True)
    assert pack(value).hex() == vector["hex"]


@pytest.mark.parametrize("vector", MESSAGES, ids=ids)
def test_message_decodes(vector: dict[str, Any]) -> None:
    decoder = Decoder()
    data = bytes.fromhex(vector["hex"])
    # Fed one byte at a time: a frame must be found however the stream is split.
    for i in range(len(data)):
        assert decoder.next_message() is None
        decoder.receive_data(data[i : i + 1])
    message = decoder.next_message()
    assert message == parse_message(from_json(vector["message"]))
    assert decoder.next_message() is None
    decoder.receive_eof()


# The client always sends meta, so a 4-element request is only ever decoded.
@pytest.mark.parametrize(
    "vector", [v for v in MESSAGES if v["canonical"] and v["name"] != "request_no_meta"], ids=ids
)
def test_message_encodes_canonically(vector: dict[str, Any]) -> None:
    message = parse_message(from_json(vector["message"]))
    payload = encode(message)
    assert (frame_header(len(payload)) + payload).hex() == vector["hex"]


def test_client_request_cancel_and_hello_match_vectors() -> None:
    by_name = {v["name"]: v["hex"] for v in MESSAGES}
    enc = Encoder()
    for name, payload in [
        ("request", enc.request(1, "App.Hi", "Reasno")),
        ("request_with_timeout", enc.request(2, "App.Slow", 5000, timeout=0.25)),
        ("notification_cancel", enc.cancel(42)),
        ("notification_hello_client", enc.hello(64 * 1024 * 1024)),
        ("notification_hello_client_host_calls", enc.hello(64 * 1024 * 1024, 64)),
        ("response_host_call", enc.response(5, None, "REASNO")),
        ("response_host_call_error", enc.response(6, {"type": "error", "message": "ValueError: no"}, None)),
        ("notification_ping", enc.ping(7)),
        ("notification_pong", enc.pong(7)),
    ]:
        assert (frame_header(len(payload)) + payload).hex() == by_name[name]


def test_host_call_vectors_become_protocol_events() -> None:
    by_name = {v["name"]: bytes.fromhex(v["hex"]) for v in MESSAGES}
    protocol = ClientProtocol(
        Hello(PROTOCOL_VERSION, 1 << 20, 8), max_frame_size=1 << 26, max_inflight=8, max_host_calls=4
    )
    protocol.receive_data(by_name["request_host_call"] + by_name["notification_log"])
    call, log = protocol.events()
    assert isinstance(call, HostCall)
    assert (call.msgid, call.method, call.params, call.timeout) == (5, "Py.Upper", "reasno", 1.5)
    assert isinstance(log, HostLog)
    assert (log.level, log.logger, log.message, log.time, log.attrs) == (
        4,
        "db",
        "disk almost full",
        None,
        {"free": 3},
    )


METADATA = [v for v in MESSAGES if "metadata" in v]


def test_the_metadata_vectors_match_the_client_encoder() -> None:
    by_name = {v["name"]: v["hex"] for v in MESSAGES}
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    metadata = {"traceparent": traceparent, "tenant": "acme"}
    payload = Encoder().request(12, "App.Hi", "Reasno", 0.25, metadata)
    assert (frame_header(len(payload)) + payload).hex() == by_name["request_metadata"]


def test_large_bytes_carry_metadata_where_other_params_do() -> None:
    enc = Encoder()
    params = bytes(LARGE_BYTES)
    for timeout in (None, 0.25):
        for metadata in (None, {}, {"tenant": "acme"}):
            head, tail = enc.request_around(3, "App.Bytes", len(params), timeout, metadata)
            assert head + params + tail == bytes(enc.request(3, "App.Bytes", params, timeout, metadata))
            expected: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
            if metadata:
                expected["metadata"] = metadata
            assert decode_value(head + params + tail)[4] == (expected or None)


def test_host_calls_carry_the_metadata_of_the_vectors() -> None:
    """Each metadata vector as a host call: its event holds what the vector says a receiver reads
    (entries of other types, and a value that is not a map, ignored), and nothing fails."""
    assert {v["name"] for v in METADATA} >= {"request_metadata", "request_host_metadata"}
    protocol = ClientProtocol(
        Hello(PROTOCOL_VERSION, 1 << 20, 8), max_frame_size=1 << 26, max_inflight=8, max_host_calls=8
    )
    protocol.receive_data(b"".join(bytes.fromhex(v["hex"]) for v in METADATA))
    events = protocol.events()
    assert [type(e) for e in events] == [HostCall] * len(METADATA)
    for vector, call in zip(METADATA, events, strict=True):
        assert isinstance(call, HostCall)
        assert call.metadata == vector["metadata"], vector["name"]
        assert list(call.metadata) == list(vector["metadata"])  # in the order sent
    (host,) = [c for v, c in zip(METADATA, events, strict=True) if v["name"] == "request_host_metadata"]
    assert isinstance(host, HostCall)
    assert (host.method, host.params, host.timeout) == ("Py.Upper", "reasno", 1.5)


def test_a_host_call_without_metadata_has_none() -> None:
    by_name = {v["name"]: bytes.fromhex(v["hex"]) for v in MESSAGES}
    protocol = ClientProtocol(
        Hello(PROTOCOL_VERSION, 1 << 20, 8), max_frame_size=1 << 26, max_inflight=8, max_host_calls=4
    )
    protocol.receive_data(by_name["request_host_call"])
    (call,) = protocol.events()
    assert isinstance(call, HostCall) and call.metadata == {}


def test_stream_vectors_match_the_client_encoder() -> None:
    by_name = {v["name"]: v["hex"] for v in MESSAGES}
    enc = Encoder()
    for name, payload in [
        ("request_stream", enc.stream_request(10, "App.Count", 3, None, 1048576)),
        ("request_stream_with_timeout", enc.stream_request(11, "App.Count", 3, 0.25, 65536)),
        ("notification_credit", enc.credit(10, 32768)),
    ]:
        assert (frame_header(len(payload)) + payload).hex() == by_name[name]


def test_hello_vectors_say_whether_streams_are_served() -> None:
    by_name = {v["name"]: from_json(v["message"]) for v in MESSAGES}
    assert parse_hello(by_name["notification_hello_sidecar"][2]).streams
    assert not parse_hello(by_name["notification_hello_sidecar_before_streams"][2]).streams


def test_stream_vectors_become_a_stream() -> None:
    by_name = {v["name"]: bytes.fromhex(v["hex"]) for v in MESSAGES}
    protocol = ClientProtocol(
        Hello(PROTOCOL_VERSION, 1 << 20, 8, streams=True), max_frame_size=1 << 26, max_inflight=8
    )
    protocol._last_msgid = 9  # the vectors' stream is msgid 10
    stream = protocol.open_stream("App.Count", 3, None, 1 << 20)
    assert stream.msgid == 10
    assert protocol.data_to_send() == [bytearray(by_name["request_stream"])]
    stream.waiter = "the consumer"
    items = by_name["item"] + by_name["item_map"] + by_name["item_bytes"]
    protocol.receive_data(items + by_name["response_stream_end"])
    arrived, ended = protocol.events()
    assert isinstance(arrived, ItemsArrived) and arrived.stream is stream
    assert isinstance(ended, StreamCall) and ended is stream and stream.ended and stream.error is None
    assert [protocol.take_item(stream) for _ in range(3)] == [0, {"name": "a", "n": 1}, b"\x1f\x8b\x08"]
    # The credit counts payloads: the frames less their four-byte headers.
    assert stream.credit == (1 << 20) - (len(items) - 12)


def drain(decoder: Decoder) -> None:
    while decoder.next_message() is not None:
        pass
    decoder.receive_eof()


@pytest.mark.parametrize("vector", MALFORMED, ids=ids)
def test_malformed_is_rejected(vector: dict[str, Any]) -> None:
    decoder = Decoder(vector.get("max_frame_size", 64 * 1024 * 1024))
    decoder.receive_data(bytes.fromhex(vector["hex"]))
    with pytest.raises(ProtocolError) as info:
        drain(decoder)
    assert info.value.code == vector["error"]


def test_decoder_finds_every_frame_in_one_read() -> None:
    stream = b"".join(bytes.fromhex(v["hex"]) for v in MESSAGES)
    decoder = Decoder()
    decoder.receive_data(stream)
    got = []
    while (message := decoder.next_message()) is not None:
        got.append(message)
    assert len(got) == len(MESSAGES)
    assert isinstance(got[0], Request)
    assert any(isinstance(m, Response) for m in got)
    assert any(isinstance(m, Notification) for m in got)
    assert any(isinstance(m, Item) for m in got)


def test_the_sidecars_hello_parses() -> None:
    (vector,) = [v for v in MESSAGES if v["name"] == "notification_hello_sidecar"]
    decoder = Decoder()
    decoder.receive_data(bytes.fromhex(vector["hex"]))
    message = decoder.next_message()
    assert isinstance(message, Notification)
    assert parse_hello(message.params) == Hello(2, 64 * 1024 * 1024, 1024, ping=True, streams=True)


def test_a_ping_vector_is_answered_with_the_pong_vector() -> None:
    by_name = {v["name"]: bytes.fromhex(v["hex"]) for v in MESSAGES}
    protocol = ClientProtocol(Hello(PROTOCOL_VERSION, 1 << 20, 8), max_frame_size=1 << 20, max_inflight=8)
    protocol.receive_data(by_name["notification_ping"] + by_name["notification_pong"])
    assert protocol.events() == []
    assert b"".join(protocol.data_to_send()) == by_name["notification_pong"]
