"""Transports: how a stream to the sidecar is opened for each kind of address."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from typing import Final, Literal

import trio

Transport = Literal["unix", "tcp", "pipe"]
TRANSPORTS: Final = ("unix", "tcp", "pipe")

# Kernel buffers for Unix sockets and pipes larger than the defaults (208 KiB and 64 KiB): a large
# frame then crosses in fewer writes and wake-ups. The kernel caps the sizes at its limits
# (net.core.wmem_max, fs.pipe-max-size) and allocates them only as data waits. TCP is left to the
# kernel's own tuning. A 1 MiB pipe moved 16 MiB no faster than a 256 KiB one here, and small
# calls over it looked slower (p50 1.4-2.5x of unix, against 1.1-1.5x).
SOCKET_BUFFER_SIZE: Final = 1 << 20
PIPE_BUFFER_SIZE: Final = 256 * 1024


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


# sun_path holds 108 bytes on Linux, 104 on macOS, with the terminating NUL.
_MAX_SOCKET_PATH: Final = 103


def check_address(address: str) -> None:
    """Raise `ValueError`, naming ``address``, if it can be neither a Unix socket path nor a TCP
    ``host:port`` to connect to."""
    if not address or "\0" in address:
        raise ValueError(f"{address!r} is not an address: give a Unix socket path or host:port")
    if classify(address) == "tcp":
        port = split_host_port(address)[1]
        if not 0 < port < 65536:
            raise ValueError(f"the port of {address!r} must be between 1 and 65535")
    elif len(os.fsencode(address)) > _MAX_SOCKET_PATH:
        raise ValueError(
            f"{address!r} is too long for a Unix socket path ({_MAX_SOCKET_PATH} bytes at most): "
            "use a shorter path, or TCP (host:port)"
        )


async def open_stream(address: str) -> trio.abc.Stream:
    """Connect to a sidecar listening at ``address`` (a socket path or ``host:port``)."""
    if classify(address) == "tcp":
        host, port = split_host_port(address)
        return await trio.open_tcp_stream(host, port)
    stream = await trio.open_unix_socket(address)
    enlarge_socket_buffers(stream.socket)
    return stream


def enlarge_socket_buffers(sock: trio.socket.SocketType) -> None:
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):  # only a speed-up
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_SIZE)


def enlarge_pipe(stream: trio.lowlevel.FdStream) -> None:
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
    if set_size is not None:
        with contextlib.suppress(OSError):  # over the user's pipe quota: only a speed-up
            fcntl.fcntl(stream.fileno(), set_size, PIPE_BUFFER_SIZE)
