"""Addresses: what an address means (docs/protocol.md, section 5, "Addresses"), and how a stream
to one is opened."""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from typing import Final, Literal

import trio

Transport = Literal["unix", "tcp", "pipe"]


TRANSPORTS: Final = ("unix", "tcp", "pipe")


# Larger kernel buffers than the defaults (docs/performance.md, "Payload sizes"); the kernel caps
# them at its limits. TCP is left to the kernel's own tuning.
SOCKET_BUFFER_SIZE: Final = 1 << 20


# sun_path holds 108 bytes on Linux, 104 on macOS, with the terminating NUL.
MAX_SOCKET_PATH: Final = 103


TCP_DEAD_PEER: Final = tuple(
    (level, getattr(socket, name), value)
    for level, name, value in [
        (socket.SOL_SOCKET, "SO_KEEPALIVE", 1),
        (socket.IPPROTO_TCP, "TCP_KEEPIDLE", 10),  # seconds idle before the first probe
        (socket.IPPROTO_TCP, "TCP_KEEPINTVL", 5),  # seconds between probes
        (socket.IPPROTO_TCP, "TCP_KEEPCNT", 3),  # probes unanswered before the connection fails
        (socket.IPPROTO_TCP, "TCP_USER_TIMEOUT", 30_000),  # ms that sent data may go unacknowledged
    ]
    if hasattr(socket, name)
)
"""Socket options of a TCP connection to a sidecar, so that a peer that vanished without closing
it fails its calls with `SidecarError` within about 30 s: an idle connection by keepalive probes,
one with data unacknowledged by ``TCP_USER_TIMEOUT``. A sidecar that is only slow still
acknowledges (its kernel does), so neither fires for it. Options the system lacks are skipped."""


@dataclass(frozen=True)
class Address:
    """An address read by the rule both sides share."""

    kind: Literal["unix", "tcp"]
    host: str = ""
    """The TCP host (brackets removed), ``""`` for the local machine."""
    port: int = 0


def parse_address(address: str) -> Address:
    """Read ``address`` as a Unix socket path or a TCP ``host:port``; raise `ValueError`, naming
    it and saying why, for one that can be neither."""
    if not address or "\0" in address:
        raise ValueError(f"{address!r} is not an address: give a Unix socket path or host:port")
    if "/" in address:
        return Address("unix")
    host, _, port = address.rpartition(":")
    if not (port.isascii() and port.isdigit()):
        return Address("unix")
    number = int(port)
    if number > 65535:
        raise ValueError(f"the port of {address!r} is above 65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if "[" in host or "]" in host:
            raise ValueError(f"{address!r} is not host:port: stray brackets in its host")
    elif ":" in host or "[" in host or "]" in host:
        raise ValueError(f"{address!r} is not host:port: an IPv6 host goes in brackets, as in [::1]:{port}")
    return Address("tcp", host, number)


def check_address(address: str) -> Address:
    """`parse_address`, for an address to connect to: a port must not be 0, a socket path must
    fit in ``sun_path``."""
    parsed = parse_address(address)
    if parsed.kind == "tcp" and parsed.port == 0:
        raise ValueError(f"the port of {address!r} must be between 1 and 65535")
    if parsed.kind == "unix" and len(os.fsencode(address)) > MAX_SOCKET_PATH:
        raise ValueError(
            f"{address!r} is too long for a Unix socket path ({MAX_SOCKET_PATH} bytes at most): "
            "use a shorter path, or TCP (host:port)"
        )
    return parsed


async def open_stream(address: str) -> trio.abc.Stream:
    """Connect to a sidecar listening at ``address`` (a socket path or ``host:port``). A TCP
    connection notices a peer that vanished (a host powered off, a network cut) in about half a
    minute rather than the kernel's quarter of an hour: see `TCP_DEAD_PEER`."""
    parsed = parse_address(address)
    if parsed.kind == "tcp":
        stream = await trio.open_tcp_stream(parsed.host or "localhost", parsed.port)
        for level, option, value in TCP_DEAD_PEER:
            with contextlib.suppress(OSError):  # an option this system lacks: the kernel's default
                stream.socket.setsockopt(level, option, value)
        return stream
    stream = await trio.open_unix_socket(address)
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):  # only a speed-up
            stream.socket.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_SIZE)
    return stream


def free_local_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, for a sidecar that cannot pick its own
    and report it (GoTask's prints no handshake). Another process may take it first; the sidecar
    then fails to start, saying so on stderr."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
