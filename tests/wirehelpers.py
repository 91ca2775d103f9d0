"""Encoding for tests: messages the client never sends (responses, requests of any shape) and
bare values, packed with the options the client's own encoder uses."""

from __future__ import annotations

from typing import Any

from trio_gotask._wire import NOTIFICATION, REQUEST, RESPONSE, Message, Request, Response, _packer


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
