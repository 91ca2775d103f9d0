"""The settings records check themselves, and each wire dialect is decided in one object."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any

import pytest

from trio_gotask import connect_gotask, open_gotask
from trio_gotask._dialect import DIALECTS, SECRET_ENV, Goridge, Native, NativeLauncher, dialect
from trio_gotask._rotation import FIRST_BACKOFF, MAX_BACKOFF, STRIKES
from trio_gotask._settings import LaunchSettings, Limits, PoolSettings, RemoteSettings

pytestmark = pytest.mark.fast  # no process: nox -s fast

LIMITS = Limits(max_frame_size=1 << 20, max_inflight=8)


def launch(**changes: Any) -> LaunchSettings:
    base = LaunchSettings(command=["./app"], transport="unix", env={}, startup_timeout=1.0, grace=0.5)
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(
    ("make", "error", "says"),
    [
        (
            lambda: Limits(max_frame_size=100, max_inflight=1),
            ValueError,
            "max_frame_size must be between 1024",
        ),
        (
            lambda: Limits(max_frame_size=1 << 20, max_inflight=0),
            ValueError,
            "max_inflight must be between 1",
        ),
        (lambda: Limits(1 << 20, 1, max_host_calls=-1), ValueError, "max_host_calls must be between 0"),
        (lambda: Limits(1 << 20, 1.5), TypeError, "max_inflight must be an int"),  # type: ignore[arg-type]
        (lambda: PoolSettings(0, LIMITS), ValueError, "pool_size must be at least 1"),
        (lambda: PoolSettings(1, LIMITS, float("nan")), ValueError, "keepalive_timeout must be more than 0"),
        (lambda: launch(transport="udp"), ValueError, "transport must be one of unix, tcp, pipe"),
        (lambda: launch(command="-x"), TypeError, "args must be a sequence of str"),
        (lambda: launch(env={"A": 1}), TypeError, "env must map str to str"),
        (lambda: launch(startup_timeout=0), ValueError, "startup_timeout must be more than 0"),
        (lambda: launch(grace=-1), ValueError, "shutdown_grace must be at least 0"),
        (lambda: RemoteSettings("", None, None, 1.0, 1.0), ValueError, "secret must be a non-empty str"),
        (
            lambda: RemoteSettings(None, "tls", None, 1.0, 1.0),  # type: ignore[arg-type]
            TypeError,
            "ssl_context must be an ssl.SSLContext",
        ),
        (lambda: RemoteSettings(None, None, "host", 1.0, 1.0), ValueError, "server_hostname is for checking"),
        (lambda: RemoteSettings(None, None, None, 1.0, 1.0, "App.Hi"), TypeError, "idempotent must be"),
        (
            lambda: RemoteSettings(None, None, None, 1.0, 0),
            ValueError,
            "resolve_interval must be more than 0",
        ),
    ],
)
def test_a_record_refuses_a_bad_value_naming_the_keyword(
    make: object, error: type[Exception], says: str
) -> None:
    with pytest.raises(error, match=says):
        make()  # type: ignore[operator]


def test_records_are_frozen_and_replace_checks_again() -> None:
    settings = PoolSettings(2, LIMITS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.pool_size = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="pool_size"):
        dataclasses.replace(settings, pool_size=0)
    remote = RemoteSettings(None, None, None, 1.0, 1.0, ["App.Hi", "App.Hi"])
    assert remote.idempotent == frozenset({"App.Hi"})


def test_every_dialect_is_in_the_table_by_its_name() -> None:
    assert set(DIALECTS) == {"gotask", "goridge"}
    assert all(dialect(name).name == name for name in DIALECTS)
    with pytest.raises(ValueError, match="protocol must be one of gotask, goridge, not 'grpc'"):
        dialect("grpc")


def test_goridge_refuses_what_it_lacks() -> None:
    Native().check(secret="s", ssl_context=None, handlers={}, config={})
    with pytest.raises(ValueError, match="GoTask's goridge format has no secret, handlers"):
        Goridge().check(secret="s", ssl_context=None, handlers={}, config=None)
    assert (Goridge.pool_size, Goridge.max_inflight) == (32, 1)
    assert not Goridge.takes_secret and Native.takes_secret


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["-max-frame-size", "100"], "args holds '-max-frame-size', a flag open_gotask sets itself"),
        (["--max-frame-size=100"], "use max_frame_size=, which sets the limit of both sides"),
        (["-v", "-address", ":6001"], "choose where it listens with transport="),
        (["-listen-on-pipe"], "start the sidecar yourself and call connect_gotask"),
    ],
)
async def test_args_holding_a_flag_the_launch_sets_are_refused_before_any_build(
    args: list[str], says: str
) -> None:
    # A sidecar that does not exist: the refusal comes before building or starting anything.
    with pytest.raises(ValueError, match=re.escape(says)):
        async with open_gotask("/nonexistent/sidecar", args=args):
            pass  # pragma: no cover


def test_flags_after_a_double_dash_and_values_are_the_sidecars_own() -> None:
    Native().check_args(["-db", "x", "--", "-max-frame-size", "7"])
    Native().check_args(["-name=-address", "-max-frame-sizes"])
    Goridge().check_args(["-max-frame-size", "7"])  # GoTask's sidecars have no such flag
    with pytest.raises(ValueError, match="'-address=x'"):
        Goridge().check_args(["-address=x"])


@pytest.mark.parametrize("transport", ["unix", "tcp", "pipe"])
def test_a_native_launch_is_planned_per_transport(transport: str) -> None:
    launcher = NativeLauncher(launch(transport=transport, env={SECRET_ENV: "inherited"}), LIMITS)
    sidecar = launcher.new_sidecar()
    assert sidecar.command[:1] == ["./app"]
    assert sidecar.command[-4:] == ["-max-frame-size", str(1 << 20), "-grace", "0.5s"]
    env = sidecar._env
    if transport == "pipe":
        assert launcher.secret is None and SECRET_ENV not in env
    else:
        assert launcher.secret is not None and env[SECRET_ENV] == launcher.secret != "inherited"


@pytest.mark.parametrize(
    ("seconds", "flag"),
    [(2, "2s"), (0, "0s"), (0.25, "0.25s"), (1e-5, "0.00001s"), (math.inf, "1000000000s")],
)
def test_the_sidecar_gets_shutdown_grace_as_its_own_grace(seconds: float, flag: str) -> None:
    # Go's default grace (5 s) would outlast ours: the sidecar cancels what still runs and exits
    # by the time the client stops waiting for it, instead of being killed in its grace.
    sidecar = NativeLauncher(dataclasses.replace(launch(), grace=seconds), LIMITS).new_sidecar()
    assert sidecar.command[-2:] == ["-grace", flag]


def test_a_goridge_launch_is_told_where_to_listen() -> None:
    pipe = Goridge().launcher(launch(transport="pipe"), LIMITS).new_sidecar()
    assert pipe.command[1:] == ["-listen-on-pipe", "-address", ""]
    unix = Goridge().launcher(launch(transport="unix"), LIMITS).new_sidecar()
    flag, path = unix.command[1:]
    try:
        assert flag == "-address" and os.path.basename(os.path.dirname(path)).startswith("gotask-")
    finally:
        os.rmdir(os.path.dirname(path))


def test_the_public_docstrings_state_the_defaults_the_code_has() -> None:
    """The entry points' docstrings give users numbers; these are the constants' values."""
    opened, connected = open_gotask.__doc__ or "", connect_gotask.__doc__ or ""
    assert f"connections (default {Native.pool_size})" in opened
    assert f"calls at once (default {Native.max_inflight})" in opened
    assert f"``pool_size`` defaults to {Goridge.pool_size}" in connected
    backoff = f"({FIRST_BACKOFF:g} s, doubling with each failure in a row, up to {MAX_BACKOFF:g} s;"
    assert backoff in " ".join(connected.split())
    assert f"fail {['zero', 'one', 'two', 'three'][STRIKES]} in a row" in connected
