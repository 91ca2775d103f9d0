"""Interceptors: code that wraps every call a `GoTask` makes, and every host call it serves.

An interceptor is ``async def interceptor(info, call_next)``: it may read and change ``info``
(the method, the argument, the metadata sent with the call), then ``return await
call_next(info)`` to go on down the chain, or return (or raise) without calling it. The chains are
composed once, when the `GoTask` opens; a `GoTask` without interceptors runs none of this.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar


@dataclass(slots=True)
class CallInfo:
    """A call on its way to Go, as an `Interceptor` sees it; an interceptor may change any field
    before it calls ``call_next``."""

    method: str
    """The Go method, ``"Service.Method"``."""
    arg: Any
    """The argument; an interceptor may replace it."""
    metadata: dict[str, str]
    """The application metadata sent with the request (docs/protocol.md, section 2), like gRPC
    metadata or HTTP headers: an interceptor may read and set entries, string keys to string
    values (anything else raises `TypeError` before the call is sent). In Go,
    ``gotask.MetadataFrom(ctx)`` reads it. GoTask's wire format (``protocol="goridge"``)
    carries none: a call with entries raises `GoTaskError` there."""
    stream: bool = False
    """Whether this opens a stream (`GoTask.stream`) rather than making a call. For a stream,
    the chain runs as the stream opens: ``call_next`` sends the request and returns the open
    `ItemStream`, which the interceptor must return; what it does after ``call_next`` happens
    once the stream is open, not when it ends."""
    window: int = field(default=0, repr=False)
    """A stream's credit in bytes (``window`` of `GoTask.stream`); 0 for a call."""


@dataclass(slots=True)
class HostCallInfo:
    """A host call (Go calling a Python handler), as a `HostInterceptor` sees it."""

    method: str
    """The handler's name."""
    arg: Any
    """The argument Go passed; an interceptor may replace it."""
    metadata: Mapping[str, str]
    """The application metadata Go sent with the call (read-only; empty when none)."""


CallNext = Callable[[CallInfo], Awaitable[Any]]
"""The rest of a call's chain, as an `Interceptor` is given it: ``await call_next(info)`` runs it
and returns the call's result (or raises its error)."""

Interceptor = Callable[[CallInfo, CallNext], Awaitable[Any]]
"""``async def interceptor(info: CallInfo, call_next: CallNext) -> Any``: wraps each call of a
`GoTask` (``interceptors=`` of `open_gotask` and `connect_gotask`, the first outermost)."""

HostCallNext = Callable[[HostCallInfo], Awaitable[Any]]
"""The rest of a host call's chain, ending with the handler."""

HostInterceptor = Callable[[HostCallInfo, HostCallNext], Awaitable[Any]]
"""``async def interceptor(info: HostCallInfo, call_next: HostCallNext) -> Any``: wraps each
host call a `GoTask` serves (``host_interceptors=``, the first outermost)."""

Info = TypeVar("Info", CallInfo, HostCallInfo)


def compose(
    interceptors: Sequence[Callable[[Info, Callable[[Info], Awaitable[Any]]], Awaitable[Any]]],
    last: Callable[[Info], Awaitable[Any]],
) -> Callable[[Info], Awaitable[Any]]:
    """One function that runs ``interceptors`` around ``last``, the first outermost."""
    chain = last
    for interceptor in reversed(interceptors):
        chain = _link(interceptor, chain)
    return chain


def _link(
    interceptor: Callable[[Info, Callable[[Info], Awaitable[Any]]], Awaitable[Any]],
    call_next: Callable[[Info], Awaitable[Any]],
) -> Callable[[Info], Awaitable[Any]]:
    # A plain function handing back the interceptor's coroutine: no frame of its own per call.
    def step(info: Info) -> Awaitable[Any]:
        return interceptor(info, call_next)

    return step


def check_interceptors(given: object, keyword: str) -> tuple[Any, ...]:
    """``given`` as a tuple of callables; `TypeError` naming ``keyword`` otherwise."""
    if isinstance(given, (str, bytes)) or not isinstance(given, Sequence):
        raise TypeError(f"{keyword} must be a sequence of async functions (info, call_next), not {given!r}")
    for interceptor in given:
        if not callable(interceptor):
            raise TypeError(f"{keyword} holds {interceptor!r}, which is not callable")
    return tuple(given)


def checked_metadata(method: str, metadata: object) -> dict[str, str]:
    """The metadata an interceptor left in `CallInfo.metadata`, as the dict to send; `TypeError`,
    naming the entry, for a key or value that is not a `str` (nothing has been sent)."""
    if not isinstance(metadata, Mapping):
        raise TypeError(
            f"{method}: CallInfo.metadata must be a dict of str to str, not {type(metadata).__name__}"
        )
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise TypeError(f"{method}: the metadata key {key!r} is a {type(key).__name__}, not a str")
        if not isinstance(value, str):
            raise TypeError(
                f"{method}: the metadata entry {key!r} is a {type(value).__name__}, not a str: {value!r:.100}"
            )
    return metadata if type(metadata) is dict else dict(metadata)
