"""What connect_gotask says when the peer at the address is not a sidecar that greets it: the
error names what was seen (silence until connect_timeout, or the first bytes), and hints at TLS
only when the evidence points there. Peers here are Trio sockets of the test's own."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from functools import partial

import pytest
import trio
from timing import HANG

from trio_gotask import SidecarError, connect_gotask

Serve = Callable[[trio.SocketStream], Awaitable[None]]


async def silent(stream: trio.SocketStream) -> None:
    await trio.sleep_forever()


def answering(data: bytes) -> Serve:
    async def answer(stream: trio.SocketStream) -> None:
        await stream.send_all(data)
        await trio.sleep_forever()  # the client closes

    return answer


async def connect_error(serve: Serve, connect_timeout: float = HANG) -> str:
    """The message of the `SidecarError` connect_gotask raises against a peer that ``serve``s
    each connection."""
    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        with pytest.raises(SidecarError) as info:
            async with connect_gotask(f"127.0.0.1:{port}", connect_timeout=connect_timeout):
                pass
        nursery.cancel_scope.cancel()
    return str(info.value)


@pytest.mark.fault(
    fault="connect_gotask to a peer that accepts and says nothing (frozen, hung, out of file descriptors)",
    sees="SidecarError at connect: it did not answer within connect_timeout, naming what stops a sidecar answering; no TLS hint",
)
async def test_a_silent_peer_did_not_answer_in_time() -> None:
    # Only the timeout ever ends the wait: the peer never answers.
    message = await connect_error(silent, connect_timeout=0.5)
    assert "accepted the connection but did not answer within 0.5 s (connect_timeout)" in message
    assert "out of file descriptors" in message
    assert "TLS" not in message


async def test_a_peer_that_never_accepts_did_not_answer_in_time() -> None:
    """A sidecar out of file descriptors cannot accept: its kernel completes the connection and
    keeps it in the listen backlog, and nothing more happens."""
    with socket.socket() as backlog:
        backlog.bind(("127.0.0.1", 0))
        backlog.listen(8)  # and never accept()
        port = backlog.getsockname()[1]
        with pytest.raises(SidecarError) as info:
            async with connect_gotask(f"127.0.0.1:{port}", connect_timeout=0.5):
                pass
    message = str(info.value)
    assert "did not answer within 0.5 s (connect_timeout)" in message
    assert "TLS" not in message


TLS_ALERT = bytes.fromhex("15030300020246")
"""A TLS record: a fatal alert (protocol_version), as an OpenSSL server sends a client that does
not speak TLS."""


@pytest.mark.fault(
    fault="connect_gotask without ssl_context to a TLS server that answers with a TLS alert",
    sees="SidecarError at connect showing the bytes it sent, which look like TLS: pass ssl_context=",
)
async def test_a_peer_answering_tls_bytes_is_named_tls() -> None:
    message = await connect_error(answering(TLS_ALERT))
    assert "sent something other than a $hello" in message
    assert repr(TLS_ALERT) in message  # what was seen
    assert "it speaks TLS" in message and "pass ssl_context=" in message


@pytest.mark.fault(
    fault="connect_gotask to a server of another protocol that speaks first (an SSH banner)",
    sees="SidecarError at connect showing its first bytes; no TLS hint",
)
async def test_a_peer_answering_other_bytes_is_not_named_tls() -> None:
    banner = b"SSH-2.0-OpenSSH_9.6\r\n"
    message = await connect_error(answering(banner))
    assert repr(banner) in message
    assert "not a trio-gotask sidecar" in message
    assert "TLS" not in message
