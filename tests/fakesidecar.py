"""A sidecar's side of the protocol in Python, over Trio memory streams, for deterministic tests of
`Connection`, `Pool` and `Supervisor` (with the autojump clock; never instead of the real-sidecar
tests).

A `FakePeer` greets like the Go sidecar (docs/protocol.md, section 2) and then hands each request to
the test: either automatically through ``answer`` (a function of the request), or one by one
through `FakePeer.requests`, which the test answers with `FakePeer.reply`. It records ``$cancel``
and ``$credit``, and sends a stream's items with `FakePeer.item`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing
from wirehelpers import encode, pack

from trio_gotask._opening import Connect, Opened, greet
from trio_gotask._wire import (
    AUTH,
    CANCEL,
    CREDIT,
    HELLO,
    ITEM,
    PING,
    PONG,
    PROTOCOL_VERSION,
    REFUSED,
    Decoder,
    Notification,
    Request,
    Response,
    frame_header,
)

Answer = Callable[[Request], Awaitable[Any]]
"""Computes a request's result; raising `Fail` answers with an error instead."""


class Fail(Exception):
    """Raised by an `Answer`: reply with the error map ``{type, message}``."""

    def __init__(self, type: str, message: str) -> None:
        super().__init__(message)
        self.error = {"type": type, "message": message}


async def echo(request: Request) -> Any:
    return request.params


def frame(message: Notification | Response | Request) -> bytes:
    payload = encode(message)
    return frame_header(len(payload)) + payload


class FakePeer:
    """The sidecar end of one connection."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        answer: Answer | None = echo,
        max_frame_size: int = 1 << 20,
        max_inflight: int = 64,
        version: int = PROTOCOL_VERSION,
        secret: str | None = None,
        refuse: str | None = None,
        ping: bool = False,
        streams: bool = True,
    ) -> None:
        self.stream = stream
        self.answer = answer
        self.max_frame_size = max_frame_size
        self.max_inflight = max_inflight
        self.version = version
        self.secret = secret
        self.refuse = refuse
        self.ping = ping
        """Whether its $hello says it answers $ping, and whether it does (set to False to stop)."""
        self.pings: list[int] = []
        self.streams = streams
        """Whether its $hello says it serves streams."""
        self.credits: list[Any] = []
        """The params of every $credit received, in order."""
        self.credit_arrived = trio.Event()
        """Set (and replaced) at each $credit."""
        self._send_requests, self.requests = trio.open_memory_channel[Request](math.inf)
        self._send_responses, self.responses = trio.open_memory_channel[Response](math.inf)
        """The client's answers to host calls (requests this peer sent with `send`)."""
        self.client_hello: dict[str, Any] = {}
        self.cancels: list[int] = []
        self.cancel_arrived = trio.Event()
        """Set (and replaced) at each $cancel."""
        self.in_flight: set[int] = set()
        self.most_in_flight = 0
        self.reading = True
        """Set to False to stop reading the client's frames (a peer that stops reading)."""
        self._may_read = trio.Event()
        self._write_lock = trio.Lock()
        self.closed = trio.Event()

    async def serve(self) -> None:
        """Greet, then read frames until the client closes; answer with ``answer`` if it is set."""
        decoder = Decoder(self.max_frame_size)
        try:
            async with trio.open_nursery() as nursery:
                greeted = False
                while True:
                    message = decoder.next_message()
                    if message is None:
                        while not self.reading:
                            await self._may_read.wait()
                        try:
                            data = await self.stream.receive_some()
                        except (trio.ClosedResourceError, trio.BrokenResourceError):
                            return  # hung up, by either side
                        if not data:
                            return
                        decoder.receive_data(data)
                        continue
                    if not greeted:
                        greeted = await self._greet(message)
                        if greeted and self.refuse is not None:
                            return
                        continue
                    if type(message) is Notification and message.method == CANCEL:
                        self.cancels.append(message.params)
                        self.cancel_arrived.set()
                        self.cancel_arrived = trio.Event()
                    elif type(message) is Notification and message.method == CREDIT:
                        self.credits.append(message.params)
                        self.credit_arrived.set()
                        self.credit_arrived = trio.Event()
                    elif type(message) is Notification and message.method == PING:
                        self.pings.append(message.params)
                        if self.ping:
                            nursery.start_soon(self.send, frame(Notification(PONG, message.params)))
                    elif type(message) is Response:
                        self._send_responses.send_nowait(message)
                    elif type(message) is Request:
                        self.in_flight.add(message.msgid)
                        self.most_in_flight = max(self.most_in_flight, len(self.in_flight))
                        if self.answer is None:
                            self._send_requests.send_nowait(message)
                        else:
                            nursery.start_soon(self._answer, self.answer, message)
        finally:
            self.closed.set()
            self._send_requests.close()
            self._send_responses.close()
            await trio.aclose_forcefully(self.stream)

    async def _greet(self, message: Any) -> bool:
        """Handle the client's first frames; return True once its $hello is answered."""
        if type(message) is Notification and message.method == AUTH:
            if message.params != self.secret:
                self.refuse = self.refuse or "wrong secret"
            return False
        assert type(message) is Notification and message.method == HELLO, message
        self.client_hello = message.params
        if self.refuse is not None:
            await self.send(frame(Notification(REFUSED, self.refuse)))
        else:
            hello = {
                "version": self.version,
                "max_frame_size": self.max_frame_size,
                "max_inflight": self.max_inflight,
            }
            if self.streams:
                hello["streams"] = True
            if self.ping:
                hello["ping"] = True
            await self.send(frame(Notification(HELLO, hello)))
        return True

    async def _answer(self, answer: Answer, request: Request) -> None:
        try:
            try:
                result = await answer(request)
            except Fail as exc:
                await self.reply(request.msgid, error=exc.error)
            else:
                await self.reply(request.msgid, result)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # the connection is gone: nobody waits for the reply

    async def hang_up(self) -> None:
        """End the stream from the sidecar's side, as a sidecar that exits does."""
        if isinstance(self.stream, trio.abc.HalfCloseableStream):
            await self.stream.send_eof()
        else:
            await self.stream.aclose()

    async def answer_waiting(self) -> None:
        """Answer every request waiting in `requests`, each with its argument."""
        while True:
            try:
                request = self.requests.receive_nowait()
            except trio.WouldBlock:
                return
            await self.reply(request.msgid, request.params)

    def resume_reading(self) -> None:
        self.reading = True
        self._may_read.set()
        self._may_read = trio.Event()

    async def reply(self, msgid: int, result: Any = None, *, error: dict[str, Any] | None = None) -> None:
        self.in_flight.discard(msgid)
        await self.send(frame(Response(msgid, error, result)))

    async def item(self, msgid: int, item: Any) -> int:
        """Send one item of the stream ``msgid``; return its payload's length (what it costs in
        credit)."""
        payload = pack([ITEM, msgid, item])
        await self.send(frame_header(len(payload)) + payload)
        return len(payload)

    async def send(self, data: bytes) -> None:
        """Write raw bytes (whole frames, or anything at all)."""
        async with self._write_lock:
            await self.stream.send_all(data)


async def open_fake(
    nursery: trio.Nursery,
    *,
    client_max_frame_size: int = 1 << 20,
    secret: str | None = None,
    lockstep: bool = False,
    max_host_calls: int = 0,
    channel: str = "memory",
    **peer: Any,
) -> tuple[Opened, FakePeer]:
    """A greeted client stream and the peer serving it (in ``nursery``). ``lockstep`` makes every
    write wait for the other side to read it (a peer that stops reading then blocks the writer).

    ``channel`` is what joins them: ``"memory"`` streams, or real descriptors, which the client
    reads and writes itself (`FdChannel`, where a lone caller reads its own reply): a
    ``"socket"`` pair, or a ``"pipe"`` each way."""
    client: trio.abc.Stream
    server: trio.abc.Stream
    if lockstep:
        client, server = trio.testing.lockstep_stream_pair()
    elif channel == "socket":
        a, b = trio.socket.socketpair()
        client, server = trio.SocketStream(a), trio.SocketStream(b)
    elif channel == "pipe":
        server_reads, client_writes = os.pipe()
        client_reads, server_writes = os.pipe()
        FdStream = trio.lowlevel.FdStream
        client = trio.StapledStream(FdStream(client_writes), FdStream(client_reads))
        server = trio.StapledStream(FdStream(server_writes), FdStream(server_reads))
    else:
        assert channel == "memory", channel
        client, server = trio.testing.memory_stream_pair()
    fake = FakePeer(server, secret=secret, **peer)
    nursery.start_soon(fake.serve)
    opened = await greet(
        client, max_frame_size=client_max_frame_size, secret=secret, max_host_calls=max_host_calls
    )
    return opened, fake


def fake_connect(nursery: trio.Nursery, peers: list[FakePeer], **peer: Any) -> Connect:
    """A `Connect` that opens a fresh fake peer each time and appends it to ``peers``."""

    async def connect() -> Opened:
        opened, fake = await open_fake(nursery, **peer)
        peers.append(fake)
        return opened

    return connect


async def serve_fakes(nursery: trio.Nursery, path: str, **peer: Any) -> trio.MemoryReceiveChannel[FakePeer]:
    """Listen on the Unix socket ``path`` and serve each connection with a fresh `FakePeer`
    (``peer`` configures it), for tests of the user's whole block (`connect_gotask`); each peer
    is sent to the channel returned once it serves."""
    sock = trio.socket.socket(trio.socket.AF_UNIX)
    await sock.bind(path)
    sock.listen()
    send, receive = trio.open_memory_channel[FakePeer](math.inf)

    async def handle(stream: trio.SocketStream) -> None:
        fake = FakePeer(stream, **peer)
        send.send_nowait(fake)
        await fake.serve()

    nursery.start_soon(trio.serve_listeners, handle, [trio.SocketListener(sock)])
    return receive
