"""A peer that sends anything at all: whatever the bytes, a call gets its result, an error of its
own (`BadReply`, `RemoteError`), or `ProtocolError` with every call of that one connection, and no
other exception leaves the decoders. The sans-I/O protocols alone, and a `Connection` against a
fake sidecar over memory streams (tests/fakesidecar.py). The same against the user's block, over
sockets, is in test_broken_peer.py; tests/fuzz_decoders.py searches for what these miss."""

from __future__ import annotations

import json
import logging
import struct
from typing import Any

import msgpack
import pytest
import trio
import trio.testing
from fakesidecar import frame, open_fake
from timing import HANG
from wirehelpers import pack, plant_decoder_bug

from trio_gotask import ProtocolError, _handlers
from trio_gotask._connection import Connection
from trio_gotask._goridge import CONTROL, RAW, GoridgeProtocol
from trio_gotask._goridge import frame as goridge_frame
from trio_gotask._handlers import MAX_GO_LOGGERS, log_record
from trio_gotask._protocol import (
    GOING_AWAY,
    SIDECAR_DRAINED,
    Call,
    ClientProtocol,
    HostCall,
    HostLog,
    Refused,
    read_greeting,
)
from trio_gotask._settings import Limits, PoolSettings
from trio_gotask._wire import (
    LARGE_FRAME_READ,
    PROTOCOL_VERSION,
    Decoder,
    Hello,
    Response,
    frame_header,
    short_repr,
)

pytestmark = pytest.mark.fast  # no process: nox -s fast

PEER = Hello(PROTOCOL_VERSION, max_frame_size=1 << 20, max_inflight=8)


def framed(obj: Any) -> bytes:
    payload = pack(obj)
    return frame_header(len(payload)) + payload


def nested(levels: int) -> Any:
    value: Any = []
    for _ in range(levels):
        value = [value]
    return value


def protocol(max_host_calls: int = 4) -> ClientProtocol:
    return ClientProtocol(PEER, max_frame_size=1 << 20, max_inflight=8, max_host_calls=max_host_calls)


def sent_call(p: ClientProtocol) -> Call:
    call = p.send_request("App.Echo", None, None, owner=None)
    p.data_to_send()
    return call


# Values for every place a peer may put a wrong one: each of msgpack's kinds, and the awkward ones.
ODD_VALUES: list[tuple[str, Any]] = [
    ("nil", None),
    ("true", True),
    ("float", 1.0),
    ("nan", float("nan")),
    ("negative", -1),
    ("huge", 2**64 - 1),
    ("str", "1"),
    ("bin", b"\x01"),
    ("map", {"msgid": 1}),
    ("int keys", {1: 2}),
    ("list", [1]),
    ("ext", msgpack.ExtType(5, b"x")),
    ("nested 1000 deep", nested(1000)),
]
ODD_IDS = [name for name, _ in ODD_VALUES]
RESERVED = ["$cancel", "$log", "$goaway", "$drained", "$hello", "$refused", "$auth", "$ping", "$pong", "$x"]


def test_drained_without_goaway_is_ignored() -> None:
    p = protocol()
    call = sent_call(p)
    p.receive_data(framed([2, "$drained", "lies"]))
    assert p.events() == []  # the call is not taken for one that never ran
    p.receive_data(framed([2, "$goaway", "bye"]) + framed([2, "$drained", "done"]))
    assert p.events() == [GOING_AWAY, SIDECAR_DRAINED]
    assert p.in_flight == 1 and not call.abandoned


@pytest.mark.parametrize("params", [v for _, v in ODD_VALUES], ids=ODD_IDS)
def test_a_cancel_that_names_no_msgid_is_ignored(params: Any) -> None:
    p = protocol()
    p.receive_data(framed([0, 1, "Py.Echo", None, None]))
    (host_call,) = p.events()
    assert isinstance(host_call, HostCall)
    p.receive_data(framed([2, "$cancel", params]))
    assert p.events() == []
    call = sent_call(p)
    p.receive_data(framed([1, call.msgid, None, "after"]))
    assert p.events() == [call] and call.result == "after"
    assert p.host_calls == 1


@pytest.mark.parametrize("max_host_calls", [0, 4], ids=["host calls off", "host calls on"])
@pytest.mark.parametrize("method", RESERVED)
@pytest.mark.parametrize("params", [v for _, v in ODD_VALUES], ids=ODD_IDS)
def test_reserved_notifications_with_any_params_never_break_the_connection(
    max_host_calls: int, method: str, params: Any
) -> None:
    p = protocol(max_host_calls)
    call = sent_call(p)
    p.receive_data(framed([2, method, params]) + framed([1, call.msgid, None, "after"]))
    events = p.events()
    assert events[-1] is call and call.result == "after"
    for event in events[:-1]:
        if method == "$goaway":
            assert event is GOING_AWAY
        elif method == "$drained":
            assert event is SIDECAR_DRAINED
        else:
            assert method == "$log" and max_host_calls and isinstance(event, HostLog)
            assert len(event.message) < 300


@pytest.mark.parametrize("params", [v for _, v in ODD_VALUES], ids=ODD_IDS)
def test_a_log_record_of_any_shape_is_logged(params: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_gotask.go")
    records = [
        params,
        {"level": params, "logger": params, "message": params, "time": params, "attrs": params},
        {"message": "m", "attrs": {"a": params, "b": nested(1000), 1: 2}},
    ]
    for record in records:
        p = protocol()
        p.receive_data(framed([2, "$log", record]))
        (event,) = p.events()
        assert isinstance(event, HostLog)
        log_record(event)
    assert len(caplog.records) == 3


@pytest.mark.parametrize("msgid", [v for _, v in ODD_VALUES], ids=ODD_IDS)
def test_a_response_or_request_whose_msgid_is_not_one_is_a_protocol_error(msgid: Any) -> None:
    for message in ([1, msgid, None, None], [0, msgid, "Py.Echo", None, None]):
        p = protocol()
        sent_call(p)
        p.receive_data(framed(message))
        with pytest.raises(ProtocolError) as info:
            p.events()
        assert info.value.code in {"bad_message", "unknown_msgid"}
        assert len(str(info.value)) < 400


@pytest.mark.parametrize("timeout", [v for _, v in ODD_VALUES], ids=ODD_IDS)
def test_a_host_call_with_any_timeout_runs(timeout: Any) -> None:
    p = protocol()
    p.receive_data(framed([0, 1, "Py.Echo", None, {"timeout": timeout}]))
    (event,) = p.events()
    assert isinstance(event, HostCall)
    assert event.timeout is None or type(event.timeout) in (int, float)


def test_a_refusal_of_any_shape_is_read_as_a_bounded_reason() -> None:
    for why in ("x" * 100_000, nested(1000), {"a": b"x" * 100_000}):
        decoder = Decoder()
        decoder.receive_data(framed([2, "$refused", why]))
        with pytest.raises(Refused) as info:
            read_greeting(decoder)
        assert 0 < len(str(info.value)) <= 1010


def test_an_exception_of_the_decoder_becomes_a_protocol_error_caused_by_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bug = plant_decoder_bug(monkeypatch)  # only a bug lets one out: one is put in
    p = protocol()
    call = sent_call(p)
    p.receive_data(bug)
    with pytest.raises(ProtocolError) as info:
        p.events()
    assert info.value.code == "decoder_failed"
    assert "RuntimeError: a bug of the decoder" in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)

    p = protocol()
    call = sent_call(p)
    p.receive_data(framed([1, call.msgid, None, 1]) + bug)
    assert p.events() == [call]  # the events before it come first
    with pytest.raises(ProtocolError) as info:
        p.raise_pending()
    assert info.value.code == "decoder_failed" and isinstance(info.value.__cause__, RuntimeError)


def test_a_bad_frame_after_good_ones_is_pending_at_once() -> None:
    p = protocol()
    first, second = sent_call(p), sent_call(p)
    p.receive_data(framed([1, first.msgid, None, 1]) + frame_header(1) + b"\xc1")
    assert p.events() == [first]
    with pytest.raises(ProtocolError) as info:
        p.raise_pending()
    assert info.value.code == "bad_msgpack"
    assert p.close() == [second]


def test_a_good_read_leaves_nothing_pending() -> None:
    p = protocol()
    call = sent_call(p)
    p.receive_data(framed([1, call.msgid, None, 1]))
    assert p.events() == [call]
    p.raise_pending()


# -- msgpack's limits: each ends as a per-call BadReply or a ProtocolError -----------------------


def response_around(msgid: int, result: bytes) -> bytes:
    payload = b"\x94\x01" + pack(msgid) + b"\xc0" + result
    return frame_header(len(payload)) + payload


@pytest.mark.fault(
    fault="a reply nested 100,000 deep (msgpack), with bytes after it, or declaring a 4 GiB str, bin, ext, array or map",
    sees="BadReply for the deep one; ProtocolError for the connection's calls otherwise; nothing allocated for what was only declared",
)
@pytest.mark.parametrize(
    ("result", "outcome"),
    [
        (b"\x91" * 100_000 + b"\xc0", "bad_reply"),  # nested 100,000 deep
        (b"\xc0\xc0", "bad_msgpack"),  # a byte after the result (ExtraData)
        (b"\xdb\xff\xff\xff\xff", "bad_msgpack"),  # a str of 4 GiB declared, none sent
        (b"\xc6\xff\xff\xff\xff", "bad_msgpack"),  # bin
        (b"\xc9\xff\xff\xff\xff\x05", "bad_msgpack"),  # ext
        (b"\xdd\xff\xff\xff\xff", "bad_msgpack"),  # an array of 4 billion items
        (b"\xdf\xff\xff\xff\xff", "bad_msgpack"),  # a map
        (b"\xdd\x00\x01\x00\x00" + b"\xc0" * 10, "bad_msgpack"),  # 65536 items declared, 10 sent
    ],
    ids=["deep", "extra data", "str 4 GiB", "bin 4 GiB", "ext 4 GiB", "array 4G", "map 4G", "array short"],
)
def test_msgpack_limits_end_as_a_bad_reply_or_a_protocol_error(result: bytes, outcome: str) -> None:
    import tracemalloc

    p = protocol()
    call = sent_call(p)
    tracemalloc.start()
    try:
        p.receive_data(response_around(call.msgid, result))
        if outcome == "bad_reply":
            assert p.events() == [call]
            assert call.error is not None and call.error["type"] == "bad_reply"
        else:
            with pytest.raises(ProtocolError) as info:
                p.events()
            assert info.value.code == outcome
        assert tracemalloc.get_traced_memory()[1] < 4 * len(result) + (1 << 20)
    finally:
        tracemalloc.stop()


@pytest.mark.fault(
    fault="a frame header declaring 64 MiB (or 1 MiB), then a few bytes and silence",
    sees="nothing: the frame's buffer holds what arrived, and at most 4 MiB more for a read",
)
def test_a_large_frame_takes_memory_as_its_bytes_arrive_not_as_declared() -> None:
    for fill_by_view in (False, True):
        p = protocol()
        p.receive_data(frame_header(1 << 20) + b"\x94")
        assert p.events() == []  # a large frame begins: its buffer is chosen here
        for _ in range(3):
            if fill_by_view:
                view = p.receive_buffer()
                assert view is not None and len(view) <= LARGE_FRAME_READ
                view[:1000] = bytes(1000)
                view.release()
                p.received_into(1000)
            else:
                p.receive_data(bytes(1000))
        fed = 4 + 1 + 3000
        assert p.events() == []
        assert p._decoder.buffered <= fed + LARGE_FRAME_READ
    decoder = Decoder()
    decoder.receive_data(frame_header(64 << 20) + bytes(100))
    assert decoder.payloads() == []
    assert decoder.buffered <= 104


def test_short_repr_is_bounded_whatever_the_value() -> None:
    assert short_repr([1, "a", {"b": (2,)}]) == repr([1, "a", {"b": (2,)}])
    assert short_repr(nested(100_000)).startswith("[[[[")
    long = short_repr({"k": b"x" * 10_000_000})
    assert len(long) == 203 and long.endswith("...")


# -- goridge ---------------------------------------------------------------------------------------


def goridge_reply(seq: int, body: bytes, flags: int = 0) -> bytes:
    return goridge_frame(CONTROL | RAW, b"App.Echo" + struct.pack("<Q", seq)) + goridge_frame(flags, body)


def test_goridge_json_nested_100000_deep_fails_only_its_call() -> None:
    p = GoridgeProtocol(max_frame_size=1 << 20, max_inflight=4)
    deep = p.send_request("App.Echo", None, None, owner=None)
    fine = p.send_request("App.Echo", None, None, owner=None)
    p.data_to_send()
    p.receive_data(goridge_reply(deep.msgid, b"[" * 100_000 + b"]" * 100_000))
    p.receive_data(goridge_reply(fine.msgid, json.dumps({"ok": 1}).encode()))
    assert p.events() == [deep, fine]
    assert deep.error is not None and deep.error["type"] == "bad_reply"
    assert "deeper than Python's json decodes" in deep.error["message"]
    assert fine.error is None and fine.result == {"ok": 1}


def test_goridge_decoder_holds_what_it_was_fed_and_splits_many_frames_in_one_read() -> None:
    p = GoridgeProtocol(max_frame_size=1 << 20, max_inflight=5000)
    calls = [p.send_request("App.Echo", None, None, owner=None) for _ in range(5000)]
    p.data_to_send()
    wire = b"".join(goridge_reply(c.msgid, b"1") for c in calls)
    p.receive_data(wire)
    assert p.events() == calls
    p.receive_data(goridge_reply(0, b"1")[:20])
    assert p._decoder.buffered <= len(wire) + 20


# -- a Connection: the calls of a broken connection fail at once ------------------------------------


@pytest.mark.fault(
    fault="a reply and a malformed frame in one read, then silence",
    sees="the reply for its call; ProtocolError at once for the connection's other calls",
)
@pytest.mark.parametrize(
    ("garbage", "code"),
    [(frame_header(1) + b"\x07", "bad_message"), (frame_header(1) + b"\xc1", "bad_msgpack")],
    ids=["not a message", "not msgpack"],
)
async def test_a_bad_frame_read_with_good_ones_fails_the_other_calls_at_once(
    garbage: bytes, code: str, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            opened, fake = await open_fake(nursery, answer=None)
            connection = Connection(opened, PoolSettings(1, Limits(1 << 20, 8), keepalive_timeout=None))
            await nursery.start(connection.run)
            outcomes: dict[str, Any] = {}

            async def call(name: str) -> None:
                try:
                    outcomes[name] = await connection.call("App.Echo", name)
                except ProtocolError as exc:
                    outcomes[name] = exc

            async with trio.open_nursery() as calls:
                calls.start_soon(call, "first")
                first = await fake.requests.receive()
                calls.start_soon(call, "second")
                await fake.requests.receive()
                # The reply to the first and garbage, in one write; then the peer says nothing.
                await fake.send(frame(Response(first.msgid, None, "first")) + garbage)
            assert outcomes["first"] == "first"
            assert isinstance(outcomes["second"], ProtocolError)
            assert outcomes["second"].code == code
            assert connection.broken
            nursery.cancel_scope.cancel()


# -- $log: a bounded number of loggers --------------------------------------------------------------


@pytest.mark.fault(
    fault="$log records each naming a new logger (10,000 names)",
    sees=f"at most {MAX_GO_LOGGERS} loggers made; the rest logged to trio_gotask.go with their name",
)
def test_log_records_naming_10000_loggers_make_at_most_the_bound(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_handlers, "_GO_LOGGERS", _handlers._GoLoggers())  # none made yet
    caplog.set_level(logging.INFO, logger="trio_gotask.go")
    before = set(logging.Logger.manager.loggerDict)
    names = [f"hostile{i}" for i in range(5_000)] + [f"a.b{i}.c{i}" for i in range(5_000)]
    for name in names:
        log_record(HostLog(0, name, "m", None, {"k": 1}))
    made = set(logging.Logger.manager.loggerDict) - before
    assert 0 < len(made) <= MAX_GO_LOGGERS
    assert all(name.startswith("trio_gotask.go.") for name in made)
    records = [r for r in caplog.records if r.name.startswith("trio_gotask.go")]
    assert [r.__dict__["go_logger"] for r in records] == names
    first, last = records[0], records[-1]
    assert (first.name, first.getMessage()) == ("trio_gotask.go.hostile0", "m k=1")
    assert (last.name, last.getMessage()) == ("trio_gotask.go", "m logger='a.b4999.c4999' k=1")
    # A name the program configured a logger for keeps it, past the bound too.
    configured = logging.getLogger("trio_gotask.go.configured")
    log_record(HostLog(0, "configured", "to it", None, None))
    assert caplog.records[-1].name == configured.name
