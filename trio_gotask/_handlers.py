"""Handlers: the Python functions a sidecar may call by name (host calls, docs/protocol.md section 2)."""

from __future__ import annotations

import datetime
import inspect
import logging
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, final

import trio

from ._intercept import HostCallInfo, HostInterceptor, compose
from ._protocol import HostLog
from ._wire import short_repr

Handler = Callable[..., Any]
"""A function of the call's one argument (or of none), plain or async, returning the result."""

_STACK_LINES: Final = 20
CONFIG: Final = "trio_gotask.Config"
"""The host call that reads the configuration given to `open_gotask` (docs/protocol.md)."""
_RESERVED: Final = "trio_gotask."
GO_LOGGER: Final = "trio_gotask.go"
MAX_GO_LOGGERS: Final = 64
"""How many loggers the sidecars' ``$log`` records may make under `GO_LOGGER`, in all."""
MAX_GO_LOGGER_NAME: Final = 200
"""The longest Go logger name that gets a logger of its own."""


class HandlerNotFound(LookupError):
    pass


class HandlerParams(TypeError):
    pass


@dataclass(frozen=True)
class _Entry:
    function: Handler
    takes_arg: bool
    thread: bool


@final
class Handlers:
    """The handlers a sidecar may call, by name, shared by every connection of a `GoTask`."""

    def __init__(self, handlers: Mapping[str, Handler] | None = None) -> None:
        self._entries: dict[str, _Entry] = {}
        self._chain: Callable[[HostCallInfo], Awaitable[Any]] | None = None
        """The host interceptors around `_run`, or ``None`` when there are none."""
        if handlers is not None:
            if not isinstance(handlers, Mapping):
                raise TypeError(f"handlers must map names to functions, not {handlers!r}")
            for name, function in handlers.items():
                self.register(name, function)

    def register(self, name: str, function: Handler, *, thread: bool = False) -> None:
        """Let the sidecar call ``function`` as ``name``; see `GoTask.register`."""
        if not isinstance(name, str) or not name or name.startswith(("$", _RESERVED)):
            raise ValueError(
                f"a handler's name must be a non-empty str not starting with '$' or {_RESERVED!r}, not {name!r}"
            )
        if not callable(function):
            raise TypeError(f"the handler {name!r} must be callable, not {function!r}")
        if thread and inspect.iscoroutinefunction(function):
            raise ValueError(f"the handler {name!r} is async: it runs in Trio, not in a thread")
        self._entries[name] = _Entry(function, _takes_arg(function), thread)

    def register_service(self, name: str, service: object, *, thread: bool = False) -> list[str]:
        """Register each public method of ``service`` as ``"name.Method"``; return the names."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a service's name must be a non-empty str, not {name!r}")
        names = []
        for attribute in dir(service):
            if attribute.startswith("_"):
                continue
            method = getattr(service, attribute)
            if callable(method) and not isinstance(method, type):
                self.register(f"{name}.{attribute}", method, thread=thread)
                names.append(f"{name}.{attribute}")
        if not names:
            raise ValueError(f"{service!r} has no public method to register as the service {name!r}")
        return names

    def provide_config(self, config: Mapping[str, Any]) -> None:
        """Answer the host call ``trio_gotask.Config`` (``gotask.Config`` in Go) from ``config``."""
        if not isinstance(config, Mapping) or not all(isinstance(k, str) for k in config):
            raise TypeError(f"config must map str keys to values, not {config!r}")
        values = dict(config)

        def read(key: Any) -> Any:
            if key not in values:
                keys = ", ".join(sorted(values)) or "none"
                raise HandlerNotFound(f"the Python app gave no configuration {key!r} (it gave: {keys})")
            return values[key]

        self._entries[CONFIG] = _Entry(read, True, False)

    @property
    def names(self) -> list[str]:
        return sorted(self._entries)

    def intercept(self, interceptors: Sequence[HostInterceptor]) -> None:
        """Run every host call through ``interceptors`` (the first outermost) from now on."""
        self._chain = compose(interceptors, self._run_intercepted) if interceptors else None

    def run(self, name: str, arg: Any, metadata: Mapping[str, str] | None = None) -> Awaitable[Any]:
        """Run the handler ``name`` with ``arg`` (await what this returns), through the host
        interceptors, which see ``metadata`` (the host call's); raise `HandlerNotFound` or
        `HandlerParams`, or what the handler or an interceptor raises."""
        chain = self._chain
        if chain is None:
            return self._run(name, arg)
        return chain(HostCallInfo(name, arg, MappingProxyType(metadata or {})))

    def _run_intercepted(self, info: HostCallInfo) -> Awaitable[Any]:
        return self._run(info.method, info.arg)

    async def _run(self, name: str, arg: Any) -> Any:
        entry = self._entries.get(name)
        if entry is None:
            known = ", ".join(self.names) or "none"
            raise HandlerNotFound(
                f"no handler {name!r} is registered in Python (registered: {known}); register it with "
                "handlers= or GoTask.register"
            )
        args: tuple[Any, ...] = (arg,)
        if not entry.takes_arg:
            if arg is not None:
                raise HandlerParams(f"the handler {name!r} takes no argument, and was given {_short(arg)}")
            args = ()
        if entry.thread:
            return await trio.to_thread.run_sync(entry.function, *args, abandon_on_cancel=True)
        result = entry.function(*args)
        if inspect.isawaitable(result):
            result = await result
        return result


def _takes_arg(function: Handler) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return True  # a builtin without a signature: give it the argument
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in parameters)


def _short(value: Any) -> str:
    return short_repr(value, 100)


def error_map(exc: BaseException) -> dict[str, Any]:
    """The protocol's error map for an exception a handler raised (or its lookup)."""
    if isinstance(exc, HandlerNotFound):
        return {"type": "not_found", "message": str(exc)}
    if isinstance(exc, HandlerParams):
        return {"type": "bad_params", "message": str(exc)}
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    stack = "".join(lines).splitlines()[-_STACK_LINES:]
    return {"type": "error", "message": f"{type(exc).__name__}: {exc}", "stack": "\n".join(stack)}


class _GoLoggers:
    """The loggers of the Go loggers' names, made on first use: at most `MAX_GO_LOGGERS` in all,
    for names of at most `MAX_GO_LOGGER_NAME` characters, since `logging` keeps every logger it
    makes for good and a sidecar may name a new one in each record. Any other name gets the
    logger a program configured for it, if there is one, else `GO_LOGGER` itself."""

    def __init__(self) -> None:
        self._base = logging.getLogger(GO_LOGGER)
        self._named: dict[str, logging.Logger] = {}
        self._made: set[str] = set()
        """The logger names that making those of ``_named`` added (their parents included)."""

    def get(self, name: str) -> tuple[logging.Logger, bool]:
        """The logger for the Go logger ``name``, and whether it is a logger of that name."""
        logger = self._named.get(name)
        if logger is not None:
            return logger, True
        if not name or len(name) > MAX_GO_LOGGER_NAME:
            return self._base, False
        full = f"{GO_LOGGER}.{name}"
        if len(self._made) < MAX_GO_LOGGERS:
            # logging makes a placeholder for each parent of a dotted name: each counts.
            parts = full.split(".")
            new = {".".join(parts[:end]) for end in range(_BASE_PARTS + 1, len(parts) + 1)} - self._made
            if len(self._made) + len(new) <= MAX_GO_LOGGERS:
                self._made |= new
                logger = self._named[name] = logging.getLogger(full)
                return logger, True
        configured = logging.Logger.manager.loggerDict.get(full)
        if isinstance(configured, logging.Logger):
            return configured, True
        return self._base, False


_BASE_PARTS: Final = GO_LOGGER.count(".") + 1
_GO_LOGGERS = _GoLoggers()


def log_record(record: HostLog) -> None:
    """Log a record of the sidecar to ``trio_gotask.go.<logger>`` (``trio_gotask.go`` when it
    names none): Go's levels -4, 0, 4 and 8 become DEBUG, INFO, WARNING and ERROR, and levels
    between them fall between. The attributes follow the message as ``key=value``, and are on
    the record as ``go_attrs``; the Go logger's name is on it as ``go_logger``.

    A name that gets no logger of its own (`_GoLoggers`) goes to ``trio_gotask.go``, with
    ``logger=<name>`` after the message."""
    logger, named = _GO_LOGGERS.get(record.logger)
    level = max(1, round(logging.INFO + record.level * 2.5))
    if not logger.isEnabledFor(level):
        return
    message = record.message
    if record.logger and not named:
        message += f" logger={_short(record.logger)}"
    if record.attrs:
        message += " " + " ".join(f"{key}={_short(value)}" for key, value in record.attrs.items())
    extra: dict[str, Any] = {"go_attrs": record.attrs or {}, "go_logger": record.logger}
    if isinstance(record.time, datetime.datetime):
        extra["go_time"] = record.time
    logger.log(level, "%s", message, extra=extra)
