"""Clients that stall a standalone sidecar: a frame started and never finished, replies never read.
Each is closed by its deadline (-frame-timeout, -write-timeout), its calls cancelled, while a real
client is served throughout."""

from __future__ import annotations

import struct

import pytest
import trio
from standalone import dial, standalone
from timing import HANG
from wirehelpers import pack

from trio_gotask import connect_gotask

# Short deadlines, so that the tests wait for them briefly; nothing is timed against them.
FLAGS = ("-address", "127.0.0.1:0", "-frame-timeout", "0.5s", "-write-timeout", "0.5s")

# A call that runs until it is cancelled; App.WaitCancelled(1) returns once one was.
SLOW_CALL = pack([0, 1, "App.Slow", 3_600_000, None])


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


async def wait_closed(stream: trio.SocketStream) -> None:
    """Read (and drop) what the sidecar sent until it closes the connection."""
    with trio.fail_after(HANG):
        try:
            while await stream.receive_some(1 << 20):
                pass
        except trio.BrokenResourceError:
            pass  # reset: the sidecar closed with our bytes unread
    await stream.aclose()


@pytest.mark.fault(
    fault="client sends a frame's length prefix (64 MiB) and a few bytes, then nothing",
    sees="the sidecar closes it after -frame-timeout, cancels its calls, logs the flag; others served",
)
async def test_stalled_frame_is_closed(sidecar: str) -> None:
    async with standalone(sidecar, *FLAGS) as app, connect_gotask(app.address) as gt:
        assert await gt.call("App.Hi", "before") == {"hello": "before"}
        stalled = await dial(app.address)
        await stalled.send_all(frame(SLOW_CALL))
        assert await gt.call("App.Running", 1) == 1
        await stalled.send_all(struct.pack(">I", 64 << 20) + b"\x00" * 10)
        with trio.fail_after(HANG):
            assert await gt.call("App.WaitCancelled", 1) == 1
        await wait_closed(stalled)
        assert await gt.call("App.Hi", "after") == {"hello": "after"}
    assert b"-frame-timeout" in app.stderr


@pytest.mark.fault(
    fault="client makes calls with large replies and never reads",
    sees="the sidecar closes it after -write-timeout, cancels its calls, logs the flag; others served",
)
async def test_client_that_never_reads_is_closed(sidecar: str) -> None:
    async with standalone(sidecar, *FLAGS) as app, connect_gotask(app.address) as gt:
        greedy = await dial(app.address)
        await greedy.send_all(frame(SLOW_CALL))
        assert await gt.call("App.Running", 1) == 1
        # 16 MiB is more than the socket buffers hold: the sidecar's writes stall.
        await greedy.send_all(b"".join(frame(pack([0, i, "App.Large", 16 << 20, None])) for i in (2, 3)))
        with trio.fail_after(HANG):
            assert await gt.call("App.WaitCancelled", 1) == 1
        await wait_closed(greedy)
        assert await gt.call("App.Hi", "still served") == {"hello": "still served"}
    assert b"-write-timeout" in app.stderr
