"""A standalone sidecar is a network service: whoever connects, what it admits is bounded in time
and number. Hostile clients are raw sockets written here; the sidecar is the real example."""

from __future__ import annotations

import contextlib
import os
import re
import ssl
import struct
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
import trio.testing
import trustme
from standalone import Standalone, dial, standalone
from timing import HANG

from trio_gotask import RemoteError, SidecarError, connect_gotask

SECRET = "correct horse battery staple"


async def read_message(stream: trio.abc.ReceiveStream) -> Any:
    """The next message the sidecar sends, or None when it closes the connection."""
    data = b""
    while True:
        if len(data) >= 4:
            (n,) = struct.unpack(">I", data[:4])
            if len(data) >= 4 + n:
                return msgpack.unpackb(data[4 : 4 + n])
        chunk = await stream.receive_some()
        if not chunk:
            assert data == b"", f"closed inside a frame: {data!r}"
            return None
        data += chunk


async def expect_hello_then_close(stream: trio.abc.ReceiveStream) -> None:
    with trio.fail_after(HANG):
        hello = await read_message(stream)
        assert hello[:2] == [2, "$hello"]
        with contextlib.suppress(trio.BrokenResourceError):  # a reset: closed with bytes unread
            assert await read_message(stream) is None


async def stderr_until(app: Standalone, text: bytes) -> bytes:
    """What the running sidecar wrote to stderr, up to the first line holding ``text``."""
    assert app.process.stderr is not None
    seen = b""
    with trio.fail_after(HANG):
        while text not in seen:
            chunk = await app.process.stderr.receive_some()
            assert chunk, f"the sidecar's stderr ended without {text!r}: {seen!r}"
            seen += chunk
    return seen


def counted(stderr: bytes, noun: str) -> int:
    """What the sidecar's log counted of ``noun`` ("N more <noun>" lines: one a minute, and one
    at shutdown)."""
    return sum(int(n) for n in re.findall(rb"(\d+) more " + re.escape(noun.encode()), stderr))


async def call_hi(address: str, who: str, **kwargs: Any) -> None:
    async with connect_gotask(address, **kwargs) as gt:
        assert await gt.call("App.Hi", who) == {"hello": who}


@pytest.mark.fault(
    fault="many connections that never speak (no secret, or TLS then silence)",
    sees="each closed after -handshake-timeout; real clients served throughout",
)
@pytest.mark.parametrize("tls", [False, True])
async def test_silent_connections_are_closed(sidecar: str, tls: bool, tmp_path: Path) -> None:
    flags = ["-address", "127.0.0.1:0", "-handshake-timeout", "500ms"]
    client_context: ssl.SSLContext | None = None
    if tls:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
        cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
        flags += ["-tls-cert", str(tmp_path / "cert.pem"), "-tls-key", str(tmp_path / "key.pem")]
        client_context = ssl.create_default_context()
        ca.configure_trust(client_context)
    async with standalone(sidecar, *flags) as app:
        silent: list[trio.abc.Stream] = []
        for _ in range(50):
            stream: trio.abc.Stream = await dial(app.address)
            if client_context is not None:
                stream = trio.SSLStream(stream, client_context, server_hostname="127.0.0.1")
                await stream.do_handshake()
            silent.append(stream)
        kwargs = {"ssl_context": client_context} if tls else {}
        await call_hi(app.address, "while they wait", **kwargs)
        for stream in silent:
            await expect_hello_then_close(stream)
            await stream.aclose()
        await call_hi(app.address, "after", **kwargs)
    assert b"no $hello or other frame within 500ms (-handshake-timeout)" in app.stderr
    # One line in full, then counts (one a minute) for the other 49.
    assert counted(app.stderr, "connections closed for not finishing their opening") == 49


@pytest.mark.fault(
    fault="more connections than -max-conns",
    sees="SidecarError at connect: 'too many connections ... -max-conns'; in again once one closes",
)
async def test_connection_limit(sidecar: str) -> None:
    async with standalone(
        sidecar, "-address", "127.0.0.1:0", "-max-conns", "5", "-handshake-timeout", "1h"
    ) as app:
        held = [await dial(app.address) for _ in range(5)]
        for stream in held:
            with trio.fail_after(HANG):
                assert (await read_message(stream))[:2] == [2, "$hello"]
        with pytest.raises(SidecarError, match=r"too many connections.*-max-conns limit of 5.*pool_size="):
            await call_hi(app.address, "refused")
        await held.pop().aclose()
        # The sidecar frees the slot when it reads the EOF: try until it has.
        with trio.fail_after(HANG):
            while True:
                try:
                    await call_hi(app.address, "in again")
                    break
                except SidecarError as exc:
                    assert "too many connections" in str(exc)
        for stream in held:
            await stream.aclose()
    lines = app.stderr.decode().splitlines()
    assert "refusing connection" in lines[0] and "-max-conns limit of 5" in lines[0]
    assert all("more connections refused at -max-conns" in line for line in lines[1:]), lines
    assert len(lines) <= 2, lines  # refusals after the first are counted, not each logged


async def fill_descriptors(app: Standalone) -> list[trio.SocketStream]:
    """Connect until the sidecar has no descriptor left; the last one waits in its backlog."""
    held = []
    pid = app.process.pid
    limits = Path(f"/proc/{pid}/limits").read_text()
    limit = int(limits.split("Max open files")[1].split()[0])
    free = limit - len(os.listdir(f"/proc/{pid}/fd"))
    for _ in range(free):
        stream = await dial(app.address)
        with trio.fail_after(HANG):
            assert (await read_message(stream))[:2] == [2, "$hello"]
        held.append(stream)
    return held


@pytest.mark.fault(
    fault="the sidecar out of file descriptors (EMFILE)",
    sees="accept backs off and retries; a waiting client gets in once a descriptor frees",
)
async def test_out_of_descriptors(sidecar: str) -> None:
    async with standalone(
        sidecar, "-address", "127.0.0.1:0", "-max-conns", "1000", "-handshake-timeout", "1h",
        max_files=40,
    ) as app:  # fmt: skip
        held = await fill_descriptors(app)
        waiting = await dial(app.address)  # accepted by the kernel, not by the sidecar
        assert b"too many open files" in await stderr_until(app, b"accept:")
        await held.pop().aclose()
        with trio.fail_after(HANG):
            assert (await read_message(waiting))[:2] == [2, "$hello"]
        for stream in [*held, waiting]:
            await stream.aclose()
        with trio.fail_after(HANG):
            while True:  # descriptors free as the sidecar reads the EOFs
                try:
                    await call_hi(app.address, "after")
                    break
                except SidecarError as exc:
                    assert "did not answer" in str(exc) or "refused" in str(exc), exc


async def test_default_connection_limit_follows_the_descriptor_limit(sidecar: str) -> None:
    async with standalone(sidecar, "-address", "127.0.0.1:0", max_files=40) as app:
        held = []
        with trio.fail_after(HANG):
            while True:
                stream = await dial(app.address)
                held.append(stream)
                first = await read_message(stream)
                if first[:2] != [2, "$hello"]:
                    break
        assert first[:2] == [2, "$refused"]
        assert "-max-conns limit of 30" in first[2]  # three quarters of 40
        for stream in held:
            await stream.aclose()


@pytest.mark.fault(
    fault="wrong-secret guesses, many per second",
    sees="each refused; the log has the first in full, then a count per minute (no secret in it)",
)
async def test_failed_authentication_is_logged_in_brief(sidecar: str) -> None:
    async with standalone(sidecar, "-address", "127.0.0.1:0", env={"GOTASK_SECRET": SECRET}) as app:
        for i in range(100):
            with pytest.raises(SidecarError, match="wrong secret"):
                await call_hi(app.address, "no", secret=f"guess {i}")
        await call_hi(app.address, "friend", secret=SECRET)
    first, *counts = app.stderr.decode().splitlines()
    assert "authentication failed: wrong secret" in first
    assert counts and all("failed authentications from 1 address" in line for line in counts), counts
    assert counted(app.stderr, "failed authentications") == 99
    assert SECRET not in app.stderr.decode() and "guess" not in app.stderr.decode()


@pytest.mark.fault(
    fault="more calls in flight over all connections than the sidecar's -max-calls",
    sees="RemoteError type busy at once, naming -max-calls; served again once a call ends",
)
async def test_calls_over_all_connections_are_bounded(sidecar: str) -> None:
    async with (
        standalone(sidecar, "-address", "127.0.0.1:0", "-max-calls", "2") as app,
        connect_gotask(app.address, pool_size=1) as first,
        connect_gotask(app.address) as second,
    ):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(first.call, "App.Slow", 3_600_000)
            nursery.start_soon(first.call, "App.Slow", 3_600_000)
            # Both requests are on the wire: the sidecar reads the next one on this connection after them.
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(RemoteError, match="-max-calls") as info:
                await first.call("App.Hi", "a third")
            assert info.value.type == "busy"
            nursery.cancel_scope.cancel()
        with trio.fail_after(HANG):
            while True:  # the cancelled calls' slots come back as their replies go out
                try:
                    assert await first.call("App.WaitCancelled", 2) == 2
                    break
                except RemoteError as exc:
                    assert exc.type == "busy", exc
        assert await second.call("App.Hi", "after") == {"hello": "after"}
