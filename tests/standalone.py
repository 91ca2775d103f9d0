"""A sidecar started by hand, as `./app -standalone -address ...` would be, for connect_gotask."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio
from timing import HANG


@dataclass
class Standalone:
    process: trio.Process
    address: str
    """The address from the handshake line (the real port when asked for port 0)."""
    stderr: bytes = b""
    """What the sidecar wrote to stderr, once it has exited."""


@asynccontextmanager
async def standalone(
    sidecar: str, *flags: str, env: dict[str, str] | None = None, max_files: int | None = None
) -> AsyncIterator[Standalone]:
    """Start ``sidecar -standalone FLAGS...``, wait for its handshake, and on the way out stop it
    with SIGTERM and check that it exits 0 (its graceful shutdown), unless the test killed it.
    ``max_files`` sets its descriptor limit (RLIMIT_NOFILE, soft and hard)."""

    def limit_files() -> None:
        if max_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max_files, max_files))

    process = await trio.lowlevel.open_process(
        [sidecar, "-standalone", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
        preexec_fn=limit_files,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        line = b""
        with trio.fail_after(HANG):
            while not line.endswith(b"\n"):
                line += await process.stdout.receive_some(1)
        handle = Standalone(process, line.decode().strip().split("|")[3])
        yield handle
    finally:
        process.terminate()
        with trio.fail_after(HANG):
            returncode = await process.wait()
            stderr = b""
            while chunk := await process.stderr.receive_some():
                stderr += chunk
        await process.stdout.aclose()
        await process.stderr.aclose()
    handle.stderr = stderr
    if returncode != -signal.SIGKILL:
        assert returncode == 0, stderr.decode(errors="replace")


async def dial(address: str) -> trio.SocketStream:
    """A raw TCP connection to a standalone sidecar at ``host:port``, for hostile clients."""
    host, _, port = address.rpartition(":")
    return await trio.open_tcp_stream(host, int(port))
