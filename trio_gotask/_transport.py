"""Transports: how a stream to the sidecar is opened for each kind of address."""

from __future__ import annotations

from typing import Final, Literal

import trio

Transport = Literal["unix", "tcp", "pipe"]
TRANSPORTS: Final = ("unix", "tcp", "pipe")


def classify(address: str) -> Literal["unix", "tcp"]:
    """Tell a Unix socket path from a TCP ``host:port``, the way the sidecar's ``-address`` does."""
    if "/" in address:
        return "unix"
    host, sep, port = address.rpartition(":")
    if sep and port.isdigit() and host:
        return "tcp"
    return "unix"


def split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


async def open_stream(address: str) -> trio.abc.Stream:
    """Connect to a sidecar listening at ``address`` (a socket path or ``host:port``)."""
    if classify(address) == "tcp":
        host, port = split_host_port(address)
        return await trio.open_tcp_stream(host, port)
    return await trio.open_unix_socket(address)
