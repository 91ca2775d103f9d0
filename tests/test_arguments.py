"""Arguments that cannot work are refused at once, with a message that says what to pass."""

from __future__ import annotations

import math
import ssl
from pathlib import Path
from typing import Any

import pytest

from trio_gotask import RestartPolicy, SidecarError, connect_gotask, open_gotask

BAD_OPEN: list[tuple[str, Any, type[Exception], str]] = [
    ("max_inflight", 0, ValueError, "max_inflight must be between 1 and"),
    ("max_inflight", -1, ValueError, "max_inflight must be between 1 and"),
    ("max_inflight", 2**40, ValueError, "max_inflight must be between 1 and"),
    ("max_inflight", 1.5, TypeError, "max_inflight must be an int"),
    ("max_inflight", True, TypeError, "max_inflight must be an int"),
    ("pool_size", 0, ValueError, "pool_size must be at least 1"),
    ("pool_size", "4", TypeError, "pool_size must be an int"),
    ("max_frame_size", 100, ValueError, "max_frame_size must be between 1024 and"),
    ("max_frame_size", 2**32, ValueError, "max_frame_size must be between 1024 and"),
    ("startup_timeout", 0, ValueError, "startup_timeout must be more than 0"),
    ("startup_timeout", -1.0, ValueError, "startup_timeout must be more than 0"),
    ("startup_timeout", math.nan, ValueError, "startup_timeout must be more than 0"),
    ("startup_timeout", "10", TypeError, "startup_timeout must be a number of seconds"),
    ("shutdown_grace", -0.5, ValueError, "shutdown_grace must be at least 0"),
    ("args", "-max-inflight 4", TypeError, "args must be a sequence of str"),
    ("args", [4], TypeError, "args must be a sequence of str"),
    ("env", {"A": 1}, TypeError, "env must map str to str"),
    ("restart", 3, TypeError, "restart must be a RestartPolicy"),
]


@pytest.mark.fault(
    fault="nonsense arguments (max_inflight=0 or -1, a 100-byte frame limit, a NaN timeout...)",
    sees="ValueError / TypeError at once, naming the argument and its range",
)
@pytest.mark.parametrize(
    ("name", "value", "error", "says"), BAD_OPEN, ids=[f"{b[0]}={b[1]!r}" for b in BAD_OPEN]
)
async def test_open_gotask_refuses_nonsense_at_once(
    sidecar: str, name: str, value: Any, error: type[Exception], says: str
) -> None:
    with pytest.raises(error, match=says):
        async with open_gotask(sidecar, **{name: value}):
            pass


async def test_the_limits_that_are_allowed(sidecar: str) -> None:
    async with open_gotask(
        sidecar, max_inflight=1, max_frame_size=1024, startup_timeout=math.inf, shutdown_grace=0
    ) as gt:
        assert await gt.call("App.Hi", "x") == {"hello": "x"}


BAD_POLICIES: list[tuple[dict[str, Any], str]] = [
    ({"max_restarts": -1}, "max_restarts must be at least 0"),
    ({"max_restarts": 1.5}, "max_restarts must be an int"),
    ({"backoff": -0.1}, "backoff must be at least 0"),
    ({"max_backoff": math.nan}, "max_backoff must be at least 0"),
    ({"reset_after": -1}, "reset_after must be at least 0"),
]


@pytest.mark.parametrize(("fields", "says"), BAD_POLICIES)
def test_restart_policy_refuses_nonsense(fields: dict[str, Any], says: str) -> None:
    with pytest.raises((ValueError, TypeError), match=says):
        RestartPolicy(**fields)


BAD_CONNECT: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"address": ""}, ValueError, "is not an address"),
    ({"address": "localhost:99999"}, ValueError, "port of 'localhost:99999' is above 65535"),
    ({"address": "/tmp/" + "x" * 200}, ValueError, "too long for a Unix socket path"),
    ({"address": 6001}, TypeError, "address must be a str"),
    (
        {"address": "/tmp/gotask.sock", "ssl_context": ssl.create_default_context()},
        ValueError,
        "ssl_context needs a TCP address",
    ),
    ({"address": "127.0.0.1:6001", "server_hostname": "x"}, ValueError, "pass ssl_context too"),
    ({"address": "127.0.0.1:6001", "secret": ""}, ValueError, "secret must be a non-empty str"),
    ({"address": "127.0.0.1:6001", "max_inflight": 0}, ValueError, "max_inflight must be between"),
    ({"address": "127.0.0.1:6001", "pool_size": -2}, ValueError, "pool_size must be at least 1"),
    ({"address": "127.0.0.1:6001", "max_frame_size": 0}, ValueError, "max_frame_size must be between"),
    ({"address": "127.0.0.1:6001", "connect_timeout": 0}, ValueError, "connect_timeout must be more than 0"),
]


@pytest.mark.parametrize(("kwargs", "error", "says"), BAD_CONNECT)
async def test_connect_gotask_refuses_nonsense_at_once(
    kwargs: dict[str, Any], error: type[Exception], says: str
) -> None:
    with pytest.raises(error, match=says):
        async with connect_gotask(**kwargs):
            pass


@pytest.mark.fault(
    fault="connect_gotask to something that is not an address, or to a missing socket",
    sees="SidecarError naming the address and how it was read",
)
async def test_an_address_that_leads_nowhere_is_named(tmp_path: Path) -> None:
    with pytest.raises(SidecarError, match=r"'not an address' \(read as a Unix socket path; a TCP address"):
        async with connect_gotask("not an address"):
            pass
    missing = str(tmp_path / "missing.sock")
    with pytest.raises(SidecarError, match=f"at '{missing}' \\(Unix socket\\): no such socket file"):
        async with connect_gotask(missing):
            pass


@pytest.mark.fault(
    fault="a method name that is not a str (bytes, None, an int)",
    sees="TypeError before anything is sent; the connection unaffected",
)
async def test_a_method_that_is_not_a_string_is_refused_before_sending(sidecar: str) -> None:
    async with open_gotask(sidecar) as gt:
        for method in [b"App.Hi", None, 42, ("App", "Hi")]:
            with pytest.raises(TypeError, match="method must be a str"):
                await gt.call(method, "x")  # type: ignore[arg-type]
        assert gt.statistics().in_flight == 0
        assert await gt.call("App.Hi", "still fine") == {"hello": "still fine"}
