"""Encoding for tests: messages the client never sends (responses, requests of any shape) and
bare values, packed with the options the client's own encoder uses."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from trio_gotask._wire import (
    ITEM,
    NOTIFICATION,
    REQUEST,
    RESPONSE,
    Item,
    Message,
    Request,
    Response,
    _packer,
    frame_header,
)


def pack(value: Any) -> bytes:
    """One msgpack value, as the client's encoder packs it; nested deeper than msgpack's packer
    goes (511 levels before msgpack 1.1.1), container by container."""
    packer = _packer()
    try:
        return packer.pack(value)  # type: ignore[no-any-return]
    except ValueError as exc:
        if "recursion limit" not in str(exc):
            raise
    out = bytearray()
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) in (list, tuple):
            out += packer.pack_array_header(len(item))
            stack.extend(reversed(item))
        elif type(item) is dict:
            out += packer.pack_map_header(len(item))
            for key, val in reversed(list(item.items())):
                stack += [val, key]  # popped key first, then its value
        else:
            out += packer.pack(item)
    return bytes(out)


def encode(message: Message) -> bytes:
    """The payload of any message."""
    if isinstance(message, Request):
        obj: list[Any] = [REQUEST, message.msgid, message.method, message.params, message.meta]
    elif isinstance(message, Response):
        obj = [RESPONSE, message.msgid, message.error, message.result]
    elif isinstance(message, Item):
        obj = [ITEM, message.msgid, message.item]
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
