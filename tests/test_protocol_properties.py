"""Property tests of the sans-I/O core: whatever the bytes, the decoder answers with a message, a
request for more bytes, or ProtocolError, and never anything else."""

from __future__ import annotations

import datetime
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings
from wirehelpers import encode

from trio_gotask._errors import ProtocolError
from trio_gotask._wire import Decoder, Encoder, Request, Response, frame_header, parse_message

pytestmark = pytest.mark.fast  # no process: nox -s fast

UTC = datetime.timezone.utc

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(),
    st.binary(),
    st.datetimes(timezones=st.just(UTC)),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(max_size=8), children, max_size=5),
        st.dictionaries(st.integers(-1000, 1000), children, max_size=5),
    ),
    max_leaves=20,
)


def decode_all(decoder: Decoder) -> list[Any]:
    out = []
    while (message := decoder.next_message()) is not None:
        out.append(message)
    return out


@settings(max_examples=300)
@given(st.binary(max_size=200), st.integers(1, 64))
def test_random_bytes_never_crash_the_decoder(data: bytes, max_frame_size: int) -> None:
    decoder = Decoder(max_frame_size)
    decoder.receive_data(data)
    try:
        decode_all(decoder)
        decoder.receive_eof()
    except ProtocolError as exc:
        assert exc.code in {"too_large", "empty_frame", "bad_msgpack", "bad_message", "truncated"}


@settings(max_examples=300)
@given(st.integers(0, 2**32 - 1), st.text(), values, st.data())
def test_requests_survive_any_split(msgid: int, method: str, params: Any, data: st.DataObject) -> None:
    payload = Encoder().request(msgid, method, params, 1.5)
    stream = frame_header(len(payload)) + payload
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=4)))
    decoder = Decoder()
    got: list[Any] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        decoder.receive_data(stream[start:end])
        got += decode_all(decoder)
    decoder.receive_eof()
    assert got == [Request(msgid, method, params, {"timeout": 1.5})]


@given(st.integers(0, 2**32 - 1), values)
def test_responses_round_trip(msgid: int, result: Any) -> None:
    message = Response(msgid, None, result)
    payload = encode(message)
    decoder = Decoder()
    decoder.receive_data(frame_header(len(payload)) + payload)
    assert decode_all(decoder) == [message]


@given(values)
def test_parse_message_accepts_or_refuses_cleanly(obj: Any) -> None:
    try:
        parse_message(obj)
    except ProtocolError as exc:
        assert exc.code == "bad_message"


@settings(max_examples=100)
@given(
    st.lists(st.binary(min_size=1, max_size=5000), min_size=1, max_size=4),
    st.lists(st.integers(1, 700), max_size=12),
    st.booleans(),
)
def test_large_frames_fill_their_own_buffer(blobs: list[bytes], chunks: list[int], use_view: bool) -> None:
    # A tiny threshold sends these frames through the large-frame buffer, fed either way a reader
    # can: receive_data() copies, or a receive straight into large_frame_view(). Frames of any
    # sizes in a row reuse (or outgrow) the buffer of the one before.
    messages = [Response(i, None, blob) for i, blob in enumerate(blobs)]
    stream = b"".join(frame_header(len(p)) + p for p in map(encode, messages))
    decoder = Decoder(large_frame=16)
    got: list[Any] = []
    pos = 0
    for size in [*chunks, len(stream)]:
        piece = stream[pos : pos + size]
        pos += len(piece)
        view = decoder.large_frame_view()
        if use_view and view is not None:
            take = min(len(view), len(piece))
            view[:take] = piece[:take]
            view.release()
            decoder.large_frame_filled(take)
            piece = piece[take:]
        if piece:
            decoder.receive_data(piece)
        got += decode_all(decoder)
    decoder.receive_eof()
    assert got == messages


def test_the_large_frame_buffer_is_kept_up_to_a_limit() -> None:
    decoder = Decoder(large_frame=16, spare_limit=1000)
    payloads = {size: encode(Response(1, None, bytes(size))) for size in (100, 300, 500, 900, 2000)}
    for size, kept in [(500, 500), (300, 500), (900, 900), (2000, 900), (100, 900)]:
        payload = payloads[size]
        decoder.receive_data(frame_header(len(payload)) + payload[:10])
        assert decode_all(decoder) == []  # the frame's buffer is chosen here
        decoder.receive_data(payload[10:])
        assert decode_all(decoder) == [Response(1, None, bytes(size))]
        assert decoder._spare is not None and len(decoder._spare) == len(payloads[kept])


def test_truncated_large_frame_is_reported() -> None:
    payload = encode(Response(1, None, bytes(100)))
    decoder = Decoder(large_frame=16)
    decoder.receive_data(frame_header(len(payload)) + payload[:50])
    assert decoder.next_message() is None
    with pytest.raises(ProtocolError) as info:
        decoder.receive_eof()
    assert info.value.code == "truncated"
