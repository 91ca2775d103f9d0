"""A fake DNS for tests: `Resolver` answers `trio.socket.getaddrinfo` from a dict the test
changes as it goes."""

from __future__ import annotations

import socket
from typing import Literal

import trio
from timing import HANG

AddressInfo = (
    tuple[Literal[socket.AddressFamily.AF_INET], socket.SocketKind, int, str, tuple[str, int]]
    | tuple[
        Literal[socket.AddressFamily.AF_INET6],
        socket.SocketKind,
        int,
        str,
        tuple[str, int, int, int] | tuple[int, bytes],
    ]
)


class Resolver(trio.abc.HostnameResolver):
    """A test's DNS: ``names`` maps a host name to the addresses it resolves to now (changed as the
    test goes), or is missing it (the name does not resolve). Installed for the running test with
    `trio.socket.set_custom_hostname_resolver`; addresses that are IPs never reach it."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names
        self.asked = 0
        self._asked = trio.Event()

    async def getaddrinfo(
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[AddressInfo]:
        self.asked += 1
        self._asked.set()
        self._asked = trio.Event()
        await trio.lowlevel.checkpoint()
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        assert isinstance(port, int)
        found: list[AddressInfo] = []
        for ip in self.names[name]:
            if ":" in ip:
                found.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port, 0, 0)))
            else:
                found.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)))
        return found

    async def getnameinfo(
        self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int
    ) -> tuple[str, str]:
        raise NotImplementedError

    async def resolutions(self, count: int) -> None:
        """Wait until ``count`` more resolutions have started: with ``count`` 2, one that began
        after this call has finished, and so has its update of the endpoints."""
        target = self.asked + count
        with trio.fail_after(HANG):
            while self.asked < target:
                await self._asked.wait()
