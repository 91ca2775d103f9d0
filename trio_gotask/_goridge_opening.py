"""Opening a connection in GoTask's dialect (docs/goridge.md): no greeting, so a stream is ready
once it connects; a probe call checks that a launched sidecar is ready and speaks it."""

from __future__ import annotations

import os
from typing import Final

import trio

from ._channel import PeerClosed
from ._errors import ProtocolError
from ._goridge import FrameDecoder, GoridgeProtocol, Replies, encode_call
from ._opening import GREETING_READ, Connect, Opened, SansIO, once_per_pipe, open_or_explain
from ._wire import HANDSHAKE_MARKER, Hello


def goridge_protocol(opened: Opened, max_frame_size: int, max_inflight: int) -> SansIO:
    """GoTask's goridge frames: no greeting, and the client's own limits."""
    return GoridgeProtocol(max_frame_size=max_frame_size, max_inflight=max_inflight)


def goridge_connect(
    address: str, *, max_frame_size: int, max_inflight: int, connect_timeout: float
) -> Connect:
    """How to open a connection to a GoTask sidecar at ``address``: goridge has no greeting, so
    the connection is ready once the socket accepts."""

    async def connect() -> Opened:
        stream = await open_or_explain(address, "GoTask sidecar", connect_timeout)
        return Opened(stream, Hello(0, max_frame_size, max_inflight), b"", speaks=goridge_protocol)

    return connect


PROBE_METHOD: Final = "trio_gotask.Probe"
"""A method no sidecar registers: net/rpc answers a call to it with an error, which proves that
the peer reads and writes goridge frames."""


async def goridge_probe(send: trio.abc.SendStream, receive: trio.abc.ReceiveStream) -> None:
    """Check that the peer speaks GoTask's format: one call to `PROBE_METHOD`, whose error reply
    must come back whole. Raises `ProtocolError` (saying what the peer seems to be) or `PeerClosed`."""
    await send.send_all(encode_call(PROBE_METHOD, 0, None))
    decoder = FrameDecoder(GREETING_READ)
    replies = Replies()
    received = b""
    while True:
        data = await receive.receive_some(GREETING_READ)
        if not data:
            raise PeerClosed("the sidecar closed the connection before answering")
        if not received and data.startswith(HANDSHAKE_MARKER.encode() + b"|"):
            raise ProtocolError(
                "handshake",
                "the sidecar speaks trio-gotask's own protocol (it printed a handshake line), not "
                "GoTask's goridge format: drop protocol='goridge'",
            )
        received += data
        decoder.receive_data(data)
        while (frame := decoder.next_frame()) is not None:
            if (reply := replies.feed(frame)) is not None:
                if reply.seq != 0 or reply.error is None:
                    raise ProtocolError(
                        "bad_message", f"the sidecar answered a call to {PROBE_METHOD} with {reply}"
                    )
                return


def goridge_pipe_connect(
    stdin: trio.abc.SendStream,
    stdout: trio.abc.ReceiveStream,
    initial_data: bytes,
    *,
    max_frame_size: int,
    max_inflight: int,
) -> Connect:
    """`pipe_connect` for a GoTask sidecar: no greeting; ``max_inflight`` is the client's own."""

    async def open_pipe() -> Opened:
        send = stdin
        if isinstance(send, trio.lowlevel.FdStream):
            # A descriptor of the connection's own: closing the connection leaves the pipe open,
            # since a GoTask sidecar takes its end as an error ("pipe is closed", status 1). It is
            # stopped with SIGTERM, and the pipe closed after.
            send = trio.lowlevel.FdStream(os.dup(send.fileno()))
        stream = trio.StapledStream(send, stdout)
        hello = Hello(0, max_frame_size, max_inflight)
        return Opened(stream, hello, initial_data, speaks=goridge_protocol)

    return once_per_pipe(stdin, stdout, open_pipe)
