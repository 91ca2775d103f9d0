"""A peer that breaks the protocol. A real Go sidecar never does, so these tests use a small Trio
server that speaks the protocol correctly on some connections and wrongly on others."""

from __future__ import annotations

import itertools
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
import trio.testing
from fakesidecar import FakePeer, serve_fakes
from fakesidecar import frame as frame_of
from timing import HANG
from wirehelpers import plant_decoder_bug

from trio_gotask import PROTOCOL_VERSION, BadReply, GoTask, ProtocolError, connect_gotask
from trio_gotask._goridge import Frame, FrameDecoder
from trio_gotask._goridge import frame as goridge_frame
from trio_gotask._pool import Pool
from trio_gotask._supervisor import Supervisor
from trio_gotask._wire import Decoder, Notification, Request

Reply = Callable[[Request], bytes]


def frame(obj: object) -> bytes:
    body: bytes = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def hello() -> bytes:
    """The $hello a sidecar sends first on every connection."""
    return frame([2, "$hello", {"version": PROTOCOL_VERSION, "max_frame_size": 1 << 20, "max_inflight": 64}])


def echo(request: Request) -> bytes:
    return frame([1, request.msgid, None, request.params])


class FakeSidecar:
    """Serves connection number ``i`` with ``replies[i]`` (echo when there are no more)."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = replies
        self.connections = 0
        self.closed = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        index = self.connections
        self.connections += 1
        reply = self.replies[index] if index < len(self.replies) else echo
        decoder = Decoder()
        try:
            await stream.send_all(hello())
            while data := await stream.receive_some():
                decoder.receive_data(data)
                while (message := decoder.next_message()) is not None:
                    if isinstance(message, Request):
                        await stream.send_all(reply(message))
        except trio.BrokenResourceError:
            pass
        finally:
            self.closed += 1
            await stream.aclose()


async def serve(tmp_path: Path, fake: FakeSidecar, nursery: trio.Nursery) -> str:
    path = str(tmp_path / "fake.sock")
    sock = trio.socket.socket(trio.socket.AF_UNIX)
    await sock.bind(path)
    sock.listen()
    nursery.start_soon(trio.serve_listeners, fake.handle, [trio.SocketListener(sock)])
    return path


def pool_of(gt: GoTask) -> Pool:
    router = gt._router
    pool = router.current_pool if isinstance(router, Supervisor) else router
    assert isinstance(pool, Pool)
    return pool


BROKEN_REPLIES: list[tuple[str, Reply, str]] = [
    ("garbage", lambda r: b"\x00\x00\x00\x03\xc1\xc1\xc1", "bad_msgpack"),
    ("oversize", lambda r: b"\xff\xff\xff\xff", "too_large"),
    ("empty", lambda r: b"\x00\x00\x00\x00", "empty_frame"),
    ("not_a_message", lambda r: frame({"hello": 1}), "bad_message"),
    ("unknown_msgid", lambda r: frame([1, r.msgid + 1000, None, None]), "unknown_msgid"),
    ("a_request", lambda r: frame([0, 1, "Py.Method", None, None]), "bad_message"),
    ("bad_error_map", lambda r: frame([1, r.msgid, {"type": "error"}, None]), "bad_message"),
]


@pytest.mark.fault(
    fault="malformed reply, oversize or empty frame, unknown msgid, a request",
    sees="ProtocolError for that connection's calls; it is replaced, others unaffected",
)
@pytest.mark.parametrize(("name", "reply", "code"), BROKEN_REPLIES, ids=[b[0] for b in BROKEN_REPLIES])
async def test_broken_reply_fails_only_its_connection(
    tmp_path: Path, name: str, reply: Reply, code: str
) -> None:
    fake = FakeSidecar([echo, reply])
    async with trio.open_nursery() as nursery:
        address = await serve(tmp_path, fake, nursery)
        # A client that takes no host calls, for which a request from the sidecar is malformed.
        async with connect_gotask(address, pool_size=2, max_host_calls=0) as gt:
            good_result: list[object] = []

            async def good() -> None:
                # Holds connection 0 while connection 1 is opened for the next caller.
                good_result.append(await gt.call("Slow.Echo", "fine"))

            with pytest.raises(ProtocolError) as info:
                await call_on_second_connection(gt)
            assert info.value.code == code
            # Connection 0 still serves; the broken one is replaced on demand.
            assert await gt.call("X.Echo", 1) == 1
            async with trio.open_nursery() as inner:
                inner.start_soon(good)
                inner.start_soon(good)
            assert good_result == ["fine", "fine"]
            # The second caller found connection 0 busy and had a replacement opened.
            await trio.testing.wait_all_tasks_blocked()
            assert pool_of(gt).connections == 2
        nursery.cancel_scope.cancel()
    assert fake.connections == 3


async def call_on_second_connection(gt: GoTask) -> object:
    """Call with connection 0 full, so that the pool opens connection 1 for this call."""
    pool = pool_of(gt)
    (first,) = pool._connections
    first.load += first.max_inflight  # pretend its slots are all taken
    try:
        return await gt.call("X.Echo", "on the second connection")
    finally:
        first.load -= first.max_inflight


@pytest.mark.parametrize("size", [100, 1 << 20], ids=["small", "large"])
async def test_reply_arriving_in_pieces(tmp_path: Path, size: int) -> None:
    """A reply cut anywhere, the client reading each piece before the next is sent: a small frame
    is assembled in the read buffer, a large one in a buffer of its own."""
    blob = bytes(range(256)) * (size // 256 + 1)

    async def dribble(stream: trio.SocketStream) -> None:
        decoder = Decoder()
        await stream.send_all(hello())
        while data := await stream.receive_some():
            decoder.receive_data(data)
            while (message := decoder.next_message()) is not None:
                if not isinstance(message, Request):
                    continue  # the client's $hello
                reply = frame([1, message.msgid, None, blob[:size]])
                cuts = [0, 3, 5, len(reply) // 2, len(reply) - 1, len(reply)]
                for start, end in itertools.pairwise(cuts):
                    await stream.send_all(reply[start:end])
                    # Every task blocked: the client has read this piece and waits for the next.
                    await trio.testing.wait_all_tasks_blocked()
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        path = str(tmp_path / "dribble.sock")
        sock = trio.socket.socket(trio.socket.AF_UNIX)
        await sock.bind(path)
        sock.listen()
        nursery.start_soon(trio.serve_listeners, dribble, [trio.SocketListener(sock)])
        async with connect_gotask(path) as gt:
            for _ in range(3):
                assert await gt.call("X.Echo", None) == blob[:size]
        nursery.cancel_scope.cancel()


def deep(levels: int) -> bytes:
    return b"\x91" * levels + b"\xc0"


UNDECODABLE: list[tuple[str, bytes, str]] = [
    (
        "year 12000",
        msgpack.packb(msgpack.Timestamp(seconds=316_000_000_000)),
        "timestamp outside the years 1-9999",
    ),
    ("array keys", b"\x81\x92\x01\x02\xa1x", "map whose key is an array or a map"),
    ("map keys", b"\x81\x81\x01\x02\xa1x", "map whose key is an array or a map"),
    ("2000 levels", deep(2000), "deeper than the 1024 levels"),
]


@pytest.mark.fault(
    fault="a reply Python cannot represent (a time past year 9999, array map keys, 2000 levels deep)",
    sees="BadReply for that call only; the connection goes on",
)
@pytest.mark.parametrize(("name", "result", "why"), UNDECODABLE, ids=[u[0] for u in UNDECODABLE])
async def test_undecodable_reply_fails_only_its_call(
    tmp_path: Path, name: str, result: bytes, why: str
) -> None:
    def reply(request: Request) -> bytes:
        if request.params == "odd":
            msgid: bytes = msgpack.packb(request.msgid)
            body = b"\x94\x01" + msgid + b"\xc0" + result
            return struct.pack(">I", len(body)) + body
        return echo(request)

    fake = FakeSidecar([reply])
    async with trio.open_nursery() as nursery:
        address = await serve(tmp_path, fake, nursery)
        async with connect_gotask(address) as gt:
            results: list[object] = []

            async def fine() -> None:
                results.append(await gt.call("X.Echo", "fine"))

            async with trio.open_nursery() as inner:
                inner.start_soon(fine)
                with pytest.raises(BadReply, match=why) as info:
                    await gt.call("X.Odd", "odd")
                inner.start_soon(fine)
            assert info.value.type == "bad_reply"
            assert info.value.method == "X.Odd"
            assert "cannot decode the reply" in str(info.value)
            assert results == ["fine", "fine"]
            assert await gt.call("X.Echo", 1) == 1
        nursery.cancel_scope.cancel()
    assert fake.connections == 1


# -- whatever a peer sends, the user's block goes on ------------------------------------------------


@asynccontextmanager
async def fake_sidecars(
    tmp_path: Path, **peer: Any
) -> AsyncIterator[tuple[str, trio.MemoryReceiveChannel[FakePeer]]]:
    """The address of a socket served by `FakePeer`s (one per connection, ``peer`` configures
    them), and the channel each is sent to once it serves."""
    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            path = str(tmp_path / "fake.sock")
            yield path, await serve_fakes(nursery, path, **peer)
            nursery.cancel_scope.cancel()


@pytest.mark.fault(
    fault="the sidecar's $cancel naming a map, a list, a float or a bool instead of a msgid",
    sees="nothing: ignored; the block and the connection go on",
)
@pytest.mark.parametrize("msgid", [{"msgid": 1}, [1], 1.0, True], ids=["map", "list", "float", "bool"])
async def test_a_cancel_that_names_no_msgid_leaves_the_block_alone(tmp_path: Path, msgid: Any) -> None:
    # The client takes host calls: the default.
    async with fake_sidecars(tmp_path) as (address, peers), connect_gotask(address) as gt:
        fake = await peers.receive()
        await fake.send(frame_of(Notification("$cancel", msgid)))
        assert await gt.call("X.Echo", "after") == "after"  # read after the $cancel
        assert pool_of(gt).connections == 1


@pytest.mark.fault(
    fault="a frame that makes the decoder fail unexpectedly (any exception, a bug of ours)",
    sees="ProtocolError (decoder_failed, caused by it) for that connection's calls; the block goes on",
)
async def test_an_exception_of_the_decoder_costs_only_its_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bug = plant_decoder_bug(monkeypatch)  # only a bug lets one out: one is put in
    async with (
        fake_sidecars(tmp_path, answer=None) as (address, peers),
        connect_gotask(address) as gt,
        trio.open_nursery() as nursery,
    ):
        first = await peers.receive()

        async def broken_call() -> None:
            with pytest.raises(ProtocolError) as info:
                await gt.call("X.Echo", 1)
            assert info.value.code == "decoder_failed"
            assert "RuntimeError: a bug of the decoder" in str(info.value)
            assert isinstance(info.value.__cause__, ProtocolError)
            assert isinstance(info.value.__cause__.__cause__, RuntimeError)

        nursery.start_soon(broken_call)
        await first.requests.receive()
        await first.send(bug)
        await first.closed.wait()  # the client closed the connection

        async def answer_on_a_new_connection() -> None:
            second = await peers.receive()
            request = await second.requests.receive()
            await second.reply(request.msgid, "on a new connection")

        nursery.start_soon(answer_on_a_new_connection)
        assert await gt.call("X.Echo", 2) == "on a new connection"


async def serve_goridge(stream: trio.SocketStream) -> None:
    """A GoTask sidecar in miniature: echoes each call's body, except that ``X.Deep`` gets JSON
    nested 100,000 deep."""
    decoder = FrameDecoder(1 << 30)
    header: Frame | None = None
    try:
        while data := await stream.receive_some():
            decoder.receive_data(data)
            while (received := decoder.next_frame()) is not None:
                if header is None:
                    header = received
                    continue
                reply = goridge_frame(received.flags, received.payload)
                if header.payload.startswith(b"X.Deep"):
                    reply = goridge_frame(0, b"[" * 100_000 + b"]" * 100_000)
                await stream.send_all(goridge_frame(header.flags, header.payload) + reply)
                header = None
    except trio.BrokenResourceError:
        pass
    finally:
        await stream.aclose()


@pytest.mark.fault(
    fault="a GoTask sidecar's reply of JSON nested 100,000 deep, through connect_gotask",
    sees="BadReply for that call only; the block and the connection go on",
)
async def test_goridge_json_nested_100000_deep_fails_only_its_call_in_the_block(tmp_path: Path) -> None:
    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            path = str(tmp_path / "goridge.sock")
            sock = trio.socket.socket(trio.socket.AF_UNIX)
            await sock.bind(path)
            sock.listen()
            nursery.start_soon(trio.serve_listeners, serve_goridge, [trio.SocketListener(sock)])
            async with connect_gotask(path, protocol="goridge") as gt:
                with pytest.raises(BadReply, match="deeper than Python's json decodes"):
                    await gt.call("X.Deep", None)
                assert await gt.call("X.Echo", {"a": [1]}) == {"a": [1]}
                assert pool_of(gt).connections == 1
            nursery.cancel_scope.cancel()
