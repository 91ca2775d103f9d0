"""Calls against the real example sidecar: every transport, the type mapping, errors, concurrency."""

from __future__ import annotations

import datetime
import logging
from typing import Any

import pytest
import trio
import trio.testing
from timing import HANG

from trio_gotask import (
    BadParams,
    GoTask,
    MethodNotFound,
    PanicError,
    RemoteError,
    open_gotask,
)
from trio_gotask._address import Transport
from trio_gotask._pool import Pool
from trio_gotask._supervisor import Supervisor


def pool_of(gt: GoTask) -> Pool:
    router = gt._router
    pool = router.current_pool if isinstance(router, Supervisor) else router
    assert isinstance(pool, Pool)
    return pool


def opened(gt: GoTask) -> int:
    return gt.statistics().connections_opened


class LineLogged(logging.Handler):
    """Sets ``seen`` once the sidecar's stderr line ending with ``end`` is logged (by a Trio task,
    so in Trio's thread): a test waits for it rather than for the last lines read at exit."""

    def __init__(self, end: str) -> None:
        super().__init__()
        self.end = end
        self.seen = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().endswith(self.end):
            self.seen.set()

    def __enter__(self) -> LineLogged:
        logging.getLogger("trio_gotask.sidecar").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("trio_gotask.sidecar").removeHandler(self)


TRANSPORTS = ["unix", "tcp", "pipe"]
UTC = datetime.timezone.utc


@pytest.fixture(params=TRANSPORTS)
async def gt(request: pytest.FixtureRequest, sidecar: str) -> Any:
    async with open_gotask(sidecar, transport=request.param) as gt:
        yield gt


async def test_hi(gt: GoTask) -> None:
    assert await gt.call("App.Hi", "Reasno") == {"hello": "Reasno"}


async def test_service_proxy(gt: GoTask) -> None:
    app = gt.service("App")
    assert await app.Hi("Reasno") == {"hello": "Reasno"}
    assert await app.Add({"a": 2, "b": 40}) == 42
    with pytest.raises(AttributeError):
        app._private  # noqa: B018


ROUND_TRIPS: list[tuple[str, Any]] = [
    ("none", None),
    ("true", True),
    ("false", False),
    ("zero", 0),
    ("small", 7),
    ("negative", -33),
    ("uint64_max", 2**64 - 1),
    ("int64_min", -(2**63)),
    ("float", 1.5),
    ("float_negative", -0.1),
    ("float_inf", float("inf")),
    ("str", "héllo ✓"),
    ("str_empty", ""),
    ("bytes", b"\x00\x01\xff"),
    ("bytes_empty", b""),
    ("list", [1, "two", None, [3.5, b"\x04"]]),
    ("list_empty", []),
    ("map", {"a": 1, "b": {"c": [True]}}),
    ("map_empty", {}),
    ("map_int_keys", {1: "one", -2: "minus two", 300: "three hundred"}),
    ("timestamp", datetime.datetime(2024, 2, 29, 12, 30, 15, 123456, tzinfo=UTC)),
    ("timestamp_pre_epoch", datetime.datetime(1960, 1, 1, tzinfo=UTC)),
    ("big_str", "x" * 100_000),
    ("big_bytes", bytes(range(256)) * 4096),
]


@pytest.mark.parametrize(("name", "value"), ROUND_TRIPS, ids=[n for n, _ in ROUND_TRIPS])
async def test_echo_round_trip(gt: GoTask, name: str, value: Any) -> None:
    got = await gt.call("App.Echo", value)
    assert got == value
    assert type(got) is type(value)


async def test_edges_of_the_type_mapping(gt: GoTask) -> None:
    assert await gt.call("App.Echo", (1, 2)) == [1, 2]
    assert await gt.call("App.Echo", bytearray(b"ab")) == b"ab"
    assert await gt.call("App.Echo", memoryview(b"abc")[1:]) == b"bc"
    local = datetime.datetime(2024, 1, 1, 12, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    got = await gt.call("App.Echo", local)
    assert got == local
    assert got.tzinfo == UTC
    # Binary stays binary: Go's []byte argument receives bytes, never a string.
    assert await gt.call("App.Bytes", b"abc") == b"cba"
    with pytest.raises(BadParams):
        await gt.call("App.Bytes", "abc")
    assert await gt.call("App.IntMap", {1: "a", 2: "b"}) == {1: "A", 2: "B"}
    now = await gt.call("App.Now")
    assert isinstance(now, datetime.datetime)
    assert now.tzinfo == UTC
    assert len(await gt.call("App.Large", 1 << 20)) == 1 << 20


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ({1, 2}, TypeError),
        (1j, TypeError),
        (datetime.datetime(2024, 1, 1), ValueError),
        (2**64, OverflowError),
        (-(2**63) - 1, OverflowError),
    ],
)
async def test_values_without_a_mapping_fail_before_sending(
    gt: GoTask, value: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match=r"^App\.Echo: the argument cannot be sent: .*section 3"):
        await gt.call("App.Echo", value)
    assert await gt.call("App.Hi", "still here") == {"hello": "still here"}


async def test_go_error(gt: GoTask) -> None:
    with pytest.raises(RemoteError) as info:
        await gt.call("App.Fail", "no such user")
    exc = info.value
    assert type(exc) is RemoteError
    assert (exc.method, exc.type, exc.message) == ("App.Fail", "error", "no such user")
    assert "no such user" in str(exc)


@pytest.mark.parametrize("claimed", ["shutting_down", "busy"])  # every type: TestServerRuntimeErrorTypes
async def test_a_method_error_cannot_claim_a_type_of_the_runtime(gt: GoTask, claimed: str) -> None:
    with pytest.raises(RemoteError) as info:
        await gt.call("App.FailTyped", {"type": claimed, "message": "from the method"})
    assert type(info.value) is RemoteError and info.value.type == "error"
    assert "from the method" in str(info.value)
    assert await gt.call("App.FailedTyped") == 1  # run once: not re-sent as a call Go never ran
    with pytest.raises(RemoteError) as custom:
        await gt.call("App.FailTyped", {"type": "out_of_stock", "message": "none left"})
    assert custom.value.type == "out_of_stock"


async def test_panic_keeps_the_sidecar_serving(gt: GoTask) -> None:
    with pytest.raises(PanicError) as info:
        await gt.call("App.Panic", "oops")
    assert info.value.type == "panic"
    assert info.value.message == "oops"
    assert info.value.stack
    assert await gt.call("App.Hi", "after") == {"hello": "after"}


async def test_unknown_method(gt: GoTask) -> None:
    with pytest.raises(MethodNotFound) as info:
        await gt.call("App.Nope")
    assert info.value.type == "not_found"
    with pytest.raises(MethodNotFound):
        await gt.call("Nope.Hi")


async def test_bad_params(gt: GoTask) -> None:
    with pytest.raises(BadParams) as info:
        await gt.call("App.Add", "not a struct")
    assert info.value.type == "bad_params"
    assert info.value.message == 'expected a map for main.AddArgs, got str "not a struct"'
    assert await gt.call("App.Add", {"a": 1, "b": 2}) == 3


async def test_an_integer_the_go_type_cannot_hold_is_refused_not_wrapped(gt: GoTask) -> None:
    # App.Add's fields are Go ints (64-bit); 2**63 would have wrapped to -2**63.
    with pytest.raises(BadParams) as info:
        await gt.call("App.Add", {"a": 2**63, "b": 0})
    assert info.value.message == (
        "a: expected an integer from -9223372036854775808 to 9223372036854775807 for int, got int 9223372036854775808"
    )
    assert await gt.call("App.Add", {"a": 2**63 - 1, "b": -(2**63 - 1)}) == 0


async def test_thousand_concurrent_calls_on_one_connection(sidecar: str) -> None:
    results: dict[int, Any] = {}

    async def one(i: int) -> None:
        results[i] = await client.call("App.Echo", [i, "x" * (i % 50)])

    async with open_gotask(sidecar, pool_size=1) as client, trio.open_nursery() as nursery:
        for i in range(1000):
            nursery.start_soon(one, i)
    assert results == {i: [i, "x" * (i % 50)] for i in range(1000)}


async def test_a_burst_opens_the_pool_at_once_and_spreads_over_it(sidecar: str) -> None:
    # 32 calls that return only once all 32 run at the same time: with 8 slots a connection,
    # they must be spread over all four connections, opened while the burst waits.
    async with open_gotask(sidecar, pool_size=4, max_inflight=8) as gt:
        results: list[int] = []

        async def one() -> None:
            results.append(await gt.call("App.Barrier", 32))

        with trio.fail_after(HANG):  # a burst stuck behind one full connection never completes
            async with trio.open_nursery() as nursery:
                for _ in range(32):
                    nursery.start_soon(one)
        assert results == [32] * 32
        assert gt.statistics().connections == 4
        assert opened(gt) == 4


async def test_a_lone_caller_uses_one_connection(sidecar: str) -> None:
    async with open_gotask(sidecar, pool_size=4) as gt:
        for i in range(20):
            assert await gt.call("App.Echo", i) == i
        assert opened(gt) == 1


async def test_calls_wait_for_a_slot_past_max_inflight(sidecar: str) -> None:
    async with open_gotask(sidecar, pool_size=1, max_inflight=4) as client:
        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(client.call, "App.WaitCancelled", 1 << 62)
            await trio.testing.wait_all_tasks_blocked()
            assert client.statistics().in_flight == 50
            (connection,) = pool_of(client)._connections
            assert connection._protocol.in_flight == 4
            nursery.cancel_scope.cancel()

        results = []

        async def echo(i: int) -> None:
            results.append(await client.call("App.Echo", i))

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(echo, i)
        assert sorted(results) == list(range(50))


async def test_sidecar_stderr_goes_to_logging(sidecar: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trio_gotask.sidecar")
    with LineLogged("a line from Go") as line:
        async with open_gotask(sidecar) as gt:
            await gt.call("App.Log", "a line from Go")
            with trio.fail_after(HANG):
                await line.seen.wait()
    assert any("a line from Go" in r.getMessage() for r in caplog.records)


@pytest.mark.fault(
    fault="a method prints to stdout, far more than a pipe holds",
    sees="nothing: its lines are logged as stderr; calls go on, over the pipe too",
)
@pytest.mark.parametrize("transport", ["unix", "tcp", "pipe"])
async def test_stray_stdout_is_logged_and_never_blocks_the_sidecar(
    sidecar: str, transport: Transport, caplog: pytest.LogCaptureFixture
) -> None:
    """Stdout belongs to the protocol: the Go library keeps the real one for the handshake (and
    the pipe's frames) and points the program's stdout at stderr. A method that prints anyway
    (20,000 lines, ~600 KB, ten times what a pipe holds) corrupts nothing and blocks nothing, and
    its lines reach the log as stderr lines."""
    caplog.set_level(logging.INFO, logger="trio_gotask.sidecar")
    with LineLogged(": stray line 19999 from a method") as last:
        async with open_gotask(sidecar, transport=transport) as gt:
            with trio.fail_after(HANG):
                assert await gt.call("App.Hi", "before") == {"hello": "before"}
                assert await gt.call("App.Print", 20_000) == 20_000
                assert await gt.call("App.Hi", "after") == {"hello": "after"}
                await last.seen.wait()
    stray = [r.getMessage() for r in caplog.records if "from a method" in r.getMessage()]
    assert len(stray) == 20_000
    assert stray[-1].endswith(": stray line 19999 from a method")
    # Not through the client's stdout drain, which stays for sidecars that leave stdout alone.
    assert not any("(stdout" in line for line in stray)


@pytest.mark.fault(
    fault="a method reads stdin while the calls travel over it (pipe transport)",
    sees="nothing: it reads an empty stdin; the frames are not taken",
)
async def test_a_method_reading_stdin_takes_no_frames(sidecar: str) -> None:
    async with open_gotask(sidecar, transport="pipe") as gt:
        with trio.fail_after(HANG):  # a method holding the frames' pipe hangs every later call
            assert await gt.call("App.ReadStdin", 64) == b""
            assert await gt.call("App.Hi", "after") == {"hello": "after"}
