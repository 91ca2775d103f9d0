"""A lone caller reads its own reply (`Connection._lead`, docs/performance.md): every hand-over
of the descriptor between it and the reader task, on a socket pair and on a pipe each way, against
the sidecar written in Python (tests/fakesidecar.py). The interleavings are forced with
`wait_all_tasks_blocked`; test_connection.py runs the rest of the connection's tests over these
channels too."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from fakesidecar import FakePeer, frame, open_fake
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_gotask import ProtocolError, SidecarError
from trio_gotask._connection import Connection, Unsent
from trio_gotask._handlers import Handlers
from trio_gotask._settings import Limits, PoolSettings
from trio_gotask._wire import DRAINED, GOAWAY, LOG, Notification, Request, Response

pytestmark = pytest.mark.fast  # no process: nox -s fast


@pytest.fixture(params=["socket", "pipe"])
def channel(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def connected(
    channel: str, *, handlers: Handlers | None = None, keepalive_timeout: float | None = None, **peer: Any
) -> AsyncIterator[tuple[Connection, FakePeer]]:
    async with trio.open_nursery() as nursery:
        peer.setdefault("answer", None)
        opened, fake = await open_fake(nursery, channel=channel, max_host_calls=4 if handlers else 0, **peer)
        connection = Connection(
            opened, PoolSettings(1, Limits(1 << 22, 64), keepalive_timeout), handlers=handlers
        )
        await nursery.start(connection.run)
        yield connection, fake
        nursery.cancel_scope.cancel()


async def lone_call(connection: Connection, fake: FakePeer, nursery: trio.Nursery, got: list[Any]) -> Request:
    """Start a call with nothing else in flight; return its request once the caller reads for
    itself."""

    async def call() -> None:
        try:
            got.append(await connection.call("App.Echo", len(got)))
        except BaseException as exc:
            got.append(exc)
            if not isinstance(exc, Exception):
                raise

    nursery.start_soon(call)
    request = await fake.requests.receive()
    await trio.testing.wait_all_tasks_blocked()
    assert connection._lead_call is not None and connection._lead_call.msgid == request.msgid
    return request


async def test_a_lone_caller_reads_its_own_reply_again_and_again(channel: str) -> None:
    async with connected(channel) as (connection, fake):
        for i in range(20):
            async with trio.open_nursery() as nursery:
                got: list[Any] = []
                request = await lone_call(connection, fake, nursery, got)
                await fake.reply(request.msgid, i)
            assert got == [i]
            assert connection._lead_call is None
        assert connection.load == 0 and connection._protocol.in_flight == 0


async def test_calls_back_to_back_each_lead_before_the_reader_task_runs(channel: str) -> None:
    async def echo(request: Request) -> Any:
        return request.params

    async with connected(channel, answer=echo) as (connection, _):
        await trio.testing.wait_all_tasks_blocked()
        leads = 0
        lead = connection._lead

        async def counted(call: Any) -> Any:
            nonlocal leads
            leads += 1
            return await lead(call)

        connection._lead = counted  # type: ignore[method-assign]
        for i in range(50):  # no checkpoint between calls but the calls' own
            assert await connection.call("App.Echo", i) == i
        assert leads == 50


async def follow(connection: Connection, fake: FakePeer, nursery: trio.Nursery, got: list[Any]) -> Request:
    """Start a second call while a caller reads for itself; return its request."""

    async def call() -> None:
        got.append(await connection.call("App.Echo", "second"))

    nursery.start_soon(call)
    return await fake.requests.receive()


@pytest.mark.parametrize("first", ["leader", "follower"])
async def test_a_second_caller_follows_and_either_reply_may_come_first(channel: str, first: str) -> None:
    async with connected(channel) as (connection, fake):
        async with trio.open_nursery() as nursery:
            got: list[Any] = []
            lead = await lone_call(connection, fake, nursery, got)
            followed: list[Any] = []
            follow_request = await follow(connection, fake, nursery, followed)
            if first == "leader":
                await fake.reply(lead.msgid, "first")
                await trio.testing.wait_all_tasks_blocked()
                assert got == ["first"] and not followed
                await fake.reply(follow_request.msgid, "second")
            else:
                await fake.reply(follow_request.msgid, "second")
                await trio.testing.wait_all_tasks_blocked()
                assert followed == ["second"] and not got  # the leader handed it over
                await fake.reply(lead.msgid, "first")
        assert got == ["first"] and followed == ["second"]


async def test_both_replies_in_one_read_reach_both_callers(channel: str) -> None:
    async with connected(channel) as (connection, fake):
        async with trio.open_nursery() as nursery:
            got: list[Any] = []
            lead = await lone_call(connection, fake, nursery, got)
            followed: list[Any] = []
            second = await follow(connection, fake, nursery, followed)
            await fake.send(frame(Response(second.msgid, None, "b")) + frame(Response(lead.msgid, None, "a")))
        assert got == ["a"] and followed == ["b"]


async def test_a_cancelled_leader_gives_up_its_call_and_the_next_caller_leads(channel: str) -> None:
    async with connected(channel) as (connection, fake):
        async with trio.open_nursery() as nursery:
            got: list[Any] = []
            request = await lone_call(connection, fake, nursery, got)
            nursery.cancel_scope.cancel()
        assert len(got) == 1 and isinstance(got[0], trio.Cancelled)
        await trio.testing.wait_all_tasks_blocked()
        assert fake.cancels == [request.msgid]
        assert connection.given_up == 1
        await fake.reply(request.msgid, "late")  # the reader task takes the late reply
        await trio.testing.wait_all_tasks_blocked()
        assert connection.given_up == 0 and connection._protocol.in_flight == 0
        async with trio.open_nursery() as nursery:
            got = []
            request = await lone_call(connection, fake, nursery, got)
            await fake.reply(request.msgid, "again")
        assert got == ["again"]


async def test_a_late_reply_read_by_the_next_leader_is_dropped(channel: str) -> None:
    async with connected(channel) as (connection, fake):
        async with trio.open_nursery() as nursery:
            request = await lone_call(connection, fake, nursery, [])
            nursery.cancel_scope.cancel()
        await trio.testing.wait_all_tasks_blocked()  # the writer sends the $cancel
        async with trio.open_nursery() as nursery:
            got: list[Any] = []
            second = await lone_call(connection, fake, nursery, got)  # leads: in_flight was 1
            await fake.send(
                frame(Response(request.msgid, None, "late")) + frame(Response(second.msgid, None, "b"))
            )
        assert got == ["b"] and connection.given_up == 0


async def test_the_sidecar_closing_fails_the_leader_with_the_reason(channel: str) -> None:
    async with connected(channel) as (connection, fake):
        async with trio.open_nursery() as nursery:
            got: list[Any] = []
            await lone_call(connection, fake, nursery, got)
            await fake.hang_up()
        assert len(got) == 1 and isinstance(got[0], SidecarError)
        assert "closed the connection" in str(got[0])
        assert connection.broken


async def test_a_malformed_frame_fails_the_leader_and_closes_the_connection(channel: str) -> None:
    async with connected(channel) as (connection, fake):
        async with trio.open_nursery() as nursery:
            got: list[Any] = []
            await lone_call(connection, fake, nursery, got)
            await fake.send(b"\x00\x00\x00\x02\xc1\xc1")
        assert len(got) == 1 and isinstance(got[0], ProtocolError)
        assert connection.broken


@pytest.mark.parametrize("quick", [True, False])
async def test_a_bad_reply_read_while_the_reader_task_waits_too_fails_the_connection(
    channel: str, quick: bool
) -> None:
    """The reader task waits for the descriptor when a caller takes over, and the caller's read
    (after a pass of the run loop, or woken with the reader) takes the bytes first: the reader,
    which sees no bytes left, must still be told. The peer answers as soon as it reads the
    request, so that which of the two reads first varies from call to call."""

    for _ in range(20):
        async with connected(channel) as (connection, fake):
            await trio.testing.wait_all_tasks_blocked()  # the reader task waits, with no call
            connection._quick = quick

            async def answer_with_garbage() -> None:
                await fake.requests.receive()
                await fake.send(b"\x00\x00\x00\x02\xc1\xc1")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer_with_garbage)
                with pytest.raises(ProtocolError):
                    await connection.call("App.Echo", 1)
            assert connection.broken


async def test_a_bad_frame_after_the_leaders_reply_fails_only_what_follows(channel: str) -> None:
    async with connected(channel) as (connection, fake):
        async with trio.open_nursery() as nursery:
            got: list[Any] = []
            request = await lone_call(connection, fake, nursery, got)
            await fake.send(frame(Response(request.msgid, None, "fine")) + b"\x00\x00\x00\x01\xc1")
        assert got == ["fine"]
        await trio.testing.wait_all_tasks_blocked()
        assert connection.broken


async def test_the_connection_closing_wakes_the_leader(channel: str) -> None:
    async with trio.open_nursery() as outer:
        opened, fake = await open_fake(outer, channel=channel, answer=None)
        connection = Connection(opened, PoolSettings(1, Limits(1 << 20, 8), None))
        closing = trio.CancelScope()

        async def serve(task_status: trio.TaskStatus[None]) -> None:
            with closing:
                await connection.run(task_status=task_status)

        await outer.start(serve)
        got: list[Any] = []
        async with trio.open_nursery() as nursery:
            await lone_call(connection, fake, nursery, got)
            closing.cancel()  # what closing the pool does
        assert len(got) == 1 and isinstance(got[0], SidecarError)
        assert "connection to the sidecar was closed" in str(got[0])
        outer.cancel_scope.cancel()


async def test_keepalive_notices_a_frozen_sidecar_while_a_caller_reads(
    channel: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with connected(channel, keepalive_timeout=10, ping=True) as (connection, fake):
        fake.ping = False  # it stops answering pings: frozen
        async with trio.open_nursery() as nursery:
            got: list[Any] = []
            await lone_call(connection, fake, nursery, got)
            start = trio.current_time()
        assert len(got) == 1 and isinstance(got[0], SidecarError)
        assert "keepalive_timeout" in str(got[0])
        assert trio.current_time() - start <= 10


async def test_goaway_then_drained_while_leading_sends_the_call_elsewhere(channel: str) -> None:
    async with connected(channel) as (connection, fake):
        async with trio.open_nursery() as nursery:
            got: list[Any] = []
            await lone_call(connection, fake, nursery, got)
            await fake.send(frame(Notification(GOAWAY, None)) + frame(Notification(DRAINED, None)))
        assert len(got) == 1 and isinstance(got[0], Unsent)
        assert connection.broken


async def test_host_calls_and_logs_read_by_the_leader_are_served(
    channel: str, caplog: pytest.LogCaptureFixture
) -> None:
    handlers = Handlers()
    handlers.register("Py.Double", lambda x: x * 2)
    caplog.set_level(logging.INFO)
    async with connected(channel, handlers=handlers) as (connection, fake):
        async with trio.open_nursery() as nursery:
            got: list[Any] = []
            request = await lone_call(connection, fake, nursery, got)
            log = {"level": 0, "logger": "lead", "message": "read by the caller", "time": None, "attrs": None}
            await fake.send(frame(Request(7, "Py.Double", 21, None)) + frame(Notification(LOG, log)))
            answer = await fake.responses.receive()
            assert answer.msgid == 7 and answer.result == 42
            await trio.testing.wait_all_tasks_blocked()
            assert not got and connection._lead_call is not None  # still its caller's to read
            await fake.reply(request.msgid, "done")
        assert got == ["done"]
        assert "read by the caller" in caplog.text


async def test_a_large_reply_is_read_by_its_caller_in_pieces(channel: str) -> None:
    async with connected(channel, max_frame_size=1 << 22) as (connection, fake):
        big = bytes(range(256)) * 8192  # 2 MiB: read into a buffer of its own
        async with trio.open_nursery() as nursery:
            got: list[Any] = []
            request = await lone_call(connection, fake, nursery, got)
            await fake.reply(request.msgid, big)
        assert got == [big]


async def test_the_reader_serves_what_comes_between_calls(
    channel: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with connected(channel, handlers=Handlers()) as (connection, fake):  # logs need host calls
        for i in range(3):
            log = {"level": 0, "logger": "idle", "message": f"between calls {i}", "time": None, "attrs": None}
            await fake.send(frame(Notification(LOG, log)))
            await trio.testing.wait_all_tasks_blocked()
            assert f"between calls {i}" in caplog.text  # no caller: the reader task read it
            async with trio.open_nursery() as nursery:
                got: list[Any] = []
                request = await lone_call(connection, fake, nursery, got)
                await fake.reply(request.msgid, i)
            assert got == [i]


@settings(max_examples=60)
@given(st.lists(st.sampled_from(["call", "reply", "cancel", "log", "yield"]), max_size=40))
def test_any_schedule_of_calls_replies_and_cancels_keeps_every_caller_whole(actions: list[str]) -> None:
    """Callers that come and go, replies in any order, cancellations and notifications, over a
    socket pair: every caller gets its own reply or `Cancelled`, nothing is read twice or lost,
    and the connection ends with nothing in flight."""

    async def main() -> None:
        async with connected("socket") as (connection, fake):
            results: dict[int, Any] = {}
            scopes: dict[int, trio.CancelScope] = {}
            pending: list[Request] = []
            async with trio.open_nursery() as nursery:

                async def call(i: int) -> None:
                    with trio.CancelScope() as scope:
                        scopes[i] = scope
                        results[i] = await connection.call("App.Echo", i)
                        return
                    results[i] = "cancelled"

                for step, action in enumerate(actions):
                    if action == "call":
                        nursery.start_soon(call, step)
                        pending.append(await fake.requests.receive())
                    elif action == "reply" and pending:
                        request = pending.pop(step % len(pending))
                        await fake.reply(request.msgid, request.params)
                    elif action == "cancel":
                        live = [i for i, s in scopes.items() if i not in results and not s.cancel_called]
                        if live:
                            scopes[live[step % len(live)]].cancel()
                    elif action == "log":
                        log = {"level": 0, "logger": "x", "message": "m", "time": None, "attrs": None}
                        await fake.send(frame(Notification(LOG, log)))
                    await trio.testing.wait_all_tasks_blocked()
                for request in pending:
                    await fake.reply(request.msgid, request.params)
            assert results.keys() == scopes.keys()
            for i, result in results.items():
                assert result in (i, "cancelled")
            await trio.testing.wait_all_tasks_blocked()
            assert connection._protocol.in_flight == 0 and connection.given_up == 0
            assert connection.load == 0 and not connection.broken

    trio.run(main)
