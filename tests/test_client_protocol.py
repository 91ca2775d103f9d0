"""The sans-I/O client protocol alone: no streams, no Trio, every interleaving hypothesis finds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from wirehelpers import encode

from trio_gotask._errors import ProtocolError
from trio_gotask._protocol import (
    GOING_AWAY,
    SIDECAR_DRAINED,
    Call,
    ClientProtocol,
    HostCall,
    HostCancel,
    Refused,
    greeting,
    read_greeting,
)
from trio_gotask._wire import (
    CANCEL,
    DRAINED,
    GOAWAY,
    HELLO,
    LARGE_BYTES,
    MAX_MSGID,
    PROTOCOL_VERSION,
    REFUSED,
    Decoder,
    Encoder,
    Hello,
    Notification,
    Request,
    Response,
    frame_header,
)

pytestmark = pytest.mark.fast  # no process: nox -s fast

PEER = Hello(PROTOCOL_VERSION, max_frame_size=4096, max_inflight=3)


def framed(message: Notification | Response | Request) -> bytes:
    payload = encode(message)
    return frame_header(len(payload)) + payload


def sent_messages(protocol: ClientProtocol) -> list[Any]:
    """What the protocol hands out, decoded as the sidecar would."""
    decoder = Decoder()
    for chunk in protocol.data_to_send():
        decoder.receive_data(chunk)
    out = []
    while (message := decoder.next_message()) is not None:
        out.append(message)
    assert decoder.between_frames
    return out


def answered(protocol: ClientProtocol) -> list[Call]:
    out = []
    while events := protocol.events():
        for call in events:
            assert isinstance(call, Call)
            out.append(call)
    return out


@dataclass
class Model:
    """What the sidecar should see, and what each call's owner should get."""

    call: Call
    sent: bool = False
    abandoned: bool = False
    cancel_sent: bool = False


class ProtocolMachine(RuleBasedStateMachine):
    """Calls, flushes, abandons, replies (whole or split anywhere, late or unknown), garbage and
    close, in any order, checked against a model of the wire."""

    def __init__(self) -> None:
        super().__init__()
        self.protocol = ClientProtocol(PEER, max_frame_size=8192, max_inflight=1000)
        self.calls: dict[int, Model] = {}  # msgid -> model, for calls holding a slot
        self.expected_cancels: list[int] = []
        self.dead = False
        self.owners = 0

    def live(self) -> bool:
        return not self.dead

    @precondition(live)
    @rule(
        method=st.sampled_from(["App.A", "App.Bb", "Svc.Method"]),
        arg=st.integers(-(2**63), 2**64 - 1) | st.text(max_size=5),
    )
    def start_call(self, method: str, arg: Any) -> None:
        if self.protocol.free_slots == 0:
            with pytest.raises(RuntimeError, match="no free slot"):
                self.protocol.send_request(method, arg, None, owner=None)
            return
        self.owners += 1
        call = self.protocol.send_request(method, arg, None, owner=self.owners)
        assert call.msgid not in self.calls, "a msgid in flight was reused"
        assert call.owner == self.owners and not call.sent and not call.abandoned
        assert repr(call) == f"<Call {method} msgid={call.msgid} queued>"
        self.calls[call.msgid] = Model(call)

    @precondition(live)
    @rule(arg=st.sampled_from([2**64, {1, 2}, object()]))
    def start_call_msgpack_cannot_carry(self, arg: Any) -> None:
        if self.protocol.free_slots == 0:
            return
        with pytest.raises((OverflowError, TypeError)):
            self.protocol.send_request("App.A", arg, None, owner=None)

    @precondition(live)
    @rule()
    def flush(self) -> None:
        messages = sent_messages(self.protocol)
        requests = [m for m in messages if type(m) is Request]
        cancels = [m.params for m in messages if type(m) is Notification]
        assert all(m.method == CANCEL for m in messages if type(m) is Notification)
        expected = [m.call.msgid for m in self.calls.values() if not m.sent and not m.abandoned]
        assert sorted(r.msgid for r in requests) == sorted(expected)
        for request in requests:
            model = self.calls[request.msgid]
            assert request.method == model.call.method and request.meta is None
            model.sent = True
            assert model.call.sent
        assert cancels == self.expected_cancels
        self.expected_cancels = []

    @precondition(live)
    @rule(data=st.data())
    def abandon(self, data: st.DataObject) -> None:
        if not self.calls:
            return
        msgid = data.draw(st.sampled_from(sorted(self.calls)))
        model = self.calls[msgid]
        freed = self.protocol.abandon(model.call)
        if model.abandoned:
            assert not freed  # twice is harmless
            return
        model.abandoned = True
        assert model.call.abandoned
        if model.sent:
            assert not freed  # the slot waits for the late reply
            self.expected_cancels.append(msgid)
        else:
            assert freed  # never sent: dropped, and its slot free at once
            del self.calls[msgid]

    @precondition(live)
    @rule(data=st.data(), error=st.booleans(), cuts=st.lists(st.integers(0, 60), max_size=4))
    def reply(self, data: st.DataObject, error: bool, cuts: list[int]) -> None:
        sent = sorted(msgid for msgid, m in self.calls.items() if m.sent)
        if not sent:
            return
        msgid = data.draw(st.sampled_from(sent))
        err = {"type": "error", "message": "no"} if error else None
        wire = framed(Response(msgid, err, None if error else ["ok", msgid]))
        got: list[Call] = []
        for piece in split(wire, cuts):
            self.protocol.receive_data(piece)
            got += answered(self.protocol)
        model = self.calls.pop(msgid)
        assert got == [model.call]
        assert model.call.abandoned == model.abandoned
        if error:
            assert model.call.error == err
        else:
            assert model.call.error is None and model.call.result == ["ok", msgid]

    @precondition(live)
    @rule(msgid=st.integers(0, MAX_MSGID))
    def reply_to_msgid_not_in_flight(self, msgid: int) -> None:
        model = self.calls.get(msgid)
        if model is not None and model.sent:
            return  # in flight: that is `reply`
        self.protocol.receive_data(framed(Response(msgid, None, 1)))
        with pytest.raises(ProtocolError) as info:
            answered(self.protocol)
        assert info.value.code == "unknown_msgid"
        self.dead = True

    @precondition(live)
    @rule()
    def notification_is_ignored(self) -> None:
        self.protocol.receive_data(framed(Notification("$log", "hi")))
        assert answered(self.protocol) == []

    @precondition(live)
    @rule(garbage=st.sampled_from([b"\x00\x00\x00\x00", b"\x00\x00\x00\x01\xc1", b"\xff\xff\xff\xff"]))
    def garbage(self, garbage: bytes) -> None:
        self.protocol.receive_data(garbage)
        with pytest.raises(ProtocolError):
            answered(self.protocol)
        self.dead = True

    @precondition(live)
    @rule()
    def request_from_the_sidecar(self) -> None:
        self.protocol.receive_data(framed(Request(1, "Py.X", None, None)))
        with pytest.raises(ProtocolError) as info:
            answered(self.protocol)
        assert info.value.code == "bad_message"
        self.dead = True

    @rule()
    def close(self) -> None:
        waiting = self.protocol.close()
        if self.dead:
            return
        expected = {m.call.msgid for m in self.calls.values() if not m.abandoned}
        assert {c.msgid for c in waiting} == expected
        assert self.protocol.in_flight == 0 and not self.protocol.has_data_to_send
        assert self.protocol.free_slots == 0
        for model in self.calls.values():
            assert not self.protocol.abandon(model.call)
        with pytest.raises(RuntimeError, match="closed"):
            self.protocol.send_request("App.A", 1, None, owner=None)
        self.calls.clear()
        self.dead = True

    @invariant()
    def slots_match_the_calls_in_flight(self) -> None:
        if not self.dead:
            assert self.protocol.in_flight == len(self.calls)
            assert self.protocol.free_slots == PEER.max_inflight - len(self.calls)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


TestProtocolMachine = ProtocolMachine.TestCase


class HostCallMachine(RuleBasedStateMachine):
    """Host calls: requests from the sidecar (within the limit or past it), its $cancels, the
    client's answers (encodable or not), in any order."""

    LIMIT = 3

    def __init__(self) -> None:
        super().__init__()
        self.protocol = ClientProtocol(PEER, max_frame_size=8192, max_inflight=8, max_host_calls=self.LIMIT)
        self.running: set[int] = set()
        self.expected: list[tuple[int, str | None]] = []  # responses due on the wire: (msgid, error type)

    def events(self) -> list[Any]:
        out: list[Any] = []
        while events := self.protocol.events():
            out += events
        return out

    @rule(msgid=st.integers(0, 20), timeout=st.none() | st.floats(allow_nan=True) | st.just("soon"))
    def sidecar_calls(self, msgid: int, timeout: Any) -> None:
        meta = None if timeout is None else {"timeout": timeout}
        self.protocol.receive_data(framed(Request(msgid, "Py.Echo", msgid, meta)))
        if msgid in self.running:
            with pytest.raises(ProtocolError, match="reused msgid"):
                self.events()
            self.protocol = ClientProtocol(
                PEER, max_frame_size=8192, max_inflight=8, max_host_calls=self.LIMIT
            )
            self.running.clear()
            self.expected.clear()
            return
        events = self.events()
        if len(self.running) >= self.LIMIT:
            assert events == []
            self.expected.append((msgid, "busy"))
            return
        (event,) = events
        assert isinstance(event, HostCall) and (event.msgid, event.method, event.params) == (
            msgid,
            "Py.Echo",
            msgid,
        )
        assert event.timeout == (timeout if isinstance(timeout, float) and timeout == timeout else None)
        self.running.add(msgid)

    @rule(data=st.data())
    def sidecar_cancels(self, data: st.DataObject) -> None:
        msgid = data.draw(st.integers(0, 20))
        self.protocol.receive_data(framed(Notification(CANCEL, msgid)))
        events = self.events()
        if msgid in self.running:
            (event,) = events
            assert isinstance(event, HostCancel) and event.msgid == msgid
        else:
            assert events == []

    @rule(data=st.data(), encodable=st.booleans())
    def client_answers(self, data: st.DataObject, encodable: bool) -> None:
        msgid = data.draw(st.integers(0, 20))
        self.protocol.send_response(msgid, None, msgid if encodable else {1, 2})
        if msgid in self.running:
            self.running.discard(msgid)
            self.expected.append((msgid, None if encodable else "bad_reply"))

    @rule()
    def flush(self) -> None:
        got = []
        for message in sent_messages(self.protocol):
            assert type(message) is Response
            got.append((message.msgid, None if message.error is None else message.error["type"]))
            if message.error is None:
                assert message.result == message.msgid
        assert got == self.expected
        self.expected = []

    @invariant()
    def running_matches(self) -> None:
        assert self.protocol.host_calls == len(self.running)


TestHostCallMachine = HostCallMachine.TestCase
TestHostCallMachine.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
TestProtocolMachine.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def test_limits_are_the_lower_of_both_sides() -> None:
    protocol = ClientProtocol(PEER, max_frame_size=2048, max_inflight=10)
    assert (protocol.max_request, protocol.max_inflight) == (2048, 3)
    protocol = ClientProtocol(PEER, max_frame_size=1 << 20, max_inflight=2)
    assert (protocol.max_request, protocol.max_inflight) == (4096, 2)


def test_a_request_over_the_limit_is_refused_and_queues_nothing() -> None:
    protocol = ClientProtocol(PEER, max_frame_size=1 << 20, max_inflight=3)
    with pytest.raises(ValueError, match="frame limit is 4096"):
        protocol.send_request("App.Echo", b"x" * 5000, None, owner=None)
    assert protocol.in_flight == 0 and not protocol.has_data_to_send
    with pytest.raises(TypeError):
        protocol.send_request("App.Echo", {1, 2}, None, owner=None)
    assert protocol.in_flight == 0 and not protocol.has_data_to_send


def test_the_deadline_travels_as_meta_timeout() -> None:
    protocol = ClientProtocol(PEER, max_frame_size=1 << 20, max_inflight=3)
    protocol.send_request("App.Slow", 1, 2.5, owner=None)
    (request,) = sent_messages(protocol)
    assert request.meta == {"timeout": 2.5}


@pytest.mark.parametrize("max_host_calls", [0, 4])
def test_goaway_and_drained_are_events_whether_or_not_the_client_takes_host_calls(
    max_host_calls: int,
) -> None:
    protocol = ClientProtocol(PEER, max_frame_size=1 << 20, max_inflight=3, max_host_calls=max_host_calls)
    call = protocol.send_request("App.Slow", 1, None, owner=None)
    protocol.data_to_send()
    protocol.receive_data(
        framed(Notification(GOAWAY, "the sidecar is shutting down")) + framed(Response(call.msgid, None, 7))
    )
    going, answer = protocol.events()
    assert going is GOING_AWAY
    assert answer is call and call.result == 7
    assert protocol.in_flight == 0
    protocol.receive_data(framed(Notification(DRAINED, "every call it ran is answered")))
    assert protocol.events() == [SIDECAR_DRAINED]


def test_msgids_wrap_around_and_skip_those_in_flight() -> None:
    protocol = ClientProtocol(PEER, max_frame_size=1 << 20, max_inflight=3)
    first = protocol.send_request("App.A", None, None, owner=None)
    assert first.msgid == 0
    protocol._last_msgid = MAX_MSGID - 1
    assert protocol.send_request("App.A", None, None, owner=None).msgid == MAX_MSGID
    assert protocol.send_request("App.A", None, None, owner=None).msgid == 1  # 0 is in flight


def test_big_payloads_are_handed_out_as_their_own_chunks_after_the_small_frames() -> None:
    protocol = ClientProtocol(Hello(PROTOCOL_VERSION, 1 << 24, 8), max_frame_size=1 << 24, max_inflight=8)
    protocol.send_request("App.A", 1, None, owner=None)
    data = b"x" * 100_000
    big = protocol.send_request("App.Echo", data, 2.5, owner=None)
    protocol.send_request("App.A", 2, None, owner=None)
    chunks = protocol.data_to_send()
    assert len(chunks) == 3
    assert chunks[1] is data  # sent from the caller's own bytes, not a copy
    assert big.sent
    decoder = Decoder()
    for chunk in chunks:
        decoder.receive_data(chunk)
    order = []
    while (message := decoder.next_message()) is not None:
        assert isinstance(message, Request)
        order.append((message.method, message.params if message.method == "App.A" else len(message.params)))
    assert order == [("App.A", 1), ("App.A", 2), ("App.Echo", 100_000)]


@pytest.mark.parametrize("size", [LARGE_BYTES, LARGE_BYTES + 1, 3 << 20])
@pytest.mark.parametrize("timeout", [None, 0.25, 1e9])
@pytest.mark.parametrize("method", ["App.Echo", "Ü" * 40])
def test_a_large_bytes_request_is_the_same_payload_as_packing_it_whole(
    size: int, timeout: float | None, method: str
) -> None:
    data = bytes(range(256)) * (size // 256) + b"\x07" * (size % 256)
    head, tail = Encoder().request_around(99, method, len(data), timeout)
    assert head + data + tail == Encoder().request(99, method, bytearray(data), timeout)


def test_greeting_carries_the_secret_then_the_hello() -> None:
    decoder = Decoder()
    decoder.receive_data(greeting(2048, "s3cret"))
    auth, hello = decoder.next_message(), decoder.next_message()
    assert auth == Notification("$auth", "s3cret")
    assert hello == Notification(HELLO, {"version": PROTOCOL_VERSION, "max_frame_size": 2048, "ping": True})
    decoder.receive_data(greeting(2048, None))
    assert decoder.next_message() == hello


def test_read_greeting() -> None:
    hello = framed(
        Notification(HELLO, {"version": PROTOCOL_VERSION, "max_frame_size": 2048, "max_inflight": 5})
    )
    decoder = Decoder()
    for byte in hello[:-1]:
        decoder.receive_data(bytes([byte]))
        assert read_greeting(decoder) is None
    decoder.receive_data(hello[-1:] + b"\x00\x00")
    assert read_greeting(decoder) == Hello(PROTOCOL_VERSION, 2048, 5)
    assert decoder.unconsumed() == b"\x00\x00"

    decoder = Decoder()
    decoder.receive_data(framed(Notification("$log", 1)) + framed(Notification(REFUSED, "wrong secret")))
    with pytest.raises(Refused, match="wrong secret"):
        read_greeting(decoder)

    decoder = Decoder()
    decoder.receive_data(framed(Response(0, None, None)))
    with pytest.raises(ProtocolError, match="Response before its \\$hello"):
        read_greeting(decoder)

    decoder = Decoder()
    decoder.receive_data(
        framed(Notification(HELLO, {"version": 1, "max_frame_size": 2048, "max_inflight": 5}))
    )
    with pytest.raises(ProtocolError, match="version 1"):
        read_greeting(decoder)


def test_replies_before_a_bad_frame_come_out_first_then_the_error() -> None:
    """Their calls left the table: raising at once would leave their callers waiting forever."""
    protocol = ClientProtocol(PEER, max_frame_size=8192, max_inflight=3)
    first = protocol.send_request("App.A", 1, None, owner="a")
    second = protocol.send_request("App.B", 2, None, owner="b")
    protocol.data_to_send()
    protocol.receive_data(
        framed(Response(first.msgid, None, "one"))
        + framed(Response(second.msgid, None, "two"))
        + framed(Response(99, None, "nobody asked"))
    )
    assert protocol.events() == [first, second]
    assert (first.result, second.result) == ("one", "two")
    with pytest.raises(ProtocolError) as info:
        protocol.events()
    assert info.value.code == "unknown_msgid"
    with pytest.raises(ProtocolError):
        protocol.events()  # and ever after


def test_a_bad_reply_is_named_by_what_it_gets_wrong() -> None:
    protocol = ClientProtocol(PEER, max_frame_size=8192, max_inflight=3)
    call = protocol.send_request("App.A", 1, None, owner="a")
    protocol.data_to_send()
    protocol.receive_data(framed(Response(call.msgid, {"type": 3}, None)))
    with pytest.raises(ProtocolError, match="error must be nil or a map with string type and message"):
        protocol.events()
