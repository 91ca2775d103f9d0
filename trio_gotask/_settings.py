"""Settings, each a frozen record that checks itself when made: the public keyword arguments of
`open_gotask` and `connect_gotask` become these records once, the internal layers take the records,
and the pytest plugin and the command line build the same ones. A record refuses a bad value with
`TypeError` or `ValueError` naming the keyword argument and its range."""

from __future__ import annotations

import math
import ssl
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from ._address import TRANSPORTS, Transport
from ._wire import MAX_MSGID, MIN_FRAME_SIZE

DEFAULT_KEEPALIVE_TIMEOUT: Final = 20.0
"""Seconds of silence after which a connection's sidecar is taken for frozen (docs/timeouts.md)."""


def check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    if type(value) is not int:
        raise TypeError(f"{name} must be an int, not {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"at least {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"{name} must be {bound}, not {value}")


def check_seconds(name: str, value: object, *, positive: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {value!r}")
    if math.isnan(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be {'more than' if positive else 'at least'} 0 seconds, not {value}")


@dataclass(frozen=True)
class Limits:
    """What one connection carries: frames up to ``max_frame_size`` bytes, up to ``max_inflight``
    calls at once, and up to ``max_host_calls`` host calls at once (0: none)."""

    max_frame_size: int
    max_inflight: int
    max_host_calls: int = 0

    def __post_init__(self) -> None:
        check_int("max_frame_size", self.max_frame_size, MIN_FRAME_SIZE, 2**32 - 1)
        check_int("max_inflight", self.max_inflight, 1, MAX_MSGID + 1)
        check_int("max_host_calls", self.max_host_calls, 0, MAX_MSGID + 1)


@dataclass(frozen=True)
class PoolSettings:
    """A pool of up to ``pool_size`` connections, each within ``limits``, each taken for frozen
    after ``keepalive_timeout`` seconds of silence (``None``: never)."""

    pool_size: int
    limits: Limits
    keepalive_timeout: float | None = DEFAULT_KEEPALIVE_TIMEOUT

    def __post_init__(self) -> None:
        check_int("pool_size", self.pool_size, 1)
        if self.keepalive_timeout is not None:
            check_seconds("keepalive_timeout", self.keepalive_timeout, positive=True)


@dataclass(frozen=True)
class LaunchSettings:
    """How each run of a launched sidecar is started: ``command`` (the program, then the user's
    arguments), over ``transport``, in ``env`` (the environment it inherits), ready within
    ``startup_timeout`` seconds, given ``grace`` seconds to exit when asked."""

    command: Sequence[str]
    transport: Transport
    env: Mapping[str, str]
    startup_timeout: float
    grace: float

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, not {self.transport!r}")
        command = self.command
        if isinstance(command, (str, bytes)) or not all(isinstance(a, str) for a in command):
            raise TypeError(f"args must be a sequence of str (one per argument), not {command!r}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.env.items()):
            raise TypeError("env must map str to str")
        check_seconds("startup_timeout", self.startup_timeout, positive=True)
        check_seconds("shutdown_grace", self.grace, positive=False)


@dataclass(frozen=True)
class RemoteSettings:
    """How sidecars started elsewhere are reached: the shared ``secret``, TLS (``ssl_context``,
    certificates checked against ``server_hostname``), ``connect_timeout`` for each connection and
    its greeting, ``resolve_interval`` between resolutions of a ``dns:`` name, and the
    ``idempotent`` methods a lost call may be sent again for."""

    secret: str | None
    ssl_context: ssl.SSLContext | None
    server_hostname: str | None
    connect_timeout: float
    resolve_interval: float
    idempotent: Collection[str] = frozenset()

    def __post_init__(self) -> None:
        if isinstance(self.idempotent, str) or not all(isinstance(m, str) for m in self.idempotent):
            raise TypeError(f"idempotent must be a collection of method names (str), not {self.idempotent!r}")
        object.__setattr__(self, "idempotent", frozenset(self.idempotent))
        if self.secret is not None and (not isinstance(self.secret, str) or not self.secret):
            raise ValueError("secret must be a non-empty str (the sidecar's GOTASK_SECRET), or None")
        if self.ssl_context is not None and not isinstance(self.ssl_context, ssl.SSLContext):
            raise TypeError(f"ssl_context must be an ssl.SSLContext, not {self.ssl_context!r}")
        if self.ssl_context is None and self.server_hostname is not None:
            raise ValueError("server_hostname is for checking a TLS certificate: pass ssl_context too")
        check_seconds("connect_timeout", self.connect_timeout, positive=True)
        check_seconds("resolve_interval", self.resolve_interval, positive=True)
