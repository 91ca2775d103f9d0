"""GoTask's format against real goridge, v2.4.4 (GoTask's pin) and v2.4.6: the codec,
``connect_gotask(protocol="goridge")`` and ``open_gotask(protocol="goridge")`` over a Unix socket,
TCP and the pipe, with a sidecar shaped like GoTask's (tests/goridge_server.py: a Go module made
here that serves net/rpc exactly as GoTask's server does), and with GoTask's own code when
``GOTASK_SOURCE`` names a checkout of it. Outcomes never wait on the clock: tests wait on replies,
under the HANG guard; the one pause paces attempts to connect to a server that says nothing when
it is ready.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import goridge_server
import pytest
import trio
from test_lifecycle import STAY, gone
from timing import HANG

from trio_gotask import (
    GoTask,
    GoTaskError,
    RemoteError,
    RestartPolicy,
    SidecarError,
    connect_gotask,
    open_gotask,
)
from trio_gotask._address import Transport
from trio_gotask._goridge import RAW, Frame, FrameDecoder, Replies, Reply, encode_call


@pytest.fixture(scope="session", params=goridge_server.VERSIONS)
def version(request: pytest.FixtureRequest) -> str:
    """Each goridge version the server is built with (`goridge_server.VERSIONS`)."""
    param: str = request.param
    return param


@pytest.fixture(scope="session")
def server(version: str) -> str:
    """The GoTask-shaped sidecar (tests/goridge_server.py) with goridge ``version``, built once and
    cached across runs, as the example sidecar is."""
    try:
        return str(goridge_server.cached_build(version))
    except goridge_server.ProxyUnreachable as exc:
        pytest.skip(f"the Go module proxy cannot be reached, so goridge {version} cannot be fetched: {exc}")


class Client:
    """Calls over one stream with the goridge codec, replies matched by sequence number."""

    def __init__(self, send: trio.abc.SendStream, receive: trio.abc.ReceiveStream) -> None:
        self.address = "-"
        self.pid: int | None = None
        self.send = send
        self.receive = receive
        self.decoder = FrameDecoder(1 << 24)
        self.pairing = Replies()
        self.bodies: dict[int, Frame] = {}
        """The body frame of each reply, by sequence number."""

    async def calls(self, calls: list[tuple[str, Any]]) -> dict[int, Reply]:
        """Send every call in one write (sequence numbers 0, 1, ...), return the replies by seq."""
        await self.send.send_all(b"".join(encode_call(m, seq, arg) for seq, (m, arg) in enumerate(calls)))
        replies: dict[int, Reply] = {}
        with trio.fail_after(HANG):
            while len(replies) < len(calls):
                data = await self.receive.receive_some()
                assert data, "the server closed the connection"
                self.decoder.receive_data(data)
                while (received := self.decoder.next_frame()) is not None:
                    if (reply := self.pairing.feed(received)) is not None:
                        replies[reply.seq] = reply
                        self.bodies[reply.seq] = received
        return replies


@asynccontextmanager
async def serving(binary: str, transport: str, tmp_path: Path) -> AsyncIterator[Client]:
    if transport == "pipe":
        flags = ["-listen-on-pipe", "-address", ""]
    elif transport == "unix":
        flags = ["-address", str(tmp_path / "gotask.sock")]
    else:
        flags = ["-address", "127.0.0.1:0"]
    if transport == "tcp":
        # The server prints nothing: find a free port first, as a launcher of GoTask sidecars would.
        with trio.socket.socket() as probe:
            await probe.bind(("127.0.0.1", 0))
            flags[1] = f"127.0.0.1:{probe.getsockname()[1]}"
    process = await trio.lowlevel.open_process(
        [binary, *flags], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=dict(os.environ)
    )
    try:
        if transport == "pipe":
            assert process.stdin is not None and process.stdout is not None
            yield Client(process.stdin, process.stdout)
            return
        stream = await connect_with_retries(flags[1])
        async with stream:
            client = Client(stream, stream)
            client.address = flags[1]
            client.pid = process.pid
            yield client
    finally:
        process.kill()
        await process.wait()


async def connect_with_retries(address: str) -> trio.abc.Stream:
    """GoTask's readiness: no handshake line, nor anything else to wait on, so connect until the
    socket accepts, as the library's launcher does. The pause between tries only sets how soon."""
    with trio.fail_after(HANG):
        while True:
            try:
                if "/" in address:
                    return await trio.open_unix_socket(address)
                host, port = address.rsplit(":", 1)
                return await trio.open_tcp_stream(host, int(port))
            except OSError:
                await trio.sleep(0.01)


@pytest.mark.parametrize("transport", ["unix", "tcp", "pipe"])
async def test_the_codec_speaks_real_goridge(server: str, transport: str, tmp_path: Path) -> None:
    async with serving(server, transport, tmp_path) as client:
        replies = await client.calls(
            [
                ("App.Hi", "Hyperf"),
                ("App.Reverse", b"\x00\x01\x02\xff"),
                ("App.Add", {"a": 2, "b": 40}),
                ("App.Fail", "the disk is full"),
                ("App.Nope", None),
            ]
        )
        assert replies[0].result == {"hello": "Hyperf"} and replies[0].method == "App.Hi"
        assert replies[1].result == b"\xff\x02\x01\x00"  # raw both ways
        assert replies[2].result == 42
        assert replies[3].error == {"type": "error", "message": "the disk is full"}
        assert replies[4].error is not None and "can't find method App.Nope" in replies[4].error["message"]

        many = await client.calls([("App.Hi", f"caller {i}") for i in range(100)])
        assert {seq: r.result for seq, r in many.items()} == {i: {"hello": f"caller {i}"} for i in range(100)}


@pytest.mark.fault(fault="GoTask sidecar returns an empty []byte", sees="b'' (PHP gets ''), not None")
async def test_empty_results_are_what_gotasks_php_client_gets(server: str, tmp_path: Path) -> None:
    """An empty or nil ``[]byte`` comes as a raw frame of no bytes, which PHP reads as ``''``."""
    async with serving(server, "unix", tmp_path) as client:
        replies = await client.calls(
            [("App.Reverse", b""), ("App.Bytes", 0), ("App.Echo", ""), ("App.Echo", None), ("App.Bytes", 2)]
        )
        assert client.bodies[0] == client.bodies[1] == Frame(RAW, b"")  # nil, then empty
        assert [replies[i].result for i in range(5)] == [b"", b"", "", None, b"\x02\x02"]
    with trio.fail_after(HANG):
        async with open_gotask(server, protocol="goridge") as gt:
            assert await gt.call("App.Reverse", b"") == b""
            assert await gt.call("App.Bytes", 0) == b""
            assert await gt.call("App.Echo", "") == ""
            assert await gt.call("App.Echo") is None


@pytest.mark.fault(
    fault="a str sent to a GoTask sidecar's []byte argument",
    sees="goridge v2.4.4: decoded as base64 (RemoteError if it is not); v2.4.6: its JSON text",
)
async def test_what_a_str_to_a_bytes_argument_becomes_depends_on_goridge(server: str, version: str) -> None:
    """A JSON body for a ``[]byte`` argument: v2.4.4 (GoTask's pin) decodes a JSON string as base64,
    v2.4.6 takes the JSON text itself. Raw bytes for an argument of another type: v2.4.4 refuses
    them, v2.4.6 decodes them as JSON."""
    with trio.fail_after(HANG):
        async with open_gotask(server, protocol="goridge") as gt:
            await a_str_to_a_bytes_argument(gt, version)


async def a_str_to_a_bytes_argument(gt: GoTask, version: str) -> None:
    """What goridge `version` makes of a str for a []byte argument, and of bytes for a string one."""
    if version == "v2.4.4":
        assert await gt.call("App.Reverse", "AAEC") == b"\x02\x01\x00"  # base64 of 00 01 02
        with pytest.raises(RemoteError, match="illegal base64 data"):
            await gt.call("App.Reverse", "hello!")
        with pytest.raises(RemoteError, match=r"^App\.Hi: \{rawData\} request for <\*string Value>$"):
            await gt.call("App.Hi", b'"Hyperf"')
    else:
        assert version == "v2.4.6"
        assert await gt.call("App.Reverse", "AAEC") == b'"CEAA"'  # the JSON text, quotes included
        assert await gt.call("App.Reverse", "hello!") == b'"!olleh"'
        assert await gt.call("App.Hi", b'"Hyperf"') == {"hello": "Hyperf"}


@pytest.mark.parametrize("transport", ["unix", "tcp"])
async def test_connect_gotask_speaks_goridge(server: str, transport: str, tmp_path: Path) -> None:
    async with serving(server, transport, tmp_path) as started:
        address = started.address
        async with connect_gotask(address, protocol="goridge", pool_size=2) as gt:
            await exercise(gt)
            assert await gt.call("App.Add", {"a": 1, "b": 2}) == 3
            assert await gt.call("App.Pid") == started.pid


async def test_goridge_refuses_what_it_cannot_carry() -> None:
    with pytest.raises(ValueError, match="goridge format has no secret, handlers"):
        async with connect_gotask("127.0.0.1:1", protocol="goridge", secret="s", handlers={"X": print}):
            pass
    with pytest.raises(ValueError, match="protocol must be one of gotask, goridge"):
        async with connect_gotask("127.0.0.1:1", protocol="json"):  # type: ignore[arg-type]
            pass


# -- open_gotask(protocol="goridge"): launching GoTask sidecars -----------------------------------


async def exercise(gt: GoTask, *, one_at_a_time: bool = False) -> None:
    """What a GoTask user's PHP code did, from Python: a string, a struct, bytes raw both ways, a Go
    error, 100 calls at once, and a call given up on while Go runs it (Go finishes it later; its
    reply is dropped). With ``one_at_a_time`` (the pipe: one connection, one call on it), the call
    given up on is left out, since nothing else could run until Go returned it."""
    with trio.fail_after(HANG):
        await _exercise(gt, one_at_a_time)


async def _exercise(gt: GoTask, one_at_a_time: bool) -> None:
    assert await gt.call("App.Hi", "Hyperf") == {"hello": "Hyperf"}
    assert await gt.call("App.Reverse", b"\x00\x01\xff") == b"\xff\x01\x00"
    with pytest.raises(RemoteError, match=r"^App\.Fail: the disk is full$"):
        await gt.call("App.Fail", "the disk is full")
    with pytest.raises(RemoteError, match=r"can't find method App\.Nope"):
        await gt.call("App.Nope")
    results: dict[int, Any] = {}

    async def call(i: int) -> None:
        results[i] = await gt.call("App.Hi", str(i))

    async with trio.open_nursery() as nursery:
        for i in range(100):
            nursery.start_soon(call, i)
    assert results == {i: {"hello": str(i)} for i in range(100)}
    if not one_at_a_time:
        await give_up_on_a_running_call(gt)
    assert await gt.call("App.Sleep", 1) == 1


async def give_up_on_a_running_call(gt: GoTask) -> None:
    """Cancel a call Go is running: the caller leaves at once; Go returns it later, to no one.
    Meanwhile the call keeps its slot: the next call goes where there is room."""
    given_up = trio.CancelScope()

    async def held(task_status: trio.TaskStatus[None]) -> None:
        with given_up:
            task_status.started()
            await gt.call("App.Hold")  # before the parent goes on: the least-busy connection

    async with trio.open_nursery() as nursery:
        await nursery.start(held)
        assert await gt.call("App.Holding") is True  # Go runs it
        given_up.cancel()
    assert given_up.cancelled_caught
    assert await gt.call("App.Release") is True  # it returns now, to no one


@pytest.mark.parametrize("transport", ["unix", "tcp", "pipe"])
async def test_open_gotask_launches_a_gotask_sidecar(server: str, transport: Transport) -> None:
    async with open_gotask(server, transport=transport, protocol="goridge", pool_size=2) as gt:
        await exercise(gt, one_at_a_time=transport == "pipe")
        assert await gt.call("App.Add", {"a": 2, "b": 40}) == 42
        assert await gt.call("App.Pid") == gt.pid
        pid, address = gt.pid, gt.address
        if transport == "pipe":
            assert address == "-"
        if transport == "unix":
            assert os.stat(os.path.dirname(address)).st_mode & 0o777 == 0o700
    assert pid is not None and gone(pid)  # stopped and reaped
    if transport == "unix":
        assert not os.path.exists(os.path.dirname(address))


async def test_a_stream_in_goridge_mode_is_refused_before_anything_is_sent(server: str) -> None:
    async with open_gotask(server, protocol="goridge") as gt:
        with pytest.raises(GoTaskError, match=r'protocol="goridge"\) has no streams'):
            async with gt.stream("App.Hi", "Hyperf"):
                pass
        stats = gt.statistics()
        assert (stats.streams, stats.in_flight) == (0, 0)
        assert await gt.call("App.Hi", "Hyperf") == {"hello": "Hyperf"}


async def test_max_inflight_puts_more_calls_on_a_connection_when_asked(server: str) -> None:
    """The pipe has one connection, which carries one call at a time unless ``max_inflight`` says
    more (at the risk docs/goridge.md describes): here a call Go is holding, and the others."""
    async with open_gotask(server, transport="pipe", protocol="goridge", max_inflight=2) as gt:
        with trio.fail_after(HANG):
            await give_up_on_a_running_call(gt)
        assert await gt.call("App.Hi", "x") == {"hello": "x"}


@pytest.mark.parametrize("transport", ["unix", "pipe"])
async def test_a_gotask_sidecar_stops_quietly(
    server: str, transport: Transport, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGTERM, not a closed pipe (which makes GoTask log "pipe is closed") or SIGINT."""
    async with open_gotask(server, transport=transport, protocol="goridge") as gt:
        await gt.call("App.Hi", "x")
    assert [r.getMessage() for r in caplog.records if r.name.startswith("trio_gotask")] == []


@pytest.mark.fault(
    fault="GoTask sidecar panics (it does not recover)",
    sees="SidecarError for the calls in flight, with the panic from stderr",
)
@pytest.mark.parametrize("transport", ["unix", "pipe"])
async def test_a_panicking_gotask_sidecar_fails_the_calls_in_flight_and_restarts(
    server: str, transport: Transport
) -> None:
    policy = RestartPolicy(backoff=0.01)
    async with open_gotask(server, transport=transport, protocol="goridge", restart=policy) as gt:
        first = gt.pid
        with pytest.raises(SidecarError, match="exited unexpectedly with status 2") as info:
            await gt.call("App.Panic", "the index is out of range")
        assert "panic: the index is out of range" in info.value.stderr_tail
        assert await gt.call("App.Hi", "again") == {"hello": "again"}
        assert gt.pid != first


@pytest.mark.fault(
    fault="GoTask sidecar exits before it listens", sees="SidecarError with exit status and stderr tail"
)
@pytest.mark.parametrize("transport", ["unix", "tcp", "pipe"])
async def test_a_gotask_sidecar_that_exits_at_once_says_why(server: str, transport: Transport) -> None:
    with pytest.raises(SidecarError, match="exited with status 2 before it listened on") as info:
        async with open_gotask(server, args=["-bogus"], transport=transport, protocol="goridge"):
            pass
    assert "flag provided but not defined: -bogus" in info.value.stderr_tail


@pytest.mark.fault(
    fault="GoTask sidecar never listens", sees="SidecarError after startup_timeout; the process is reaped"
)
@pytest.mark.parametrize("transport", ["unix", "pipe"])
async def test_a_gotask_sidecar_that_never_listens_times_out(transport: Transport) -> None:
    with pytest.raises(SidecarError, match=r"did not answer on .* within 0\.3 s \(startup_timeout\)"):
        async with open_gotask(
            ["/bin/sh", "-c", STAY, "sidecar"],
            transport=transport,
            protocol="goridge",
            startup_timeout=0.3,
        ):
            pass


@pytest.mark.fault(
    fault="protocol='goridge' with a trio-gotask sidecar",
    sees="SidecarError saying to drop protocol='goridge'",
)
@pytest.mark.parametrize("transport", ["unix", "pipe"])
async def test_goridge_against_this_projects_sidecar_says_so(sidecar: str, transport: Transport) -> None:
    with pytest.raises(SidecarError, match="does not answer in GoTask's goridge format") as info:
        async with open_gotask(sidecar, transport=transport, protocol="goridge"):
            pass
    if transport == "pipe":
        assert "drop protocol='goridge'" in str(info.value)


async def test_open_gotask_refuses_what_goridge_cannot_carry(server: str) -> None:
    with pytest.raises(ValueError, match="goridge format has no handlers, config"):
        async with open_gotask(server, protocol="goridge", handlers={"X": print}, config={"a": 1}):
            pass


# -- GoTask's own code, when a checkout is at hand -------------------------------------------------


@pytest.fixture(scope="session")
def gotask_sidecar(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A user's sidecar built on GoTask's own library. The module proxy does not serve GoTask, so it
    is built from a checkout named by GOTASK_SOURCE (``git clone https://github.com/hyperf/gotask``)."""
    source = os.environ.get("GOTASK_SOURCE")
    if not source:
        pytest.skip(
            "GOTASK_SOURCE is not set: set it to a checkout of github.com/hyperf/gotask to also test "
            "against GoTask's own server code (the goridge tests above run without it)"
        )
    try:
        return str(goridge_server.build_with_gotask(tmp_path_factory.mktemp("gotask-user"), Path(source)))
    except goridge_server.ProxyUnreachable as exc:
        pytest.skip(f"the Go module proxy cannot be reached: {exc}")


@pytest.mark.parametrize("transport", ["unix", "tcp", "pipe"])
async def test_gotasks_own_server(gotask_sidecar: str, transport: Transport) -> None:
    async with open_gotask(gotask_sidecar, transport=transport, protocol="goridge") as gt:
        await exercise(gt, one_at_a_time=transport == "pipe")
        await large_and_small_at_once(gt)
        assert await gt.call("App.Pid") == gt.pid
        pid = gt.pid
    assert pid is not None and gone(pid)


# -- large calls among small ones ------------------------------------------------------------------

LARGE = 3 * 1024 * 1024


async def large_and_small_at_once(gt: GoTask) -> None:
    """Four 3 MiB calls and 320 small ones, all at once. goridge's server reads a body with a
    buffer sized for the whole body, so after a short read it can take the next frame's bytes as
    the body's, and the connection freezes: the client must not let frames meet there."""
    results: dict[tuple[str, int], Any] = {}

    async def large(i: int) -> None:
        results["large", i] = await gt.call("App.Reverse", blob(i))

    async def small(i: int) -> None:
        results["small", i] = await gt.call("App.Hi", str(i))

    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(large, i)
            for i in range(320):
                nursery.start_soon(small, i)
    assert {k: v for k, v in results.items() if k[0] == "small"} == {
        ("small", i): {"hello": str(i)} for i in range(320)
    }
    for i in range(4):
        assert results["large", i] == blob(i)[::-1]


def blob(i: int) -> bytes:
    return bytes((i + j) % 251 for j in range(251)) * (LARGE // 251)


@pytest.mark.fault(
    fault="large and small calls at once to a GoTask sidecar, whose goridge misreads frames that meet",
    sees="every call completes: one call per connection, the pool gives the concurrency",
)
@pytest.mark.parametrize("transport", ["unix", "tcp", "pipe"])
async def test_large_calls_among_small_ones_all_complete(server: str, transport: Transport) -> None:
    async with open_gotask(server, transport=transport, protocol="goridge") as gt:
        await large_and_small_at_once(gt)


async def test_large_calls_among_small_ones_all_complete_connected(server: str, tmp_path: Path) -> None:
    async with (
        serving(server, "tcp", tmp_path) as started,
        connect_gotask(started.address, protocol="goridge") as gt,
    ):
        await large_and_small_at_once(gt)
