"""Go calls Python: host calls over the same connections, on every transport, against the real
example sidecar (its App.CallPy* and App.Nest methods call `gotask.CallHost`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from standalone import standalone
from timing import HANG

from trio_gotask import GoTask, RemoteError, connect_gotask, open_gotask
from trio_gotask._address import Transport

TRANSPORTS = ["unix", "tcp", "pipe"]


class Recorder:
    """Handlers that record what happened to them."""

    def __init__(self) -> None:
        self.started = trio.Event()
        self.cancelled = trio.Event()
        self.running = 0
        self.most_running = 0
        self.together = trio.Event()

    async def never_returns(self, arg: Any) -> None:
        self.started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            self.cancelled.set()
            raise

    async def count(self, arg: int) -> int:
        """Returns once ten of these run at the same time: one after the other, they never do."""
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        if self.running >= 10:
            self.together.set()
        try:
            with trio.fail_after(HANG):
                await self.together.wait()
            return arg * 2
        finally:
            self.running -= 1


def upper(text: str) -> str:
    return text.upper()


async def fail(arg: Any) -> None:
    raise ValueError(f"no good: {arg}")


@pytest.fixture(params=TRANSPORTS)
async def gt(request: pytest.FixtureRequest, sidecar: str) -> AsyncIterator[GoTask]:
    transport: Transport = request.param
    async with open_gotask(
        sidecar, transport=transport, handlers={"Py.Upper": upper, "Py.Fail": fail}
    ) as client:
        yield client


async def test_go_calls_a_python_function(gt: GoTask) -> None:
    assert await gt.call("App.CallPy", {"method": "Py.Upper", "arg": "reasno"}) == "REASNO"


@pytest.mark.fault(
    fault="a Python handler raises",
    sees='Go: a *gotask.HostError "Py.Fail: ValueError: ..."; later host calls work',
)
async def test_a_python_exception_reaches_go_with_its_type_and_message(gt: GoTask) -> None:
    with pytest.raises(RemoteError, match=r"Py\.Fail: ValueError: no good: 7"):
        await gt.call("App.CallPy", {"method": "Py.Fail", "arg": 7})
    assert await gt.call("App.CallPy", {"method": "Py.Upper", "arg": "still fine"}) == "STILL FINE"


@pytest.mark.fault(
    fault="Go calls a name no Python handler has",
    sees="Go: HostError not_found, listing the registered names",
)
async def test_a_name_not_registered_is_not_found_and_says_what_is(gt: GoTask) -> None:
    with pytest.raises(
        RemoteError, match=r"not_found: no handler 'Py\.Nope' is registered in Python"
    ) as info:
        await gt.call("App.CallPy", {"method": "Py.Nope", "arg": 1})
    assert "Py.Upper" in str(info.value)


async def test_a_hundred_goroutines_call_python_at_once(gt: GoTask) -> None:
    recorder = Recorder()
    gt.register("Py.Count", recorder.count)
    assert await gt.call("App.CallPyMany", {"method": "Py.Count", "n": 100}) == [i * 2 for i in range(100)]
    assert recorder.most_running >= 10  # they ran at once, not one after the other


async def test_calls_nest_three_deep_each_way(gt: GoTask) -> None:
    depths: list[int] = []

    async def nest(arg: dict[str, Any]) -> Any:
        depths.append(arg["depth"])
        return await gt.call("App.Nest", {"depth": arg["depth"], "arg": arg["arg"]})

    gt.register("Py.Nest", nest)
    assert await gt.call("App.Nest", {"depth": 3, "arg": "bottom"}) == "bottom"
    assert depths == [2, 1, 0]


@pytest.mark.fault(
    fault="a Python handler never returns, and the Go deadline passes",
    sees="the handler is cancelled; Go: deadline_exceeded",
)
async def test_the_go_deadline_cancels_a_python_handler_that_never_returns(gt: GoTask) -> None:
    recorder = Recorder()
    gt.register("Py.Never", recorder.never_returns)
    ms = 50
    with trio.fail_after(HANG):
        # Should the deadline pass before Go sent the host call (a starved machine), Go answers
        # deadline_exceeded without asking Python: then again, with more time.
        while not recorder.started.is_set():
            outcome = await gt.call("App.CallPyTimeout", {"method": "Py.Never", "arg": None, "ms": ms})
            # Python runs the handler under the same deadline, so either side may notice it first.
            assert outcome["type"] == "deadline_exceeded"
            ms *= 2
        await recorder.cancelled.wait()


@pytest.mark.fault(
    fault="the Python caller of a Go method that waits on a Python handler is cancelled",
    sees="the Go context, then the handler, are cancelled; the connection goes on",
)
async def test_cancelling_the_outer_python_call_cancels_the_whole_chain(gt: GoTask) -> None:
    recorder = Recorder()
    gt.register("Py.Never", recorder.never_returns)
    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(gt.call, "App.CallPy", {"method": "Py.Never", "arg": None})
            await recorder.started.wait()
            nursery.cancel_scope.cancel()
        await recorder.cancelled.wait()  # Python -> Go context -> $cancel -> the handler
    assert await gt.call("App.CallPy", {"method": "Py.Upper", "arg": "after"}) == "AFTER"


async def test_a_deadline_shrinks_as_it_travels(gt: GoTask) -> None:
    seen: list[float] = []

    async def deadline(arg: Any) -> float:
        seen.append(trio.current_effective_deadline() - trio.current_time())
        return seen[-1]

    gt.register("Py.Deadline", deadline)
    with trio.fail_after(HANG):
        left = await gt.call("App.CallPy", {"method": "Py.Deadline", "arg": None})
    assert 0 < left <= HANG


async def test_go_code_outside_a_call_reaches_python_too(gt: GoTask) -> None:
    assert await gt.call("App.CallPyBackground", {"method": "Py.Upper", "arg": "background"}) == "BACKGROUND"


async def test_plain_functions_in_threads_and_services(gt: GoTask) -> None:
    loop_thread = threading.get_ident()

    def where(arg: Any) -> bool:
        return threading.get_ident() == loop_thread

    class Config:
        def __init__(self) -> None:
            self._secret = "hidden"

        def get(self, key: str) -> str:
            return {"region": "eu-west"}.get(key, "")

        async def keys(self) -> list[str]:
            return ["region"]

    gt.register("Py.InLoop", where)
    gt.register("Py.InThread", where, thread=True)
    assert sorted(gt.register_service("Config", Config())) == ["Config.get", "Config.keys"]
    assert await gt.call("App.CallPy", {"method": "Py.InLoop", "arg": None}) is True
    assert await gt.call("App.CallPy", {"method": "Py.InThread", "arg": None}) is False
    assert await gt.call("App.CallPy", {"method": "Config.get", "arg": "region"}) == "eu-west"
    assert await gt.call("App.CallPy", {"method": "Config.keys", "arg": None}) == ["region"]


@pytest.mark.fault(
    fault="a Python handler returns what msgpack cannot carry",
    sees="Go: HostError bad_reply; only that call fails",
)
async def test_a_result_msgpack_cannot_carry_is_a_bad_reply_in_go(gt: GoTask) -> None:
    gt.register("Py.Set", lambda arg: {1, 2})
    with pytest.raises(RemoteError, match="bad_reply: msgpack cannot carry the result"):
        await gt.call("App.CallPy", {"method": "Py.Set", "arg": None})


@pytest.mark.fault(
    fault="Go calls Python on a client opened with max_host_calls=0",
    sees="Go: gotask.ErrNoHost, saying why",
)
async def test_a_client_that_takes_no_host_calls(sidecar: str) -> None:
    async with open_gotask(sidecar, max_host_calls=0, handlers={"Py.Upper": upper}) as gt:
        with pytest.raises(
            RemoteError, match=r"no connection takes host calls: the client announced no max_host_calls"
        ):
            await gt.call("App.CallPy", {"method": "Py.Upper", "arg": "x"})


def test_handler_names_and_functions_are_checked() -> None:
    from trio_gotask._handlers import Handlers

    handlers = Handlers()
    for name in ("", "$cancel", 3):
        with pytest.raises(ValueError, match="handler's name"):
            handlers.register(name, upper)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be callable"):
        handlers.register("Py.X", "not a function")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="is async"):
        handlers.register("Py.X", fail, thread=True)
    with pytest.raises(ValueError, match="no public method"):
        handlers.register_service("Empty", object())


async def test_go_logs_land_in_python_logging(gt: GoTask, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_gotask.go")
    await gt.call(
        "App.Log", {"level": "warn", "message": "disk almost full", "logger": "db", "attrs": {"free": 3}}
    )
    await gt.call("App.Log", {"level": "debug", "message": "rich", "attrs": {"rich": True}})
    records = [r for r in caplog.records if r.name.startswith("trio_gotask.go")]
    assert [(r.name, r.levelno, r.getMessage()) for r in records[:1]] == [
        ("trio_gotask.go.db", logging.WARNING, "disk almost full free=3")
    ]
    rich = records[1]
    assert rich.levelno == logging.DEBUG and rich.name == "trio_gotask.go"
    assert rich.__dict__["go_attrs"] == {"rich": True, "req": {"id": 7}, "err": "boom"}


async def test_go_reads_the_configuration_python_gives(sidecar: str) -> None:
    async with open_gotask(sidecar, config={"region": "eu-west", "limits": {"rps": 5}}) as gt:
        assert await gt.call("App.GetConfig", "limits") == {"rps": 5}
        with pytest.raises(RemoteError, match=r"not_found: the Python app gave no configuration 'zone'"):
            await gt.call("App.GetConfig", "zone")


async def test_without_host_calls_go_logs_go_to_stderr(
    sidecar: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with open_gotask(sidecar, max_host_calls=0) as gt:
        await gt.call("App.Log", {"level": "error", "message": "to stderr instead", "logger": "db"})
    # Leaving the block stops the sidecar, and its stderr is read to the end first.
    (line,) = [r for r in caplog.records if "to stderr instead" in r.getMessage()]
    assert line.name == "trio_gotask.sidecar" and "logger=db" in line.getMessage()


@pytest.mark.parametrize("address", ["127.0.0.1:0", "unix"])
async def test_connect_gotask_takes_handlers_too(sidecar: str, tmp_path: Path, address: str) -> None:
    flag = str(tmp_path / "app.sock") if address == "unix" else address
    async with (
        standalone(sidecar, "-address", flag) as app,
        connect_gotask(app.address, handlers={"Py.Upper": upper}, config={"k": "v"}) as gt,
    ):
        assert await gt.call("App.CallPy", {"method": "Py.Upper", "arg": "remote"}) == "REMOTE"
        assert await gt.call("App.GetConfig", "k") == "v"
        assert await gt.call("App.CallPyBackground", {"method": "Py.Upper", "arg": "bg"}) == "BG"


async def test_cancelling_the_outermost_call_unwinds_a_chain_three_deep(gt: GoTask) -> None:
    started = trio.Event()
    cancelled = trio.Event()

    async def nest(arg: dict[str, Any]) -> Any:
        if arg["depth"] > 0:
            return await gt.call("App.Nest", {"depth": arg["depth"], "arg": None})
        started.set()
        try:
            return await gt.call("App.Slow", 3_600_000)  # the innermost Go context
        except trio.Cancelled:
            cancelled.set()
            raise

    gt.register("Py.Nest", nest)
    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            # Python -> Go -> Python -> Go -> Python -> Go (App.Slow)
            nursery.start_soon(gt.call, "App.Nest", {"depth": 2, "arg": None})
            await started.wait()
            await gt.call("App.Running", 1)  # App.Slow runs in Go
            nursery.cancel_scope.cancel()
        await cancelled.wait()  # the innermost Python handler
        assert await gt.call("App.WaitCancelled", 1) == 1  # and the innermost Go context


async def test_an_error_deep_in_a_chain_crosses_every_hop(gt: GoTask) -> None:
    async def nest(arg: dict[str, Any]) -> Any:
        if arg["depth"] > 0:
            return await gt.call("App.Nest", {"depth": arg["depth"], "arg": None})
        return await gt.call("App.Fail", "the disk is full")  # a Go error, at the bottom

    gt.register("Py.Nest", nest)
    # Go error -> RemoteError in the inner handler -> HostError in Go -> ... -> the outer caller.
    with pytest.raises(RemoteError, match=r"App\.Nest: Py\.Nest: RemoteError: .*App\.Fail: the disk is full"):
        await gt.call("App.Nest", {"depth": 2, "arg": None})
