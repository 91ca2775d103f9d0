"""Encoding for tests: messages the client never sends (responses, requests of any shape) and
bare values, packed with the options the client's own encoder uses."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from trio_gotask._wire import (
    NOTIFICATION,
    REQUEST,
    RESPONSE,
    Message,
    Request,
    Response,
    _packer,
    frame_header,
)


def pack(value: Any) -> bytes:
    """One msgpack value, as the client's encoder packs it."""
    return _packer().pack(value)  # type: ignore[no-any-return]


def encode(message: Message) -> bytes:
    """The payload of any message."""
    if isinstance(message, Request):
        obj: list[Any] = [REQUEST, message.msgid, message.method, message.params, message.meta]
    elif isinstance(message, Response):
        obj = [RESPONSE, message.msgid, message.error, message.result]
    else:
        obj = [NOTIFICATION, message.method, message.params]
    return pack(obj)


class _Explosive:
    def __repr__(self) -> str:
        raise RuntimeError("a bug of the decoder")


def plant_decoder_bug(monkeypatch: pytest.MonkeyPatch) -> bytes:
    """Make the client's decoder fail with `RuntimeError` on one frame, as only a bug of its own
    would (msgpack hands it an object whose ``repr`` raises), and return that frame. Works on
    the compiled core too: it looks ``msgpack.unpackb`` up at each call."""
    trigger = pack([2, "$bug", None])
    unpackb = msgpack.unpackb

    def planted(data: Any, **options: Any) -> Any:
        if bytes(data) == trigger:
            return _Explosive()
        return unpackb(data, **options)

    monkeypatch.setattr(msgpack, "unpackb", planted)
    return frame_header(len(trigger)) + trigger
