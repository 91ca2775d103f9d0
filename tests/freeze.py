"""Freeze a sidecar as SIGSTOP does, for the tests of frozen peers: `frozen` returns once the
process is stopped, not merely signalled (the kernel stops a running process a moment after
``kill`` returns, and a sidecar can answer a call in that moment)."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]  # the field after the command, which may hold spaces


async def wait_stopped(pid: int) -> None:
    """Return once process ``pid`` is stopped (SIGSTOP delivered), or has exited (not reaping it)."""
    flags = os.WSTOPPED | os.WEXITED | os.WNOWAIT
    try:  # a child of ours: the kernel tells us, without polling
        await trio.to_thread.run_sync(os.waitid, os.P_PID, pid, flags, abandon_on_cancel=True)
        return
    except ChildProcessError:
        pass
    while True:  # not ours: no event says so, so this polls /proc
        if _state(pid) in ("T", "t", "Z", "X"):
            return
        await trio.sleep(0.001)


@asynccontextmanager
async def frozen(pid: int) -> AsyncIterator[None]:
    """SIGSTOP ``pid`` for the body, and SIGCONT it however the body ends."""
    os.kill(pid, signal.SIGSTOP)
    try:
        await wait_stopped(pid)
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
