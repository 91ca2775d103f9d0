"""Fuzz the client's two decoders for a while: `nox -s fuzz` (CONTRIBUTING.md).

    python tests/fuzz_decoders.py [SECONDS] [--seed N] [--target gotask|goridge|greeting]

Hypothesis makes byte streams from valid frames, the golden vectors (tests/vectors/), msgpack
values, JSON and random bytes, mutates some of them (bytes flipped, cut, inserted; a length
changed), and feeds each to a decoder fed as a connection feeds it, in random chunkings: all at
once, one byte at a time, or in pieces, a large frame's bytes also received straight into the
decoder's buffer. The oracle, whatever the bytes:

- the decoder raises nothing but `ProtocolError` (`receive_data`, `events`, `receive_eof`; a
  greeting may also end in `Refused`);
- every event is of the documented types, with fields of the documented types; an answered call
  was in flight, and comes out once; a host call is only for a client that takes them;
- the decoder holds no more than it was fed, plus one read's worth (`LARGE_FRAME_READ`) while a
  large frame is received into its buffer.

It runs rounds of examples, each round with its own seed drawn from ``--seed``, until SECONDS
(default 20) have passed, and prints the seed first. A failure prints the shrunk example, the
seed that replays its round and hypothesis' ``@reproduce_failure`` blob, and exits 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import struct
import sys
import time
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypothesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trio_gotask._errors import ProtocolError
from trio_gotask._goridge import CONTROL, EMPTY, ERROR, RAW, GoridgeProtocol
from trio_gotask._goridge import frame as goridge_frame
from trio_gotask._handlers import log_record
from trio_gotask._protocol import (
    Call,
    ClientProtocol,
    Drained,
    Event,
    GoingAway,
    HostCall,
    HostCancel,
    HostLog,
    Refused,
    read_greeting,
)
from trio_gotask._wire import (
    LARGE_FRAME_READ,
    MAX_MSGID,
    PROTOCOL_VERSION,
    Decoder,
    Hello,
    _packer,
    frame_header,
    is_error_map,
)

VECTORS = Path(__file__).resolve().parent / "vectors"
EVENT_TYPES = typing.get_args(Event)


def _vectors(name: str, **match: str) -> list[bytes]:
    entries = json.loads((VECTORS / name).read_text())
    return [bytes.fromhex(e["hex"]) for e in entries if all(e.get(k) == v for k, v in match.items())]


GOTASK_VECTORS = _vectors("messages.json") + _vectors("malformed.json")
GORIDGE_VECTORS = _vectors("goridge.json", kind="reply")


def pack(value: Any) -> bytes:
    return _packer().pack(value)  # type: ignore[no-any-return]


def framed(payload: bytes) -> bytes:
    return frame_header(len(payload)) + payload


# -- values and frames ---------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=20),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=6) | st.integers(-5, 5), children, max_size=4),
    ),
    max_leaves=12,
)

# msgpack that decodes to what Python cannot hold, or not at all, or that declares more than it
# has: spliced in where a value belongs.
AWKWARD = [
    b"\x91" * 1100 + b"\xc0",  # nested past msgpack's 1024 levels
    b"\x91" * 999 + b"\x90",  # nested to just under Python's recursion limit
    b"\x81\x91\x01\x02",  # a map keyed by an array
    b"\x81\x81\x01\x02\x03",  # a map keyed by a map
    b"\xd7\xff" + b"\xff" * 8,  # a timestamp past year 9999
    b"\xc7\x01\x05x",  # an ext of type 5
    b"\xc1",  # never used
    b"\xdb\xff\xff\xff\xff",  # a 4 GiB str, declared
    b"\xc6\xff\xff\xff\xff",  # bin
    b"\xc9\xff\xff\xff\xff\x05",  # ext
    b"\xdd\xff\xff\xff\xff",  # an array of 4 billion items
    b"\xdf\xff\xff\xff\xff",  # a map
    b"\xa3\xff\xfe\xfd",  # a str that is not UTF-8
]
raw_values = st.one_of(values.map(pack), st.sampled_from(AWKWARD), st.binary(max_size=12))
RESERVED = ["$cancel", "$log", "$goaway", "$drained", "$hello", "$refused", "$auth", "$ping", "$pong", "$x"]


@st.composite
def log_records(draw: st.DrawFn) -> Any:
    record = {
        "level": draw(st.integers(-12, 12) | values),
        "logger": draw(st.sampled_from(["", "db", "a.b", "x" * 300]) | st.text(max_size=8) | values),
        "message": draw(st.text(max_size=20) | values),
        "time": draw(st.none() | values),
        "attrs": draw(
            st.none() | st.dictionaries(st.text(max_size=5) | scalars, values, max_size=4) | values
        ),
    }
    keys = draw(st.lists(st.sampled_from(sorted(record)), unique=True))
    return {k: record[k] for k in keys} if draw(st.booleans()) else record


def array(items: list[bytes]) -> bytes:
    """A msgpack array of ``items``, each already packed."""
    return _packer().pack_array_header(len(items)) + b"".join(items)  # type: ignore[no-any-return]


def mutate(data: bytes, draw: st.DrawFn) -> bytes:
    """``data`` with a few bytes flipped, cut, inserted or repeated."""
    for _ in range(draw(st.integers(1, 3))):
        if not data:
            return draw(st.binary(max_size=8))
        at = draw(st.integers(0, len(data) - 1))
        how = draw(st.sampled_from(["flip", "cut", "insert", "delete", "repeat"]))
        if how == "flip":
            data = data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1 :]
        elif how == "cut":
            data = data[:at]
        elif how == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
        elif how == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 4)) :]
        elif len(data) < 4096:
            data = data[:at] + data[at:] * 2
    return data


odd_msgids = st.one_of(st.integers(-(2**63), 2**64 - 1).map(pack), raw_values)
error_maps = st.builds(lambda t, m: pack({"type": t, "message": m}), st.text(max_size=8), st.text(max_size=8))
# Most frames are well formed, with odd values only where a peer may put any (results, params,
# log records, a $cancel's msgid), so that a stream gets far; the rest break the protocol.
GOTASK_KINDS = (
    ["reply"] * 5
    + ["host call"] * 2
    + ["notification"] * 4
    + [
        "odd reply",
        "odd host call",
        "vector",
        "anything",
        "large",
        "header",
    ]
)


@st.composite
def gotask_streams(draw: st.DrawFn, calls: int) -> bytes:
    """The frames a sidecar sends after its $hello, to a client with ``calls`` calls in flight
    (msgids 0 to ``calls`` - 1)."""
    unanswered = list(draw(st.permutations(range(calls))))
    host_msgid = draw(st.integers(0, MAX_MSGID - 20))
    frames = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(GOTASK_KINDS))
        if kind == "reply" and unanswered:
            error = draw(st.sampled_from([pack(None)] * 3 + [b""])) or draw(error_maps)
            wire = framed(array([pack(1), pack(unanswered.pop()), error, draw(raw_values)]))
        elif kind == "host call":
            host_msgid += draw(st.integers(1, 2))
            meta = draw(
                st.none()
                | st.builds(lambda t: {"timeout": t}, st.floats() | st.integers(-(2**63), 2**64 - 1) | values)
                | st.dictionaries(st.text(max_size=5), values, max_size=3)
                | st.builds(
                    lambda m: {"metadata": m},
                    st.dictionaries(
                        st.text(max_size=5) | st.integers(-(2**63), 2**63 - 1),
                        st.text(max_size=5) | values,
                        max_size=3,
                    )
                    | values,
                )
            )
            name = draw(st.sampled_from(["Py.Echo", "trio_gotask.Config", ""]) | st.text(max_size=8))
            items = [pack(0), pack(host_msgid), pack(name), draw(raw_values), pack(meta)]
            wire = framed(array(items if draw(st.integers(0, 3)) else items[:4]))
        elif kind == "notification" or (kind == "reply" and not unanswered):
            method = draw(st.sampled_from(RESERVED))
            if method == "$log":
                params = pack(draw(log_records()))
            elif method == "$cancel":
                params = draw(st.integers(host_msgid - 3, host_msgid + 1).map(pack) | raw_values)
            else:
                params = draw(raw_values)
            wire = framed(array([pack(2), pack(method), params]))
        elif kind == "odd reply":  # any msgid, error, length
            items = [pack(1), draw(odd_msgids), draw(error_maps | raw_values), draw(raw_values)]
            wire = framed(array(items[: draw(st.integers(1, 4))] + draw(st.lists(raw_values, max_size=1))))
        elif kind == "odd host call":
            items = [pack(0), draw(odd_msgids), draw(raw_values), draw(raw_values), draw(raw_values)]
            wire = framed(array(items[: draw(st.integers(1, 5))] + draw(st.lists(raw_values, max_size=1))))
        elif kind == "vector":
            wire = draw(st.sampled_from(GOTASK_VECTORS))
        elif kind == "anything":
            wire = framed(draw(raw_values)) if draw(st.booleans()) else draw(st.binary(max_size=24))
        elif kind == "large":  # a reply with a big bin result, or a host call with big params
            size = draw(st.sampled_from([1 << 18, (1 << 18) + 7, 1 << 20, 5 << 20]))
            blob = pack(bytes([draw(st.integers(0, 255))]) * size)
            as_reply = draw(st.booleans())
            if unanswered and as_reply:
                wire = framed(array([pack(1), pack(unanswered.pop()), pack(None), blob]))
            else:
                host_msgid += 1
                wire = framed(array([pack(0), pack(host_msgid), pack("Py.Echo"), blob, pack(None)]))
        else:  # a header that declares more than follows, or too much
            length = draw(st.sampled_from([0, 1, 1 << 18, 1 << 26, 2**32 - 1]) | st.integers(0, 2**32 - 1))
            wire = struct.pack(">I", length)
        if draw(st.integers(0, 9)) == 0:
            wire = mutate(wire, draw)
        frames.append(wire)
    return b"".join(frames)


@st.composite
def chunkings(draw: st.DrawFn, length: int) -> list[int]:
    """The sizes of the pieces a stream of ``length`` bytes arrives in (see `pieces`)."""
    how = draw(st.sampled_from(["all", "bytes", "pieces", "pieces"]))
    if how == "all":
        return [max(length, 1)]
    if how == "bytes" and length <= 20_000:
        return [1]
    return draw(st.lists(st.integers(1, 70_000) | st.integers(1, 40), min_size=1, max_size=12))


def pieces(stream: bytes, sizes: list[int]) -> Iterator[bytes]:
    """``stream`` in pieces of ``sizes``, in turn; one byte at a time for ``[1]``. Past 2,000
    pieces, a large stream comes in larger ones."""
    at, i = 0, 0
    least = 1 if sizes == [1] else len(stream) // 2000
    while at < len(stream):
        size = max(sizes[i % len(sizes)], least)
        yield stream[at : at + size]
        at += size
        i += 1


# -- the gotask format: ClientProtocol after a real greeting ---------------------------------------


@dataclass
class GotaskCase:
    max_host_calls: int
    client_max_frame_size: int
    hello: Hello
    calls: int
    abandoned: list[bool]
    answer_host_calls: bool
    stream: bytes
    sizes: list[int]
    by_view: bool

    def __repr__(self) -> str:  # the stream in hex, so that a failure can be replayed by hand
        return (
            f"GotaskCase(max_host_calls={self.max_host_calls}, client_max_frame_size="
            f"{self.client_max_frame_size}, hello={self.hello}, calls={self.calls}, abandoned="
            f"{self.abandoned}, answer_host_calls={self.answer_host_calls}, sizes={self.sizes}, "
            f"by_view={self.by_view}, stream=bytes.fromhex({self.stream.hex()!r}))"
        )


@st.composite
def gotask_cases(draw: st.DrawFn) -> GotaskCase:
    hello = Hello(PROTOCOL_VERSION, draw(st.sampled_from([1024, 1 << 20, 64 << 20])), draw(st.integers(1, 8)))
    calls = draw(st.integers(0, hello.max_inflight))
    hello_frame = framed(
        pack(
            [
                2,
                "$hello",
                {"version": 2, "max_frame_size": hello.max_frame_size, "max_inflight": hello.max_inflight},
            ]
        )
    )
    stream = hello_frame + draw(gotask_streams(calls))
    return GotaskCase(
        max_host_calls=draw(st.sampled_from([0, 0, 1, 4])),
        client_max_frame_size=draw(st.sampled_from([1024, 4096, 1 << 20, 64 << 20])),
        hello=hello,
        calls=calls,
        abandoned=draw(st.lists(st.booleans(), min_size=calls, max_size=calls)),
        answer_host_calls=draw(st.booleans()),
        stream=stream,
        sizes=draw(chunkings(len(stream))),
        by_view=draw(st.booleans()),
    )


def check_event(event: Any) -> None:
    assert type(event) in EVENT_TYPES, f"an event of an undocumented type: {event!r}"


def run_gotask(case: GotaskCase) -> None:
    greeting_decoder = Decoder(case.client_max_frame_size)
    chunks = list(pieces(case.stream, case.sizes))
    hello: Hello | None = None
    fed = 0
    try:
        while hello is None:
            if not chunks:
                return  # the client's limit refused the $hello, say: nothing more to feed
            chunk = chunks.pop(0)
            fed += len(chunk)
            greeting_decoder.receive_data(chunk)
            hello = read_greeting(greeting_decoder)
    except ProtocolError:
        return  # a $hello larger than the client's frame limit
    assert hello == case.hello
    p = ClientProtocol(
        hello,
        max_frame_size=case.client_max_frame_size,
        max_inflight=8,
        max_host_calls=case.max_host_calls,
        initial_data=greeting_decoder.unconsumed(),
    )
    fed = len(greeting_decoder.unconsumed())
    in_flight: dict[int, Call] = {}
    for i in range(case.calls):
        call = p.send_request("App.Echo", i, None, owner=i)
        assert call.msgid == i
        in_flight[call.msgid] = call
    p.data_to_send()
    for call, abandon in zip(list(in_flight.values()), case.abandoned, strict=True):
        if abandon:
            p.abandon(call)
    running: set[int] = set()

    def take_events() -> None:
        # A batch of events is decoded before any is handled, so a $cancel may follow, in the
        # same batch, a host call this loop has answered already.
        answered: set[int] = set()
        for event in p.events():
            check_event(event)
            if type(event) is Call:
                assert in_flight.pop(event.msgid, None) is event, f"{event!r} was not in flight"
                assert event.error is None or is_error_map(event.error), event.error
            elif type(event) is HostCall:
                assert case.max_host_calls, "a host call for a client that takes none"
                assert type(event.msgid) is int and 0 <= event.msgid <= MAX_MSGID
                assert event.msgid not in running and len(running) < case.max_host_calls
                assert type(event.method) is str
                assert type(event.metadata) is dict
                assert all(type(k) is str and type(v) is str for k, v in event.metadata.items())
                assert event.timeout is None or (
                    type(event.timeout) in (int, float) and not math.isnan(event.timeout)
                )
                running.add(event.msgid)
                if case.answer_host_calls:
                    p.send_response(event.msgid, None, event.params)
                    running.discard(event.msgid)
                    answered.add(event.msgid)
            elif type(event) is HostCancel:
                assert type(event.msgid) is int and (event.msgid in running or event.msgid in answered)
            elif type(event) is HostLog:
                assert case.max_host_calls, "a log record for a client that takes no host calls"
                assert type(event.level) is int and type(event.logger) is str and type(event.message) is str
                assert event.attrs is None or type(event.attrs) is dict
                log_record(event)
            else:
                assert type(event) in (GoingAway, Drained)
        p.data_to_send()
        held = p._decoder.buffered
        assert held <= fed + LARGE_FRAME_READ, f"the decoder holds {held} bytes, fed {fed}"

    try:
        take_events()
        for chunk in chunks:
            if case.by_view:
                while chunk and (view := p.receive_buffer()) is not None:
                    assert 0 < len(view) <= LARGE_FRAME_READ
                    with view:
                        take = min(len(view), len(chunk))
                        view[:take] = chunk[:take]
                    p.received_into(take)
                    fed += take
                    chunk = chunk[take:]
                    take_events()
            if chunk:
                p.receive_data(chunk)
                fed += len(chunk)
                take_events()
        p.receive_eof()
    except ProtocolError:
        pass  # the connection closes the protocol


# -- a greeting of anything -------------------------------------------------------------------------


@st.composite
def greeting_streams(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    first = draw(
        st.sampled_from(GOTASK_VECTORS)
        | st.builds(lambda params: framed(pack([2, "$hello", params])), values)
        | st.builds(lambda why: framed(array([pack(2), pack("$refused"), why])), raw_values)
        | gotask_streams(0)
    )
    stream = first + draw(gotask_streams(0))
    return stream, draw(chunkings(len(stream)))


def run_greeting(case: tuple[bytes, list[int]]) -> None:
    stream, sizes = case
    decoder = Decoder(1 << 20)
    try:
        for chunk in pieces(stream, sizes):
            decoder.receive_data(chunk)
            hello = read_greeting(decoder)
            if hello is not None:
                assert type(hello) is Hello and hello.version == PROTOCOL_VERSION
                assert hello.max_frame_size >= 1024 and hello.max_inflight >= 1
                return
    except Refused as exc:
        assert len(str(exc)) <= 1010
    except ProtocolError:
        pass


# -- the goridge format ------------------------------------------------------------------------------


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=10,
)
json_bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 200_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 5_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.sampled_from([b"", b"{", b"\xff\xfe", b"1" * 5000, b"1e99999", b"NaN", '"é"'.encode("utf-16")]),
    st.binary(max_size=20),
)


@st.composite
def goridge_frames(draw: st.DrawFn, seqs: list[int]) -> bytes:
    choice = draw(st.integers(0, 11))
    in_flight = bool(seqs) and draw(st.integers(0, 5)) > 0
    seq = draw(st.sampled_from(seqs)) if in_flight else draw(st.integers(0, 2**64 - 1))
    if choice <= 6:  # a reply: header and body
        method = draw(st.sampled_from([b"App.Echo", b""]) | st.binary(max_size=6))
        header = goridge_frame(CONTROL | RAW, method + struct.pack("<Q", seq))
        flags = draw(st.sampled_from([0, RAW, ERROR, EMPTY, RAW | ERROR, CONTROL]) | st.integers(0, 255))
        wire = header + goridge_frame(flags, draw(json_bodies))
    elif choice <= 8:
        wire = draw(st.sampled_from(GORIDGE_VECTORS))
    elif choice == 9:  # a frame of any flags and payload
        wire = goridge_frame(draw(st.integers(0, 255)), draw(st.binary(max_size=30)))
    elif choice == 10:  # a prefix whose lengths disagree, or declare much
        little, big = draw(st.integers(0, 2**64 - 1)), draw(st.integers(0, 2**64 - 1))
        wire = struct.pack("<BQ", draw(st.integers(0, 255)), little) + struct.pack(
            ">Q", draw(st.sampled_from([little, big]))
        )
    else:
        wire = draw(st.binary(max_size=40))
    if draw(st.integers(0, 4)) == 0:
        wire = mutate(wire, draw)
    return wire


@dataclass
class GoridgeCase:
    max_frame_size: int
    calls: int
    abandoned: list[bool]
    stream: bytes
    sizes: list[int]

    def __repr__(self) -> str:
        return (
            f"GoridgeCase(max_frame_size={self.max_frame_size}, calls={self.calls}, abandoned="
            f"{self.abandoned}, sizes={self.sizes}, stream=bytes.fromhex({self.stream.hex()!r}))"
        )


@st.composite
def goridge_cases(draw: st.DrawFn) -> GoridgeCase:
    calls = draw(st.integers(0, 6))
    stream = b"".join(draw(st.lists(goridge_frames(list(range(calls))), max_size=10)))
    return GoridgeCase(
        max_frame_size=draw(st.sampled_from([64, 1024, 1 << 20])),
        calls=calls,
        abandoned=draw(st.lists(st.booleans(), min_size=calls, max_size=calls)),
        stream=stream,
        sizes=draw(chunkings(len(stream))),
    )


def run_goridge(case: GoridgeCase) -> None:
    p = GoridgeProtocol(max_frame_size=case.max_frame_size, max_inflight=8)
    in_flight: dict[int, Call] = {}
    for i in range(case.calls):
        call = p.send_request("App.Echo", i, None, owner=i)
        in_flight[call.msgid] = call
    p.data_to_send()
    for call, abandon in zip(list(in_flight.values()), case.abandoned, strict=True):
        if abandon:
            p.abandon(call)
    fed = 0
    try:
        for chunk in pieces(case.stream, case.sizes):
            p.receive_data(chunk)
            fed += len(chunk)
            for event in p.events():
                check_event(event)
                assert type(event) is Call
                assert in_flight.pop(event.msgid, None) is event, f"{event!r} was not in flight"
                assert event.error is None or is_error_map(event.error), event.error
            held = p._decoder.buffered
            assert held <= fed, f"the decoder holds {held} bytes, fed {fed}"
        p.receive_eof()
    except ProtocolError:
        pass


# -- running -------------------------------------------------------------------------------------------

TARGETS: dict[str, tuple[st.SearchStrategy[Any], Callable[[Any], None]]] = {
    "gotask": (gotask_cases(), run_gotask),
    "greeting": (greeting_streams(), run_greeting),
    "goridge": (goridge_cases(), run_goridge),
}


def at_the_default_recursion_limit(check: Callable[[Any], None]) -> Callable[[Any], None]:
    """``check`` run under CPython's default recursion limit, which hypothesis raises while it
    runs an example: a reader meets nested values with no more room than that."""

    def checked(case: Any) -> None:
        raised = sys.getrecursionlimit()
        sys.setrecursionlimit(1000)
        try:
            check(case)
        finally:
            sys.setrecursionlimit(raised)

    return checked


def run_round(target: str, seed: int, examples: int) -> None:
    """``examples`` examples of ``target`` from ``seed``; raises what a failing example raised."""
    strategy, check = TARGETS[target]
    test = settings(
        max_examples=examples,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )(given(strategy)(at_the_default_recursion_limit(check)))
    hypothesis.seed(seed)(test)()


def quiet_logging() -> None:
    """$log records are logged (checking that nothing fails there), but not shown."""
    logger = logging.getLogger("trio_gotask.go")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(logging.NullHandler())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("seconds", nargs="?", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--target", choices=sorted(TARGETS), action="append")
    parser.add_argument("--examples", type=int, default=100, help="examples per round")
    options = parser.parse_args()
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(1 << 32)
    targets = options.target or sorted(TARGETS)
    print(
        f"fuzz seed {seed}: replay with python tests/fuzz_decoders.py {options.seconds:g} --seed {seed}",
        flush=True,
    )
    quiet_logging()
    rounds = random.Random(seed)
    end = time.monotonic() + options.seconds
    done = {target: 0 for target in targets}
    while time.monotonic() < end:
        for target in targets:
            round_seed = rounds.randrange(1 << 64)
            try:
                run_round(target, round_seed, options.examples)
            except Exception:
                print(
                    f"\nFUZZ FAILURE in {target}: replay its round with\n"
                    f'    python -c \'import sys; sys.path.insert(0, "tests"); import fuzz_decoders as f; '
                    f'f.quiet_logging(); f.run_round("{target}", {round_seed}, {options.examples})\'',
                    flush=True,
                )
                raise
            done[target] += options.examples
    spent = options.seconds + time.monotonic() - end
    counts = ", ".join(f"{target} {n:,}" for target, n in done.items())
    print(f"fuzzed for {spent:.0f} s, no failure: {counts} examples (seed {seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
