"""The sidecar's life: start-up failures, death mid-call, clean exit, connect_gotask."""

from __future__ import annotations

import json
import os
import re
import sys
from functools import partial
from pathlib import Path

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup  # type: ignore[import-not-found,unused-ignore]

import pytest
import trio
from standalone import standalone
from timing import HANG

from trio_gotask import (
    GoTask,
    GoTaskError,
    RemoteError,
    SidecarError,
    connect_gotask,
    open_gotask,
)
from trio_gotask._address import Transport


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("transport", ["unix", "tcp", "pipe"])
async def test_exit_reaps_the_child_and_removes_the_socket_folder(sidecar: str, transport: Transport) -> None:
    async with open_gotask(sidecar, transport=transport) as gt:
        assert await gt.call("App.Pid") == gt.pid
        pid = gt.pid
        address = gt.address
    assert pid is not None
    assert gone(pid)  # reaped, not a zombie
    if transport == "unix":
        assert not os.path.exists(address)
        assert not os.path.exists(os.path.dirname(address))


async def test_unix_socket_folder_is_private(sidecar: str) -> None:
    async with open_gotask(sidecar) as gt:
        assert os.stat(os.path.dirname(gt.address)).st_mode & 0o777 == 0o700


async def test_error_in_body_reaches_caller_unwrapped(sidecar: str) -> None:
    with pytest.raises(ValueError, match="mine"):
        async with open_gotask(sidecar) as gt:
            await gt.call("App.Hi", "x")
            raise ValueError("mine")


@pytest.mark.parametrize("size", [1, 2])
async def test_an_exception_group_from_the_body_comes_out_unchanged(sidecar: str, size: int) -> None:
    group = ExceptionGroup("mine", [ValueError(i) for i in range(size)])
    with pytest.raises(ExceptionGroup) as info:
        async with open_gotask(sidecar):
            raise group
    assert info.value is group
    assert group.__context__ is None


async def test_calls_failing_in_the_users_nursery_are_nested_once(sidecar: str) -> None:
    async def fail(gt: GoTask, message: str) -> None:
        with trio.CancelScope(shield=True):  # the first failure must not cancel the second
            await gt.call("App.Fail", message)

    with pytest.raises(ExceptionGroup) as info:
        async with open_gotask(sidecar) as gt, trio.open_nursery() as nursery:
            nursery.start_soon(fail, gt, "one")
            nursery.start_soon(fail, gt, "two")
    assert sorted(str(e) for e in info.value.exceptions) == ["App.Fail: one", "App.Fail: two"]
    assert all(isinstance(e, RemoteError) for e in info.value.exceptions)


@pytest.mark.fault(
    fault="a GoTask called from another thread's trio.run",
    sees="RuntimeError naming trio.from_thread.run; the owner's run unharmed",
)
async def test_a_gotask_refuses_calls_from_another_threads_trio_run(sidecar: str) -> None:
    async with open_gotask(sidecar) as gt:

        def elsewhere() -> BaseException | None:
            try:
                trio.run(gt.call, "App.Hi", "from another thread")
            except BaseException as exc:
                return exc
            return None

        error = await trio.to_thread.run_sync(elsewhere)
        assert isinstance(error, RuntimeError)
        assert "belongs to the trio.run of another thread" in str(error)
        # The owner's run is unharmed, and trio.from_thread reaches it the supported way.
        assert await gt.call("App.Hi", "here") == {"hello": "here"}
        token = trio.lowlevel.current_trio_token()
        reply = await trio.to_thread.run_sync(
            lambda: trio.from_thread.run(gt.call, "App.Hi", "via from_thread", trio_token=token)
        )
        assert reply == {"hello": "via from_thread"}


async def test_exit_status_and_stderr_reach_the_error(sidecar: str) -> None:
    async with open_gotask(sidecar) as gt:
        with pytest.raises(SidecarError) as info:
            await gt.call("App.Exit", 3)
    assert info.value.returncode == 3
    assert "exiting with 3" in info.value.stderr_tail
    assert "status 3" in str(info.value)


def sh(script: str) -> list[str]:
    return ["/bin/sh", "-c", script, "sidecar"]


STAY = "exec sleep 3600"
"""The end of a stand-in's script: it stays, as itself (so a signal ends it), until it is stopped."""


@pytest.mark.fault(fault="sidecar program missing", sees="SidecarError: cannot start")
async def test_missing_program() -> None:
    with pytest.raises(SidecarError, match="cannot start the sidecar"):
        async with open_gotask("/nonexistent/sidecar"):
            pass


@pytest.mark.fault(
    fault="sidecar exits before its handshake", sees="SidecarError with exit status and stderr tail"
)
async def test_exit_before_handshake_says_so_with_stderr() -> None:
    with pytest.raises(SidecarError, match="exited with status 3 before its handshake") as info:
        async with open_gotask(sh("echo 'cannot open database' >&2; exit 3")):
            pass
    assert info.value.returncode == 3
    assert "cannot open database" in info.value.stderr_tail


@pytest.mark.fault(
    fault="a program that prints to stdout but never hands shake (not a gotask sidecar)",
    sees="SidecarError when it exits, quoting what it printed",
)
async def test_output_that_is_no_handshake() -> None:
    says = re.escape("before it, it printed 1 line(s) to stdout, which is not a gotask sidecar's handshake")
    with pytest.raises(SidecarError, match=rf"exited with status 3 before its handshake; {says}") as info:
        async with open_gotask(sh("echo 'Hello from main()'; echo oops >&2; exit 3"), startup_timeout=HANG):
            pass
    assert "(the first: 'Hello from main()')" in str(info.value)
    assert info.value.stderr_tail == "oops"
    with pytest.raises(SidecarError, match=r"printed more than 65536 bytes to stdout before its handshake"):
        async with open_gotask(sh(f"yes banner | head -c 100000; {STAY}"), startup_timeout=HANG):
            pass


@pytest.mark.fault(
    fault="a start that fails before the client has read the sidecar's stderr",
    sees="SidecarError with every line the sidecar wrote, read to the end once it is stopped",
)
async def test_a_failed_start_carries_all_of_stderr() -> None:
    # The lines are written before the bad handshake, but nothing says the client has read them
    # when it refuses the handshake: the error is completed once the process is stopped.
    lines = "; ".join(f"echo 'line {i}' >&2" for i in range(1, 6))
    for _ in range(5):
        with pytest.raises(SidecarError, match="speaks gotask protocol version 1") as info:
            async with open_gotask(
                sh(f"{lines}; echo 'gotask|1|unix|/tmp/x.sock'; {STAY}"), startup_timeout=HANG
            ):
                pass
        assert info.value.stderr_tail.splitlines() == [f"line {i}" for i in range(1, 6)]
        assert str(info.value).endswith(
            "--- last lines of the sidecar's stderr ---\n" + info.value.stderr_tail
        )


@pytest.mark.fault(
    fault="no handshake within startup_timeout", sees="SidecarError; the process is killed and reaped"
)
async def test_handshake_timeout() -> None:
    with pytest.raises(SidecarError, match=r"no handshake within 0\.3 s"):
        async with open_gotask(sh(STAY), startup_timeout=0.3):  # it never shakes hands
            pass


@pytest.mark.fault(fault="sidecar of another protocol version", sees="SidecarError naming both versions")
async def test_protocol_version_mismatch() -> None:
    with pytest.raises(SidecarError, match="speaks gotask protocol version 1; this client speaks version 2"):
        async with open_gotask(sh(f"echo 'gotask|1|unix|/tmp/x.sock'; {STAY}"), startup_timeout=HANG):
            pass


# A stand-in sidecar that records its environment, hands shake over the pipe, and waits for EOF.
RECORD_ENV = """
import json, os, struct, sys
import msgpack
json.dump(dict(os.environ), open(sys.argv[1], "w"))
hello = msgpack.packb([2, "$hello", {"version": 2, "max_frame_size": 1 << 20, "max_inflight": 8}])
sys.stdout.buffer.write(b"gotask|2|pipe|-\\n" + struct.pack(">I", len(hello)) + hello)
sys.stdout.flush()
sys.stdin.buffer.read()
"""


async def test_launch_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "env.json"
    monkeypatch.setenv("GOTASK_SECRET", "exported in the user's shell")
    command = [sys.executable, "-c", RECORD_ENV, str(out)]
    async with open_gotask(
        command, transport="pipe", env={"EXTRA": "yes", "GOTASK_SECRET": "in env="}, startup_timeout=HANG
    ):
        pass
    env = json.loads(out.read_text())
    assert env["GOTASK_MAGIC_COOKIE"] == "d3a1c2b7e6f54a09"
    assert env["EXTRA"] == "yes"
    assert "GOTASK_SECRET" not in env  # the pipe needs none, and the client owns the secret


@pytest.mark.fault(
    fault="GOTASK_SECRET exported in the user's shell, or passed in env=",
    sees="nothing: the client sets its own secret (unix, tcp) or clears it (pipe)",
)
@pytest.mark.parametrize("transport", ["unix", "tcp", "pipe"])
@pytest.mark.parametrize("where", ["shell", "env="])
async def test_a_secret_in_the_environment_does_not_break_the_sidecar(
    sidecar: str, transport: Transport, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = None
    if where == "shell":
        monkeypatch.setenv("GOTASK_SECRET", "exported in the user's shell")
    else:
        env = {"GOTASK_SECRET": "passed in env="}
    async with open_gotask(sidecar, transport=transport, env=env) as gt:
        assert await gt.call("App.Hi", where) == {"hello": where}


async def test_sidecar_from_environment(sidecar: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOTASK_SIDECAR", sidecar)
    async with open_gotask() as gt:
        assert await gt.call("App.Hi", "env") == {"hello": "env"}
    monkeypatch.delenv("GOTASK_SIDECAR")
    with pytest.raises(SidecarError, match="GOTASK_SIDECAR"):
        async with open_gotask():
            pass


async def test_bad_transport_name(sidecar: str) -> None:
    with pytest.raises(ValueError, match="transport must be one of"):
        async with open_gotask(sidecar, transport="carrier-pigeon"):  # type: ignore[arg-type]
            pass


@pytest.mark.parametrize("address", ["127.0.0.1:0", "SOCKET"])
async def test_connect_to_a_sidecar_started_elsewhere(sidecar: str, address: str, tmp_path: Path) -> None:
    if address == "SOCKET":
        address = str(tmp_path / "app.sock")
    async with standalone(sidecar, "-address", address) as app:
        async with connect_gotask(app.address) as gt:
            assert await gt.call("App.Hi", "remote") == {"hello": "remote"}
            assert gt.pid is None
        # Not ours: still running after we left.
        assert app.process.returncode is None
        async with connect_gotask(app.address) as gt:
            assert await gt.call("App.Pid") == app.process.pid


async def test_connect_to_nothing(tmp_path: Path) -> None:
    with pytest.raises(SidecarError, match="cannot connect"):
        async with connect_gotask(str(tmp_path / "nobody.sock")):
            pass


@pytest.mark.fault(
    fault="connect_gotask to a server that is not a gotask sidecar (HTTP, or silent)",
    sees="SidecarError at connect naming the likely causes, within connect_timeout",
)
@pytest.mark.parametrize("answer", [b"HTTP/1.1 400 Bad Request\r\n\r\n", b""])
async def test_connect_to_something_else(answer: bytes) -> None:
    async def other(stream: trio.SocketStream) -> None:
        if answer:
            await stream.send_all(answer)
            await stream.aclose()
        else:
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, other, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        if answer:  # its answer ends the wait: the timeout only guards it
            says, timeout = "sent something other than a \\$hello", HANG
        else:  # nothing ever ends it but the timeout
            says, timeout = "did not answer within 0.5 s", 0.5
        with pytest.raises(SidecarError, match=f"{says}.*not a trio-gotask sidecar"):
            async with connect_gotask(f"127.0.0.1:{port}", connect_timeout=timeout):
                pass
        nursery.cancel_scope.cancel()


async def test_closed_gotask_refuses_calls(sidecar: str) -> None:
    async with open_gotask(sidecar) as gt:
        pass
    with pytest.raises(GoTaskError, match="closed"):
        await gt.call("App.Hi", "late")
