"""GoTask's goridge wire format, alone: the frame codec against vectors built from the byte layout
(tests/vectors/goridge.json), and replies paired from frames split anywhere."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_gotask._errors import ProtocolError
from trio_gotask._goridge import (
    CONTROL,
    EMPTY,
    RAW,
    Frame,
    FrameDecoder,
    Replies,
    Reply,
    encode_call,
    frame,
)

pytestmark = pytest.mark.fast  # no process: nox -s fast

VECTORS = {v["name"]: v for v in json.loads((Path(__file__).parent / "vectors" / "goridge.json").read_text())}


def data(name: str) -> bytes:
    return bytes.fromhex(VECTORS[name]["hex"])


def replies_from(wire: bytes, cuts: Sequence[int] = ()) -> list[Reply]:
    decoder = FrameDecoder(1 << 20)
    pairing = Replies()
    out = []
    points = sorted({c for c in cuts if 0 < c < len(wire)})
    for a, b in zip([0, *points], [*points, len(wire)], strict=True):
        decoder.receive_data(wire[a:b])
        while (received := decoder.next_frame()) is not None:
            if (reply := pairing.feed(received)) is not None:
                out.append(reply)
    decoder.receive_eof()
    return out


def test_the_worked_example_app_hi_hyperf_sequence_0() -> None:
    assert encode_call("App.Hi", 0, "Hyperf") == data("call_app_hi")
    assert data("call_app_hi")[:17] == bytes(
        [CONTROL | RAW, 14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 14]
    )


@pytest.mark.parametrize(
    ("name", "method", "seq", "arg"),
    [
        ("call_app_hi", "App.Hi", 0, "Hyperf"),
        ("call_bytes_raw", "App.Bytes", 1, b"\x00\x01\x02"),
        ("call_nil", "App.Now", 2, None),
        ("call_map", "App.Add", 3, {"a": 1, "b": 2}),
    ],
)
def test_calls_encode_as_the_vectors(name: str, method: str, seq: int, arg: Any) -> None:
    assert encode_call(method, seq, arg) == data(name)


@pytest.mark.parametrize("name", ["reply_app_hi", "reply_raw", "reply_error", "reply_empty"])
def test_replies_decode_as_the_vectors(name: str) -> None:
    (reply,) = replies_from(data(name))
    meaning = VECTORS[name]["meaning"]
    if name == "reply_raw":
        assert (reply.method, reply.seq, reply.result, reply.error) == ("App.Bytes", 1, b"\x02\x01", None)
        return
    error = None if meaning["error"] is None else {"type": "error", "message": meaning["error"]}
    assert reply == Reply(meaning["method"], meaning["seq"], meaning["result"], error)


@given(cuts=st.lists(st.integers(0, 200), max_size=6))
def test_replies_split_anywhere_arrive_whole(cuts: list[int]) -> None:
    wire = data("reply_app_hi") + data("reply_error") + data("reply_raw") + data("reply_empty")
    assert [r.seq for r in replies_from(wire, cuts)] == [0, 2**40 + 5, 1, 7]


def test_a_corrupt_prefix_is_a_protocol_error() -> None:
    decoder = FrameDecoder(1 << 20)
    decoder.receive_data(data("corrupt_prefix"))
    with pytest.raises(ProtocolError, match="5 bytes little-endian and 6 big-endian") as info:
        decoder.next_frame()
    assert info.value.code == "bad_prefix"


def test_limits_and_truncation() -> None:
    decoder = FrameDecoder(10)
    decoder.receive_data(frame(0, b"x" * 11))
    with pytest.raises(ProtocolError, match="limit is 10"):
        decoder.next_frame()
    decoder = FrameDecoder(100)
    decoder.receive_data(frame(0, b"12345")[:-1])
    assert decoder.next_frame() is None
    with pytest.raises(ProtocolError) as info:
        decoder.receive_eof()
    assert info.value.code == "truncated"


def test_an_empty_frame_ignores_its_length() -> None:
    decoder = FrameDecoder(100)
    decoder.receive_data(frame(EMPTY)[:1] + (3).to_bytes(8, "little") + (3).to_bytes(8, "big"))
    received = decoder.next_frame()
    assert received is not None and (received.flags, received.payload) == (EMPTY, b"")


@pytest.mark.parametrize(
    ("flags", "payload", "result"),
    [
        (RAW, b"", b""),  # an empty (or nil) []byte from Go: goridge sends this, PHP gets ''
        (RAW | EMPTY, b"", b""),  # PHP looks at the raw flag alone
        (0, b"", None),  # PHP: json_decode('') is null
        (EMPTY, b"", None),
        (0, b'""', ""),
    ],
    ids=["raw", "raw-and-empty", "nothing", "empty", "json-string"],
)
def test_empty_bodies_mean_what_they_mean_to_gotasks_php_client(
    flags: int, payload: bytes, result: object
) -> None:
    pairing = Replies()
    assert pairing.feed(Frame(CONTROL | RAW, b"App.X" + bytes(8))) is None
    assert pairing.feed(Frame(flags, payload)) == Reply("App.X", 0, result, None)


def test_a_body_that_is_not_json_fails_only_its_call() -> None:
    wire = frame(CONTROL | RAW, b"App.X" + (4).to_bytes(8, "little")) + frame(0, b"{not json")
    (reply,) = replies_from(wire + data("reply_app_hi"))[:1]
    assert reply.error is not None and reply.error["type"] == "bad_reply"
    assert len(replies_from(wire + data("reply_app_hi"))) == 2


def test_frames_out_of_order_are_protocol_errors() -> None:
    with pytest.raises(ProtocolError, match="header frame"):
        Replies().feed(Frame(0, b'"x"'))
    pairing = Replies()
    pairing.feed(Frame(CONTROL | RAW, b"App.X" + bytes(8)))
    with pytest.raises(ProtocolError, match="body was due"):
        pairing.feed(Frame(CONTROL | RAW, b"App.Y" + bytes(8)))


def test_json_rules_of_go() -> None:
    body = encode_call("App.M", 9, {"blob": b"\x00\xff", "n": [1, 2.5, None]})[17 + 5 + 8 + 17 :]
    assert json.loads(body) == {"blob": "AP8=", "n": [1, 2.5, None]}  # []byte inside JSON: base64
    with pytest.raises(ValueError, match="Out of range float"):
        encode_call("App.M", 9, float("nan"))
    with pytest.raises(TypeError, match="JSON cannot carry set"):
        encode_call("App.M", 9, {1, 2})


def test_the_goridge_protocol_tracks_calls_by_sequence() -> None:
    from trio_gotask._goridge import GoridgeProtocol

    protocol = GoridgeProtocol(max_frame_size=1 << 20, max_inflight=2)
    first = protocol.send_request("App.Hi", "Hyperf", 5.0, owner="a")  # no deadline on this wire
    assert protocol.data_to_send() == [bytearray(data("call_app_hi"))]
    queued = protocol.send_request("App.Now", None, None, owner="b")
    with pytest.raises(RuntimeError, match="no free slot"):
        protocol.send_request("App.X", 1, None, owner="c")
    assert protocol.abandon(queued)  # never sent: its slot is free at once, and it is not sent
    assert protocol.data_to_send() == []
    assert not protocol.abandon(first)  # sent: Go runs it; the slot waits for the reply
    assert protocol.in_flight == 1
    protocol.receive_data(data("reply_app_hi"))
    (answered,) = protocol.events()
    assert answered is first and answered.abandoned and answered.result == {"hello": "Hyperf"}
    assert protocol.in_flight == 0
    protocol.receive_data(data("reply_empty"))  # sequence 7 is not in flight
    with pytest.raises(ProtocolError) as info:
        protocol.events()
    assert info.value.code == "unknown_msgid"
