"""DNS names as addresses: ``dns:host:port`` (or gRPC's ``dns:///host:port``) stands for every
TCP address ``host`` resolves to; `Endpoints` resolves its names again from time to time."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Final

import trio

from ._address import check_address
from ._errors import SidecarError

DEFAULT_RESOLVE_INTERVAL: Final = 30.0
RESOLVE_GAP: Final = 1.0
"""The least time between two resolutions of the names: an endpoint failing asks for one sooner."""
DNS_PREFIXES: Final = ("dns:///", "dns:")


@dataclass(frozen=True)
class Name:
    """A ``dns:host:port`` address: every address ``host`` resolves to, at ``port``."""

    text: str
    host: str
    port: int


def dns_name(address: str) -> Name | None:
    """The `Name` in ``address`` if it starts with ``dns:`` (or gRPC's ``dns:///``); ``None``
    for a plain address. Raise `ValueError` for a ``dns:`` address without a host and port."""
    for prefix in DNS_PREFIXES:
        if address.startswith(prefix):
            rest = address[len(prefix) :]
            break
    else:
        return None
    parsed = check_address(rest) if rest and "/" not in rest else None
    if parsed is None or parsed.kind != "tcp" or not parsed.host:
        raise ValueError(
            f"{address!r} is not dns:host:port: give the DNS name and the port its sidecars listen "
            "on, as in dns:gotask.default.svc.cluster.local:6001"
        )
    return Name(address, parsed.host, parsed.port)


async def resolve(name: Name) -> list[str]:
    """Every TCP address ``name`` resolves to, as ``host:port`` (IPv6 in brackets), in the
    resolver's order; raise `SidecarError` when it resolves to none."""
    try:
        found = await trio.socket.getaddrinfo(name.host, name.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise SidecarError(f"cannot resolve {name.host!r} (from {name.text!r}): {exc}") from exc
    addresses: dict[str, None] = {}
    for family, _, _, _, sockaddr in found:
        host = sockaddr[0]
        if not isinstance(host, str) or family not in (socket.AF_INET, socket.AF_INET6):
            continue
        addresses[f"[{host}]:{name.port}" if family == socket.AF_INET6 else f"{host}:{name.port}"] = None
    if not addresses:
        raise SidecarError(f"{name.host!r} (from {name.text!r}) resolves to no TCP address")
    return list(addresses)
