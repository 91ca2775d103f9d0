"""Go lifecycle hooks (gotask.AddHook) seen from Python, with the example sidecar's warm-cache hook
(go/example/hooks.go): its Start runs before the first call, its Run while the sidecar serves, its
Stop at a clean close; a Start or a Run that fails reaches the caller as a `SidecarError` that
names the hook and says why."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from timing import HANG

from trio_gotask import GoTask, GoTaskError, SidecarError, open_gotask
from trio_gotask._address import Transport

FAIL = "GOTASK_EXAMPLE_HOOK_FAIL"
LOG = "GOTASK_EXAMPLE_HOOK_LOG"


async def hook_state(gt: GoTask, *, running: int = 0) -> dict[str, int]:
    """What the hook did, once its Run runs if ``running`` is 1 (Go waits: no polling here)."""
    with trio.fail_after(HANG):
        state: dict[str, int] = await gt.call("App.HookState", {"running": running})
    return state


@pytest.mark.parametrize("transport", ["unix", "tcp", "pipe"])
async def test_the_start_runs_before_the_first_call_and_the_run_while_serving(
    sidecar: str, transport: Transport
) -> None:
    async with open_gotask(sidecar, transport=transport) as gt:
        first = await hook_state(gt)
        assert (first["started"], first["stopped"], first["generation"]) == (1, 0, 1)
        assert (await hook_state(gt, running=1))["running"] == 1
        with trio.fail_after(HANG):
            assert await gt.call("App.RefreshCache") == 2
        assert (await hook_state(gt))["refreshes"] == 1


async def test_the_stop_runs_at_a_clean_close_after_the_run_ended(sidecar: str, tmp_path: Path) -> None:
    log = tmp_path / "hook.log"
    async with open_gotask(sidecar, env={LOG: str(log)}) as gt:
        await hook_state(gt, running=1)
        assert log.read_text().splitlines() == ["start", "run"]
    # The process is reaped: what it wrote is all there.
    assert log.read_text().splitlines() == ["start", "run", "run ended", "stop"]


@pytest.mark.fault(
    fault="a lifecycle hook (gotask.Hook) fails to start",
    sees="open_gotask raises SidecarError quoting `gotask: hook NAME: start: ...`; the hooks started before it are stopped",
)
@pytest.mark.parametrize("transport", ["unix", "tcp", "pipe"])
async def test_a_failed_start_fails_open_gotask_naming_the_hook_and_the_reason(
    sidecar: str, transport: Transport, tmp_path: Path
) -> None:
    log = tmp_path / "hook.log"
    with pytest.raises(SidecarError) as info:
        async with open_gotask(sidecar, transport=transport, env={FAIL: "start", LOG: str(log)}):
            pytest.fail("open_gotask yielded though the hook's Start failed")  # pragma: no cover
    error = info.value
    assert error.returncode == 1
    assert "before its handshake" in str(error)
    line = "gotask: hook warm-cache: start: cannot load the cache: GOTASK_EXAMPLE_HOOK_FAIL=start"
    assert line in error.stderr_tail.splitlines()
    assert line in str(error)
    # A hook whose Start failed is not stopped, nor run.
    assert log.read_text().splitlines() == ["start"]


@pytest.mark.fault(
    fault="a lifecycle hook's Run fails while the sidecar serves",
    sees="the sidecar shuts down as on SIGTERM; calls in flight and later fail with SidecarError quoting `gotask: hook NAME: run: ...`",
)
async def test_a_failed_run_fails_the_calls_in_flight_naming_the_hook_and_the_reason(sidecar: str) -> None:
    # shutdown_grace=0 is the sidecar's -grace 0: the call held in flight is cut off at once
    # instead of being waited for, and fails with the sidecar's death.
    failures: list[BaseException] = []

    async def hold(gt: GoTask) -> None:
        try:
            await gt.call("App.Hold", "hook-run")  # waits until released, which nothing does
        except GoTaskError as exc:
            failures.append(exc)

    async with open_gotask(sidecar, env={FAIL: "run"}, shutdown_grace=0) as gt:
        with trio.fail_after(HANG):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(hold, gt)
                await gt.call("App.Holding", {"name": "hook-run", "n": 1})
                # The refresh fails the hook's Run: its reply (the refresh's error) races the
                # sidecar's shutdown, so either error will do.
                with pytest.raises(GoTaskError, match="GOTASK_EXAMPLE_HOOK_FAIL=run"):
                    await gt.call("App.RefreshCache")
        [error] = failures
        assert isinstance(error, SidecarError)
        assert error.returncode == 1
        line = "gotask: hook warm-cache: run: refreshing the cache: GOTASK_EXAMPLE_HOOK_FAIL=run"
        assert line in error.stderr_tail.splitlines()
        assert line in str(error)
        with pytest.raises(SidecarError):
            await gt.call("App.Hi", "after")
