"""Faults: a sidecar that dies, a Python that dies, Ctrl-C, limits. Nothing hangs, nothing leaks."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from freeze import frozen
from standalone import standalone
from timing import HANG

from trio_gotask import (
    GoTaskError,
    PanicError,
    RemoteError,
    RestartPolicy,
    SidecarError,
    connect_gotask,
    open_gotask,
)
from trio_gotask._address import Transport

ROOT = Path(__file__).resolve().parent.parent


async def wait_for_exit(pid: int) -> None:
    """Wait, without polling, until process ``pid`` (not necessarily our child) has exited."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)


@pytest.mark.fault(
    fault="sidecar SIGKILLed with calls in flight", sees="SidecarError: exit status, stderr tail"
)
@pytest.mark.parametrize("transport", ["unix", "pipe"])
async def test_sigkill_mid_call_fails_every_call_promptly(sidecar: str, transport: Transport) -> None:
    errors: list[SidecarError] = []
    failed_after: list[float] = []

    async def waiting() -> None:
        with pytest.raises(SidecarError, match="SIGKILL") as info:
            await gt.call("App.Slow", 3_600_000)
        errors.append(info.value)
        failed_after.append(trio.current_time() - killed_at)

    async with open_gotask(sidecar, transport=transport) as gt:
        assert gt.pid is not None
        with trio.fail_after(HANG):
            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(waiting)
                await trio.testing.wait_all_tasks_blocked()
                killed_at = trio.current_time()
                os.kill(gt.pid, signal.SIGKILL)
        with pytest.raises(SidecarError) as later:
            await gt.call("App.Hi", "anyone?")
        stats = gt.statistics()
    assert len(failed_after) == 20
    for exc in [*errors, later.value]:
        assert exc.returncode == -signal.SIGKILL
        assert "SIGKILL" in str(exc)
    assert stats.calls_failed == 21
    assert stats.in_flight == 0
    print(f"in-flight calls failed {max(failed_after) * 1000:.1f} ms after SIGKILL")


@pytest.mark.fault(
    fault="a local sidecar frozen (SIGSTOP) under calls without deadlines",
    sees="SidecarError 'said nothing for 3 s' after keepalive_timeout; calls work again once it resumes",
)
async def test_a_frozen_sidecar_fails_its_calls_after_keepalive_timeout(sidecar: str) -> None:
    async with open_gotask(sidecar, keepalive_timeout=3) as gt:
        assert gt.pid is not None
        assert await gt.call("App.Hi", "before") == {"hello": "before"}
        with trio.fail_after(HANG):
            async with frozen(gt.pid):
                with pytest.raises(SidecarError, match=r"said nothing for 3 s"):
                    await gt.call("App.Hi", "frozen")  # no deadline: only the keepalive ends it
        with trio.fail_after(HANG):
            assert await gt.call("App.Hi", "after") == {"hello": "after"}


@pytest.mark.fault(
    fault="a sidecar frozen (SIGSTOP) on the pipe transport, restart policy on",
    sees="SidecarError after keepalive_timeout; the next call: killed, its pipe broke; later calls go to a new one",
)
async def test_a_frozen_pipe_sidecar_is_killed_and_restarted(sidecar: str) -> None:
    policy = RestartPolicy(max_restarts=1, backoff=0.01)
    async with open_gotask(sidecar, transport="pipe", keepalive_timeout=3, restart=policy) as gt:
        first = gt.pid
        assert first is not None
        with trio.fail_after(HANG):
            async with frozen(first):
                with pytest.raises(SidecarError, match=r"said nothing for 3 s"):
                    await gt.call("App.Hi", "frozen")
            with pytest.raises(SidecarError, match=r"pipe cannot be reopened: the sidecar was killed"):
                await gt.call("App.Hi", "the pipe is gone")
            assert await gt.call("App.Hi", "after") == {"hello": "after"}
        assert gt.pid != first and gt.statistics().restarts == 1


@pytest.mark.fault(
    fault="sidecar dies, restart policy on", sees="in-flight calls fail once; later calls succeed"
)
async def test_restart_policy_brings_it_back_without_retrying(sidecar: str) -> None:
    policy = RestartPolicy(max_restarts=3, backoff=0.01)
    async with open_gotask(sidecar, restart=policy) as gt:
        first_pid = gt.pid
        assert first_pid is not None
        with pytest.raises(SidecarError, match="status 7"):
            await gt.call("App.Exit", 7)
        # Waits for the new sidecar, under our own deadline.
        with trio.fail_after(HANG):
            assert await gt.call("App.Hi", "again") == {"hello": "again"}
        assert gt.pid not in (None, first_pid)
        # Had App.Exit been retried on the new process, that one would have died too.
        assert await gt.call("App.Pid") == gt.pid
        stats = gt.statistics()
        assert stats.restarts == 1
        assert stats.calls_failed == 1
        assert stats.connections >= 1


@pytest.mark.fault(fault="sidecar keeps dying, restart cap reached", sees="SidecarError for every later call")
async def test_restart_gives_up_after_the_cap(sidecar: str) -> None:
    async with open_gotask(sidecar, restart=RestartPolicy(max_restarts=2, backoff=0.01)) as gt:
        for _ in range(3):
            with pytest.raises(SidecarError):
                await gt.call("App.Exit", 1)
        with pytest.raises(SidecarError, match="status 1"):
            await gt.call("App.Hi", "anyone?")
        assert gt.statistics().restarts == 2


async def test_statistics_count_calls(sidecar: str) -> None:
    async with open_gotask(sidecar) as gt:
        await gt.call("App.Hi", "x")
        with pytest.raises(GoTaskError):
            await gt.call("App.Fail", "x")
        with trio.move_on_after(0.01):
            await gt.call("App.Slow", 3_600_000)
        stats = gt.statistics()
    assert (stats.calls_done, stats.calls_failed, stats.calls_cancelled) == (1, 1, 1)
    with pytest.raises(AttributeError):
        stats.calls_done = 5  # type: ignore[misc]


@pytest.mark.fault(
    fault="argument larger than max_frame_size", sees="ValueError before sending; connection fine"
)
async def test_request_over_the_frame_limit_is_refused_before_sending(sidecar: str) -> None:
    async with open_gotask(sidecar, max_frame_size=1 << 16, pool_size=1) as gt:
        with pytest.raises(ValueError, match="frame limit"):
            await gt.call("App.Echo", bytes(1 << 17))
        assert await gt.call("App.Echo", bytes(1 << 15)) == bytes(1 << 15)
        assert gt.statistics().connections == 1


@pytest.mark.fault(
    fault="reply larger than max_frame_size", sees="RemoteError type too_large; connection fine"
)
async def test_reply_over_the_frame_limit(sidecar: str) -> None:
    # open_gotask gives the sidecar the same limit, so it refuses to send what we would refuse.
    async with open_gotask(sidecar, max_frame_size=1 << 16, pool_size=1) as gt:
        with pytest.raises(RemoteError) as info:
            await gt.call("App.Large", 1 << 17)
        assert info.value.type == "too_large"
        assert await gt.call("App.Large", 1 << 15) == bytes(i % 256 for i in range(1 << 15))
        assert gt.statistics().connections == 1


@pytest.mark.fault(
    fault="a sidecar started elsewhere with a larger frame limit than the client's",
    sees="RemoteError too_large for the large reply (the client's $hello told it); connection fine",
)
async def test_a_standalone_sidecar_keeps_to_the_clients_frame_limit(sidecar: str, tmp_path: Path) -> None:
    # The sidecar runs with its default 64 MiB limit; only the client's $hello tells it 64 KiB.
    async with (
        standalone(sidecar, "-address", str(tmp_path / "s.sock")) as app,
        connect_gotask(app.address, max_frame_size=1 << 16) as gt,
    ):
        with pytest.raises(RemoteError) as info:
            await gt.call("App.Large", 1 << 17)
        assert info.value.type == "too_large"
        assert "client's frame limit is 65536" in info.value.message
        assert len(await gt.call("App.Large", 1 << 15)) == 1 << 15
        assert gt.statistics().connections == 1


@pytest.mark.fault(
    fault="an error message longer than the frame limit",
    sees="RemoteError with the message shortened to fit; connection fine",
)
async def test_a_long_error_is_shortened_to_fit_the_frame_limit(sidecar: str) -> None:
    async with open_gotask(sidecar, max_frame_size=1024) as gt:
        with pytest.raises(RemoteError) as info:
            await gt.call("App.FailRepeated", {"s": "é", "n": 5000})
        assert info.value.message.endswith("é [truncated]")
        assert len(info.value.message.encode()) < 1024
        with pytest.raises(PanicError) as panic:
            await gt.call("App.PanicRepeated", {"s": "x", "n": 5000})
        assert panic.value.message.endswith("x [truncated]")
        assert panic.value.stack is None  # dropped first, to make room
        assert await gt.call("App.Hi", "after") == {"hello": "after"}


@contextmanager
def run_script(body: str, *args: str, **kwargs: object) -> Iterator[subprocess.Popen[str]]:
    """Run a Python program as its own process (with start_new_session, in its own process group,
    as a terminal runs it); it is killed and reaped on the way out whatever happens."""
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(body), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        **kwargs,  # type: ignore[call-overload]
    ) as process:
        try:
            yield process
        finally:
            process.kill()


PARENT = """
    import json, sys, trio
    from trio_gotask import open_gotask

    async def main():
        async with open_gotask(sys.argv[1]) as gt:
            print(json.dumps({"pid": gt.pid, "address": gt.address}), flush=True)
            await gt.call("App.Slow", 60_000)

    trio.run(main)
"""


@pytest.mark.fault(fault="Python process SIGKILLed", sees="sidecar exits (stdin EOF), socket removed")
async def test_sidecar_exits_when_python_is_killed(sidecar: str) -> None:
    with run_script(PARENT, sidecar) as parent:
        assert parent.stdout is not None
        info = json.loads(await trio.to_thread.run_sync(parent.stdout.readline))
        start = time.monotonic()
        parent.kill()
        with trio.fail_after(HANG):
            await wait_for_exit(info["pid"])
        print(f"sidecar exited {(time.monotonic() - start) * 1000:.0f} ms after its parent was killed")
        assert not os.path.exists(info["address"])


CHATTY_HOST = """
    import json, logging, sys, trio
    from trio_gotask import open_gotask

    async def main():
        logging_started = trio.Event()

        class Started(logging.Handler):
            def emit(self, record):
                logging_started.set()

        log = logging.getLogger("trio_gotask.sidecar")
        log.propagate = False
        log.addHandler(Started())
        async with open_gotask(sys.argv[1]) as gt, trio.open_nursery() as nursery:
            nursery.start_soon(gt.call, "App.LogUntilCancelled", "still here")
            await logging_started.wait()
            print(json.dumps({"pid": gt.pid, "address": gt.address}), flush=True)
            await trio.sleep_forever()

    trio.run(main)
"""

# Runs CHATTY_HOST as its child, and reports how each process it reaps ended: the orphaned sidecar
# is re-parented to it (a Linux "child subreaper"), so its exit status can be seen.
REAPER = """
    import ctypes, json, os, subprocess, sys, textwrap
    PR_SET_CHILD_SUBREAPER = 36
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit(f"prctl(PR_SET_CHILD_SUBREAPER): errno {ctypes.get_errno()}")
    host = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(sys.argv[1]), *sys.argv[2:]],
        stdout=subprocess.PIPE,
        text=True,
    )
    print(json.dumps({"host": host.pid, **json.loads(host.stdout.readline())}), flush=True)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        print(json.dumps({"pid": pid, "exit": os.waitstatus_to_exitcode(status)}), flush=True)
"""


@pytest.mark.fault(
    fault="Python SIGKILLed while the sidecar writes to stderr",
    sees="no death by SIGPIPE: sidecar shuts down, exit 0, socket file and folder removed",
)
async def test_sidecar_outlives_its_stderr_when_python_is_killed(sidecar: str) -> None:
    # Without a SIGPIPE handler, Go's runtime kills a program whose write to fd 2 finds the pipe
    # closed: the sidecar would die at once, leaving its socket file behind.
    with run_script(REAPER, CHATTY_HOST, sidecar) as reaper:
        assert reaper.stdout is not None and reaper.stderr is not None
        out = reaper.stdout

        async def reaped() -> dict[str, int]:
            line = await trio.to_thread.run_sync(out.readline, abandon_on_cancel=True)
            assert line, "the reaper ended early"
            result: dict[str, int] = json.loads(line)
            return result

        info: dict[str, Any] = json.loads(await trio.to_thread.run_sync(out.readline))
        exits: dict[int, int] = {}
        try:
            os.kill(info["host"], signal.SIGKILL)
            with trio.fail_after(HANG):
                while info["pid"] not in exits:
                    one = await reaped()
                    exits[one["pid"]] = one["exit"]
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(info["pid"], signal.SIGKILL)
    assert exits[info["pid"]] == 0, f"the sidecar ended with {exits[info['pid']]} (-13 is SIGPIPE)"
    assert not os.path.exists(info["address"])
    assert not os.path.exists(os.path.dirname(info["address"]))


@pytest.mark.fault(
    fault="the block ends by an error, KeyboardInterrupt, cancellation, the sidecar's SIGKILL",
    sees="that exception; socket file and folder removed",
)
@pytest.mark.parametrize("ending", ["error", "KeyboardInterrupt", "cancelled", "sidecar killed"])
async def test_socket_folder_removed_however_the_block_ends(sidecar: str, ending: str) -> None:
    raised: dict[str, type[BaseException]] = {
        "error": ValueError,
        "KeyboardInterrupt": KeyboardInterrupt,
        "sidecar killed": SidecarError,
    }
    expect = pytest.raises(raised[ending]) if ending in raised else contextlib.nullcontext()
    address = ""
    with trio.CancelScope() as scope, expect:
        async with open_gotask(sidecar) as gt:
            address = gt.address
            assert os.path.exists(address)
            if ending == "error":
                raise ValueError("mine")
            if ending == "KeyboardInterrupt":
                raise KeyboardInterrupt
            if ending == "cancelled":
                scope.cancel()
                await trio.sleep_forever()
            assert gt.pid is not None
            os.kill(gt.pid, signal.SIGKILL)
            await gt.call("App.Slow", 60_000)
    assert scope.cancelled_caught == (ending == "cancelled")
    assert not os.path.exists(address)
    assert not os.path.exists(os.path.dirname(address))


HOLDER = """
    import json, os, subprocess, sys
    sidecar = subprocess.Popen(
        [sys.argv[1], "-address", sys.argv[2]],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        env={**os.environ, "GOTASK_MAGIC_COOKIE": "d3a1c2b7e6f54a09"},
    )
    sidecar.stdout.readline()
    # A grandchild inherits the write end of the sidecar's stdin, so stdin never reaches EOF.
    holder = subprocess.Popen(["sleep", "60"], pass_fds=[sidecar.stdin.fileno()])
    print(json.dumps({"pid": sidecar.pid, "holder": holder.pid}), flush=True)
    sidecar.wait()
"""


@pytest.mark.fault(fault="Python killed, stdin held open elsewhere", sees="sidecar exits (parent-pid watch)")
async def test_parent_pid_watch_is_the_fallback(sidecar: str, tmp_path: Path) -> None:
    with run_script(HOLDER, sidecar, str(tmp_path / "s.sock")) as parent:
        assert parent.stdout is not None
        info = json.loads(await trio.to_thread.run_sync(parent.stdout.readline))
        try:
            parent.kill()
            with trio.fail_after(HANG):
                await wait_for_exit(info["pid"])
            assert not (tmp_path / "s.sock").exists()
        finally:
            os.kill(info["holder"], signal.SIGKILL)


CTRL_C = """
    import json, sys, trio
    from trio_gotask import open_gotask

    async def main():
        async with open_gotask(sys.argv[1], transport=sys.argv[2]) as gt:
            print(json.dumps({"pid": gt.pid}), flush=True)
            await gt.call("App.Slow", 60_000)

    try:
        trio.run(main)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
"""


@pytest.mark.fault(
    fault="Ctrl-C (SIGINT to the process group)", sees="KeyboardInterrupt; sidecar stopped in order"
)
@pytest.mark.parametrize("transport", ["unix", "pipe"])
async def test_ctrl_c_shuts_down_cleanly(sidecar: str, transport: str) -> None:
    # The signal comes while the program is starting its call: Ctrl-C must not land between the
    # call's registration and its wait (it once did, and Trio's nursery stack was corrupted).
    with run_script(CTRL_C, sidecar, transport, start_new_session=True) as program:
        assert program.stdout is not None
        info = json.loads(await trio.to_thread.run_sync(program.stdout.readline))
        os.killpg(program.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        with trio.fail_after(HANG):
            out, err = await trio.to_thread.run_sync(program.communicate)
            await wait_for_exit(info["pid"])
    # No orphan (waited for above), and no traceback from the child, which ignored the SIGINT.
    assert "goroutine" not in err
    assert "panic" not in err
    assert program.returncode == 0, err
    assert out.strip() == "interrupted"
    assert "Traceback" not in err
