"""The address rule (docs/protocol.md, section 5), against the vectors the Go tests read too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trio_gotask._address import Address, check_address, parse_address

pytestmark = pytest.mark.fast  # no process: nox -s fast

VECTORS = json.loads((Path(__file__).parent / "vectors" / "addresses.json").read_text())["addresses"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["address"] for v in VECTORS])
def test_address_vector(vector: dict[str, Any]) -> None:
    address = vector["address"]
    if vector["kind"] == "invalid":
        with pytest.raises(ValueError, match=r"port|host|address"):
            parse_address(address)
    elif vector["kind"] == "tcp":
        assert parse_address(address) == Address("tcp", vector["host"], vector["port"])
    else:
        assert parse_address(address) == Address("unix")


def test_the_vectors_cover_every_kind() -> None:
    assert {v["kind"] for v in VECTORS} == {"unix", "tcp", "invalid"}


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("", "not an address"),
        ("host:0", "between 1 and 65535"),  # port 0 is for a sidecar to listen on
        ("/" + "x" * 200, "too long for a Unix socket path"),
        ("::1:6001", r"in brackets, as in \[::1\]:6001"),
        ("h:70000", "above 65535"),
        ("[a]b]:80", "stray brackets"),
    ],
)
def test_a_client_refuses_what_it_cannot_connect_to(address: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        check_address(address)
