"""`Connection` against a sidecar written in Python (tests/fakesidecar.py) over memory streams, with
the autojump clock: every interleaving here is deterministic. The same behaviours against the
real Go sidecar are in test_calls.py, test_cancel.py and test_flow.py."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from fakesidecar import Fail, FakePeer, frame, open_fake

from trio_gotask import BadReply, MethodNotFound, ProtocolError, RemoteError, SidecarError
from trio_gotask._channel import PeerClosed
from trio_gotask._connection import (
    _FINISH_WRITING,
    MAX_UNSENT_ANSWERS,
    Connection,
    Unsent,
)
from trio_gotask._errors import ErrorFactory, error_factory
from trio_gotask._handlers import Handlers
from trio_gotask._opening import greet
from trio_gotask._protocol import Refused
from trio_gotask._settings import Limits, PoolSettings
from trio_gotask._wire import Notification, Request, Response, frame_header

SETTINGS = PoolSettings(1, Limits(1 << 20, 8), keepalive_timeout=None)
"""A connection's settings, unless a test needs others: no keepalive on the autojump clock."""

pytestmark = pytest.mark.fast  # no process: nox -s fast

CHANNEL = "memory"


@pytest.fixture(autouse=True, params=["memory", "socket", "pipe"])
def channel(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs over memory streams and over real descriptors (a socket pair, and a
    pipe each way), where a lone caller reads its own reply (`Connection._lead`)."""
    monkeypatch.setattr(f"{__name__}.CHANNEL", request.param)
    return str(request.param)


@asynccontextmanager
async def connected(
    *,
    max_inflight: int = 1024,
    client_max_frame_size: int = 1 << 20,
    lockstep: bool = False,
    handlers: Handlers | None = None,
    max_host_calls: int = 0,
    keepalive_timeout: float | None = None,
    **peer: Any,
) -> AsyncIterator[tuple[Connection, FakePeer]]:
    async with trio.open_nursery() as nursery:
        opened, fake = await open_fake(
            nursery,
            channel=CHANNEL,
            lockstep=lockstep,
            client_max_frame_size=client_max_frame_size,
            max_host_calls=max_host_calls,
            **peer,
        )
        settings = PoolSettings(1, Limits(client_max_frame_size, max_inflight), keepalive_timeout)
        connection = Connection(opened, settings, handlers=handlers)
        await nursery.start(connection.run)
        yield connection, fake
        nursery.cancel_scope.cancel()


async def test_a_call_returns_the_reply(autojump_clock: trio.testing.MockClock) -> None:
    async with connected() as (connection, _):
        assert await connection.call("App.Echo", {"a": [1, 2.5, None]}) == {"a": [1, 2.5, None]}
        assert connection.load == 0


async def test_an_error_reply_raises_the_matching_exception(autojump_clock: trio.testing.MockClock) -> None:
    async def answer(request: Request) -> Any:
        raise Fail(request.params, "no such thing")

    async with connected(answer=answer) as (connection, _):
        with pytest.raises(MethodNotFound, match=r"App\.X: not_found: no such thing"):
            await connection.call("App.X", "not_found")
        with pytest.raises(RemoteError) as info:
            await connection.call("App.X", "custom")
        assert info.value.type == "custom" and info.value.method == "App.X"


async def test_replies_out_of_order_reach_their_own_callers(autojump_clock: trio.testing.MockClock) -> None:
    async with connected(answer=None) as (connection, fake):
        results: dict[int, Any] = {}

        async def call(i: int) -> None:
            results[i] = await connection.call("App.Echo", i)

        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(call, i)
            requests = [await fake.requests.receive() for _ in range(5)]
            for request in reversed(requests):
                await fake.reply(request.msgid, request.params * 10)
        assert results == {i: i * 10 for i in range(5)}


@pytest.mark.parametrize("split_at", range(1, 30))
async def test_a_reply_split_at_any_byte_arrives_whole(
    split_at: int, autojump_clock: trio.testing.MockClock
) -> None:
    async with connected(answer=None) as (connection, fake):
        async with trio.open_nursery() as nursery:
            got = []

            async def call() -> None:
                got.append(await connection.call("App.Echo", "x"))

            nursery.start_soon(call)
            request = await fake.requests.receive()
            wire = frame(Response(request.msgid, None, "a reply of some length"))
            assert split_at < len(wire)
            await fake.send(wire[:split_at])
            await trio.testing.wait_all_tasks_blocked()
            assert not got
            await fake.send(wire[split_at:])
        assert got == ["a reply of some length"]


async def test_a_reply_sent_one_byte_at_a_time(autojump_clock: trio.testing.MockClock) -> None:
    async with connected(answer=None) as (connection, fake):
        async with trio.open_nursery() as nursery:
            got = []

            async def call() -> None:
                got.append(await connection.call("App.Echo", b"z" * 300))

            nursery.start_soon(call)
            request = await fake.requests.receive()
            for byte in frame(Response(request.msgid, None, request.params)):
                await fake.send(bytes([byte]))
        assert got == [b"z" * 300]


async def test_the_deadline_travels_with_the_request(autojump_clock: trio.testing.MockClock) -> None:
    async with connected(answer=None) as (connection, fake), trio.open_nursery() as nursery:

        async def call() -> None:
            with trio.move_on_after(7.5):
                await connection.call("App.Slow", 1)

        nursery.start_soon(call)
        request = await fake.requests.receive()
        assert request.meta == {"timeout": 7.5}
        await fake.reply(request.msgid, None)
        nursery.start_soon(connection.call, "App.Fast", 2)
        request = await fake.requests.receive()
        assert request.meta is None
        await fake.reply(request.msgid, None)


async def test_a_cancelled_call_sends_cancel_and_its_late_reply_is_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected(answer=None) as (connection, fake):
        with trio.move_on_after(1) as scope:
            await connection.call("App.Slow", 1)
        assert scope.cancelled_caught
        request = await fake.requests.receive()
        await trio.testing.wait_all_tasks_blocked()
        assert fake.cancels == [request.msgid]
        await fake.reply(request.msgid, "late")  # dropped, and its slot freed
        fake.answer = echo_now
        assert await connection.call("App.Echo", 2) == 2
        assert connection._protocol.in_flight == 0


async def echo_now(request: Request) -> Any:
    return request.params


async def test_a_caller_cancelled_before_calling_sends_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected(answer=None) as (connection, fake):
        with trio.CancelScope() as scope:
            scope.cancel()
            await connection.call("App.Echo", 1)
            pytest.fail("a cancelled caller got past call")
        assert scope.cancelled_caught
        await trio.testing.wait_all_tasks_blocked()
        assert fake.requests.statistics().current_buffer_used == 0
        assert connection._protocol.in_flight == 0 and connection.load == 0
        assert connection._free_slots == connection.max_inflight


async def test_callers_past_the_sidecars_limit_wait_for_a_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected(answer=None, max_inflight=2) as (connection, fake):
        assert connection.max_inflight == 2  # the lower of 1024 and the sidecar's 2
        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(connection.call, "App.Echo", i)
            for _ in range(6):
                request = await fake.requests.receive()
                await trio.testing.wait_all_tasks_blocked()
                assert len(fake.in_flight) <= 2
                await fake.reply(request.msgid, request.params)
        assert fake.most_in_flight == 2


async def test_a_caller_waiting_for_a_slot_can_be_cancelled(autojump_clock: trio.testing.MockClock) -> None:
    async with connected(answer=None, max_inflight=1) as (connection, fake):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.call, "App.Slow", 1)
            await trio.testing.wait_all_tasks_blocked()
            with trio.move_on_after(1):
                await connection.call("App.Echo", 2)  # waits for the slot, then gives up
            request = await fake.requests.receive()
            await trio.testing.wait_all_tasks_blocked()
            assert fake.requests.statistics().current_buffer_used == 0  # only the first was sent
            await fake.reply(request.msgid, None)
        fake.answer = echo_now
        assert await connection.call("App.Echo", 3) == 3


async def test_cancelled_calls_stuck_behind_a_peer_that_stops_reading_free_their_slots(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected(answer=None, max_inflight=4, lockstep=True) as (connection, fake):
        fake.reading = False
        with trio.move_on_after(5):
            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    nursery.start_soon(connection.call, "App.Echo", b"y" * 5000)
        # Nothing was read, so nothing was answered: the calls that were never sent gave their
        # slots back at once; those on the wire keep theirs until their replies.
        assert connection._protocol.in_flight <= 4
        fake.resume_reading()
        fake.answer = echo_now
        while fake.requests.statistics().current_buffer_used:
            request = fake.requests.receive_nowait()
            await fake.reply(request.msgid, None)
        await trio.testing.wait_all_tasks_blocked()
        assert await connection.call("App.Echo", 1) == 1


async def test_the_peer_closing_fails_calls_in_flight_and_later_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected(answer=None) as (connection, fake):
        async with trio.open_nursery() as nursery:

            async def call() -> None:
                with pytest.raises(SidecarError, match="lost the connection to the sidecar"):
                    await connection.call("App.Slow", 1)

            nursery.start_soon(call)
            await fake.requests.receive()
            await fake.hang_up()
        assert connection.broken
        with pytest.raises(Unsent) as info:  # a later call is not sent: the pool may send it elsewhere
            await connection.call("App.Echo", 1)
        assert isinstance(info.value.error, SidecarError)


async def test_a_frame_cut_short_by_the_end_of_the_stream_is_a_protocol_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected(answer=None) as (connection, fake), trio.open_nursery() as nursery:

        async def call() -> None:
            with pytest.raises(ProtocolError) as info:
                await connection.call("App.Slow", 1)
            assert info.value.code == "truncated"

        nursery.start_soon(call)
        request = await fake.requests.receive()
        await fake.send(frame(Response(request.msgid, None, "x"))[:-1])
        await fake.hang_up()


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (frame(Response(999, None, 1)), "unknown_msgid"),
        (frame(Request(1, "Py.Call", None, None)), "bad_message"),
        (frame_header(0), "empty_frame"),
        (frame_header(2 << 20), "too_large"),
        (frame_header(1) + b"\xc1", "bad_msgpack"),
    ],
)
async def test_a_malformed_frame_fails_the_calls_of_its_connection(
    wire: bytes, code: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with connected(answer=None) as (connection, fake):
        async with trio.open_nursery() as nursery:

            async def call() -> None:
                with pytest.raises(ProtocolError) as info:
                    await connection.call("App.Slow", 1)
                assert info.value.code == code

            nursery.start_soon(call)
            await fake.requests.receive()
            await fake.send(wire)
        assert connection.broken


async def test_an_undecodable_result_fails_only_its_call(autojump_clock: trio.testing.MockClock) -> None:
    async with connected(answer=None) as (connection, fake):
        async with trio.open_nursery() as nursery:

            async def call() -> None:
                with pytest.raises(BadReply, match="a map whose key is an array"):
                    await connection.call("App.Odd", 1)

            nursery.start_soon(call)
            request = await fake.requests.receive()
            # [1, msgid, nil, {[1]: 2}]: a map keyed by an array, which no dict holds.
            payload = b"\x94\x01" + bytes([request.msgid]) + b"\xc0\x81\x91\x01\x02"
            await fake.send(frame_header(len(payload)) + payload)
        fake.answer = echo_now
        assert await connection.call("App.Echo", 5) == 5


async def test_notifications_from_the_sidecar_are_ignored(autojump_clock: trio.testing.MockClock) -> None:
    async with connected() as (connection, fake):
        await fake.send(frame(Notification("$log", {"msg": "hi"})))
        assert await connection.call("App.Echo", 1) == 1


async def test_fail_wakes_every_caller_with_a_fresh_error(autojump_clock: trio.testing.MockClock) -> None:
    async with connected(answer=None, max_inflight=2) as (connection, _):
        errors: list[BaseException] = []

        unsent: list[Unsent] = []

        async def call() -> None:
            try:
                await connection.call("App.Slow", 1)
            except SidecarError as exc:
                errors.append(exc)
            except Unsent as exc:
                unsent.append(exc)
                errors.append(exc.error)

        async with trio.open_nursery() as nursery:
            for _ in range(5):  # two in flight, three waiting for a slot
                nursery.start_soon(call)
            await trio.testing.wait_all_tasks_blocked()
            connection.fail(error_factory(SidecarError, "gone"))
        assert len(errors) == 5 and len({id(e) for e in errors}) == 5
        assert all(str(e) == "gone" for e in errors)
        assert len(unsent) == 3  # those waiting for a slot were not sent: the pool may send them elsewhere


async def test_the_explain_hook_names_the_error_callers_see(autojump_clock: trio.testing.MockClock) -> None:
    async def explain(cause: BaseException) -> ErrorFactory:
        assert isinstance(cause, PeerClosed)
        return error_factory(SidecarError, "the sidecar exited with status 3", returncode=3)

    async with trio.open_nursery() as nursery:
        opened, fake = await open_fake(nursery, channel=CHANNEL, answer=None)
        connection = Connection(opened, SETTINGS, explain=explain)
        await nursery.start(connection.run)

        async def call() -> None:
            with pytest.raises(SidecarError, match="status 3") as info:
                await connection.call("App.Slow", 1)
            assert info.value.returncode == 3

        nursery.start_soon(call)
        await fake.requests.receive()
        await fake.hang_up()


async def test_a_request_larger_than_the_sidecar_accepts_is_refused_before_sending(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected(max_frame_size=2048) as (connection, _):
        with pytest.raises(ValueError, match="frame limit is 2048"):
            await connection.call("App.Echo", b"x" * 4096)
        assert await connection.call("App.Echo", b"x" * 1000) == b"x" * 1000
        assert connection._protocol.in_flight == 0


async def test_large_payloads_both_ways(autojump_clock: trio.testing.MockClock) -> None:
    async with connected(max_frame_size=1 << 22, client_max_frame_size=1 << 22) as (connection, _):
        blob = bytes(range(256)) * 8192  # 2 MiB: read into a buffer of its own
        assert await connection.call("App.Echo", blob) == blob


async def test_greet_refused_closed_and_other_versions(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        with pytest.raises(Refused, match="wrong secret"):
            client, server = trio.testing.memory_stream_pair()
            nursery.start_soon(FakePeer(server, secret="right").serve)
            await greet(client, max_frame_size=4096, secret="wrong")

        client, server = trio.testing.memory_stream_pair()
        nursery.start_soon(FakePeer(server, version=3).serve)
        with pytest.raises(ProtocolError, match="version 3"):
            await greet(client, max_frame_size=4096, secret=None)
        await client.aclose()

        client, server = trio.testing.memory_stream_pair()
        await server.send_stream.aclose()
        with pytest.raises(PeerClosed):
            await greet(client, max_frame_size=4096, secret=None)


async def test_a_slot_freed_while_its_waiter_is_being_cancelled_is_not_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected(answer=None, max_inflight=1) as (connection, fake):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.call, "App.Echo", "holds the slot")
            request = await fake.requests.receive()
            waiting = trio.CancelScope()

            async def wait_for_the_slot() -> None:
                with waiting:
                    await connection.call("App.Echo", "waits")

            nursery.start_soon(wait_for_the_slot)
            await trio.testing.wait_all_tasks_blocked()
            assert connection._slot_waiters == 1
            # The waiter is cancelled, and before it runs again the slot is freed (as the reader
            # does for a reply): the slot must not be handed to the waiter that left.
            waiting.cancel()
            connection._release_slot()
            assert connection._free_slots == 1
            connection._free_slots = 0  # give it back: the call holding it is still in flight
            await fake.reply(request.msgid, "done")
        assert connection._free_slots == 1 and connection._slot_waiters == 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.call, "App.Echo", "the slot is free")
            request = await fake.requests.receive()
            await fake.reply(request.msgid, None)


@pytest.mark.fault(
    fault="the client closes while a cancelled call's request is half written",
    sees="nothing: the frame is finished first (for up to 1 s), the sidecar sees a clean end",
)
async def test_closing_finishes_the_request_being_written_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limit = 1 << 22
    async with trio.open_nursery() as nursery:
        opened, fake = await open_fake(
            nursery, lockstep=True, answer=None, max_frame_size=limit, client_max_frame_size=limit
        )
        connection = Connection(opened, PoolSettings(1, Limits(limit, 8), keepalive_timeout=None))
        async with trio.open_nursery() as serving:
            await serving.start(connection.run)
            fake.reading = False
            with trio.move_on_after(1):  # the caller gives up; its request stays with the writer
                await connection.call("App.Echo", bytes(1 << 21))
            serving.cancel_scope.cancel()  # the connection closes before the request is all written
            fake.resume_reading()
        # The sidecar got the whole frame, then the end of the stream: no broken frame.
        request = await fake.requests.receive()
        assert (request.method, request.params) == ("App.Echo", bytes(1 << 21))
        await fake.closed.wait()


async def test_closing_gives_up_on_a_peer_that_never_reads(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        opened, fake = await open_fake(nursery, lockstep=True, answer=None)
        connection = Connection(opened, SETTINGS)
        async with trio.open_nursery() as serving:
            await serving.start(connection.run)
            fake.reading = False
            with trio.move_on_after(1):
                await connection.call("App.Echo", b"x" * 5000)
            closed_at = trio.current_time()
            serving.cancel_scope.cancel()
        # The writer waited for the peer to read the rest of its frame, then gave up.
        assert trio.current_time() - closed_at == _FINISH_WRITING
        nursery.cancel_scope.cancel()


async def test_the_stream_ending_inside_a_large_frame_is_a_protocol_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limit = 1 << 22
    async with (
        connected(answer=None, max_frame_size=limit, client_max_frame_size=limit) as (connection, fake),
        trio.open_nursery() as nursery,
    ):

        async def call() -> None:
            with pytest.raises(ProtocolError) as info:
                await connection.call("App.Big", 1)
            assert info.value.code == "truncated"

        nursery.start_soon(call)
        request = await fake.requests.receive()
        wire = frame(Response(request.msgid, None, bytes(1 << 20)))
        await fake.send(wire[: 1 << 19])  # half of a frame read into a buffer of its own
        await trio.testing.wait_all_tasks_blocked()
        await fake.hang_up()


# -- host calls: the sidecar calls the client ------------------------------------------------------


async def host_call(
    fake: FakePeer, msgid: int, method: str, params: Any, meta: dict[str, Any] | None = None
) -> None:
    await fake.send(frame(Request(msgid, method, params, meta)))


async def test_the_hello_announces_host_calls_and_a_handler_answers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    handlers = Handlers({"Py.Double": lambda x: x * 2})
    async with connected(answer=None, handlers=handlers, max_host_calls=5) as (_, fake):
        assert fake.client_hello["max_host_calls"] == 5
        await host_call(fake, 7, "Py.Double", 21)
        response = await fake.responses.receive()
        assert (response.msgid, response.error, response.result) == (7, None, 42)


async def test_a_host_call_runs_under_the_go_deadline(autojump_clock: trio.testing.MockClock) -> None:
    async def slow(arg: Any) -> None:
        await trio.sleep(100)

    async with connected(answer=None, handlers=Handlers({"Py.Slow": slow}), max_host_calls=5) as (_, fake):
        sent_at = trio.current_time()
        await host_call(fake, 1, "Py.Slow", None, {"timeout": 2.5})
        response = await fake.responses.receive()
        assert response.error is not None and response.error["type"] == "deadline_exceeded"
        assert trio.current_time() - sent_at == 2.5


async def test_a_cancel_from_the_sidecar_cancels_the_handler(autojump_clock: trio.testing.MockClock) -> None:
    cancelled = trio.Event()

    async def forever(arg: Any) -> None:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    async with connected(answer=None, handlers=Handlers({"Py.Forever": forever}), max_host_calls=5) as (
        _,
        fake,
    ):
        await host_call(fake, 3, "Py.Forever", None)
        await trio.testing.wait_all_tasks_blocked()
        await fake.send(frame(Notification("$cancel", 3)))
        response = await fake.responses.receive()
        assert cancelled.is_set()
        assert response.msgid == 3 and response.error is not None and response.error["type"] == "cancelled"


@pytest.mark.fault(
    fault="the sidecar sends more host calls than the client's max_host_calls",
    sees="Go: busy for those past the limit; the connection and the other calls go on",
)
async def test_host_calls_past_the_limit_are_busy_and_the_reader_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    release = trio.Event()

    async def wait(arg: Any) -> Any:
        await release.wait()
        return arg

    async with connected(handlers=Handlers({"Py.Wait": wait}), max_host_calls=2) as (connection, fake):
        for msgid in range(4):
            await host_call(fake, msgid, "Py.Wait", msgid)
        busy = [await fake.responses.receive() for _ in range(2)]
        assert [(r.msgid, r.error and r.error["type"]) for r in busy] == [(2, "busy"), (3, "busy")]
        assert await connection.call("App.Echo", "the reader still reads") == "the reader still reads"
        release.set()
        done = sorted([(await fake.responses.receive()).result for _ in range(2)])
        assert done == [0, 1]


async def test_handler_errors_and_unknown_names(autojump_clock: trio.testing.MockClock) -> None:
    def broken(arg: Any) -> None:
        raise KeyError(arg)

    async with connected(answer=None, handlers=Handlers({"Py.Broken": broken}), max_host_calls=5) as (
        _,
        fake,
    ):
        await host_call(fake, 1, "Py.Broken", "k")
        response = await fake.responses.receive()
        assert response.error is not None
        assert (response.error["type"], response.error["message"]) == ("error", "KeyError: 'k'")
        assert "broken" in response.error["stack"]
        await host_call(fake, 2, "Py.Missing", None)
        response = await fake.responses.receive()
        assert response.error is not None and response.error["type"] == "not_found"
        assert "registered: Py.Broken" in response.error["message"]


async def test_config_is_a_host_call(autojump_clock: trio.testing.MockClock) -> None:
    handlers = Handlers()
    handlers.provide_config({"region": "eu", "limits": {"rps": 5}})
    async with connected(answer=None, handlers=handlers, max_host_calls=5) as (_, fake):
        await host_call(fake, 1, "trio_gotask.Config", "limits")
        assert (await fake.responses.receive()).result == {"rps": 5}
        await host_call(fake, 2, "trio_gotask.Config", "nope")
        error = (await fake.responses.receive()).error
        assert error is not None and error["type"] == "not_found"
        assert error["message"] == "the Python app gave no configuration 'nope' (it gave: limits, region)"


async def test_log_records_land_in_python_logging(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_gotask.go")
    async with connected(handlers=Handlers(), max_host_calls=5) as (connection, fake):
        for level, logger in ((-4, ""), (0, "db"), (4, "db"), (8, ""), (2, "x")):
            record = {
                "level": level,
                "logger": logger,
                "message": f"at {level}",
                "time": None,
                "attrs": {"n": level},
            }
            await fake.send(frame(Notification("$log", record)))
        await fake.send(frame(Notification("$log", "not a map")))
        assert await connection.call("App.Echo", 1) == 1  # every record before it was handled
    got = [(r.name, r.levelno, r.getMessage()) for r in caplog.records if r.name.startswith("trio_gotask.go")]
    assert got[:5] == [
        ("trio_gotask.go", logging.DEBUG, "at -4 n=-4"),
        ("trio_gotask.go.db", logging.INFO, "at 0 n=0"),
        ("trio_gotask.go.db", logging.WARNING, "at 4 n=4"),
        ("trio_gotask.go", logging.ERROR, "at 8 n=8"),
        ("trio_gotask.go.x", 25, "at 2 n=2"),
    ]
    assert "not a map" in got[5][2]
    assert caplog.records[0].__dict__["go_attrs"] == {"n": -4}


# -- keepalive and backpressure --------------------------------------------------------------------


async def test_a_silent_sidecar_is_pinged_and_kept_while_it_answers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        connected(answer=None, ping=True, keepalive_timeout=10) as (connection, fake),
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(connection.call, "App.Slow", None)
        request = await fake.requests.receive()
        await trio.sleep(1000)  # the call runs long; the sidecar answers each $ping
        assert len(fake.pings) >= 90 and fake.pings[:3] == [1, 2, 3]
        assert not connection.broken
        await fake.reply(request.msgid, "done")


async def test_busy_connections_are_not_pinged(autojump_clock: trio.testing.MockClock) -> None:
    async with connected(ping=True, keepalive_timeout=10) as (connection, fake):
        for _ in range(100):
            await connection.call("App.Echo", None)
            await trio.sleep(1)
        assert fake.pings == []


@pytest.mark.fault(
    fault="a sidecar that freezes (SIGSTOP, a dead network path) with calls in flight",
    sees="SidecarError 'said nothing for N s' after keepalive_timeout; the connection is replaced",
)
@pytest.mark.parametrize("reading", [True, False], ids=["reads", "reads-nothing"])
async def test_a_frozen_sidecar_fails_its_calls_after_keepalive_timeout(
    autojump_clock: trio.testing.MockClock, reading: bool
) -> None:
    async with connected(answer=None, ping=True, keepalive_timeout=10, lockstep=not reading) as (
        connection,
        fake,
    ):
        fake.ping = False  # frozen: it answers nothing from here on
        fake.reading = reading
        started = trio.current_time()
        with pytest.raises(SidecarError, match=r"said nothing for 10 s, not even to a \$ping"):
            await connection.call("App.Echo", "hello?")
        assert 10 <= trio.current_time() - started <= 15  # the clock is the autojump clock's
        assert connection.broken


async def test_a_sidecar_that_does_not_announce_ping_is_never_pinged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        connected(answer=None, keepalive_timeout=10) as (connection, fake),
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(connection.call, "App.Slow", None)
        request = await fake.requests.receive()
        await trio.sleep(1000)
        assert fake.pings == [] and not connection.broken
        await fake.reply(request.msgid, "done")


@pytest.mark.fault(
    fault="a sidecar that sends host calls and never reads the answers",
    sees="nothing: the client stops reading that connection past 1 MiB of unsent answers",
)
async def test_host_calls_whose_answers_are_never_read_stop_the_reader(
    autojump_clock: trio.testing.MockClock,
) -> None:
    answer = b"x" * 10_000
    handlers = Handlers({"Py.Big": lambda: answer})
    async with connected(handlers=handlers, max_host_calls=8, lockstep=True) as (connection, fake):
        fake.reading = False
        sent = 0
        with trio.move_on_after(100):  # lockstep: a send waits until the client reads it
            for msgid in range(2000):
                await host_call(fake, msgid, "Py.Big", None)
                sent += 1
        held = connection._unsent_answers + connection._protocol.take_answer_bytes()
        assert sent < 200, f"the client read {sent} host calls it could not answer"
        assert held <= MAX_UNSENT_ANSWERS + 10 * len(answer)
        fake.resume_reading()
        answered = {(await fake.responses.receive()).msgid for _ in range(sent)}
        assert answered == set(range(sent))
