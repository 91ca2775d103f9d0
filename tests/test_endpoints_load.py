"""connect_gotask with several sidecars under real load: 90 callers in a loop over three sidecars
started with -standalone on 127.0.0.2, .3 and .4 (as on three hosts), while one is killed,
stopped by SIGTERM, or killed and brought back. Every call is accounted for."""

from __future__ import annotations

import logging
import os
import select
import signal
from collections import Counter
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio
import trio.testing
from standalone import Standalone, standalone
from timing import HANG

from trio_gotask import EndpointStatistics, GoTask, SidecarError, connect_gotask

pytestmark = pytest.mark.slow  # several sidecars under load: the newest Python only

CALLERS = 90
SLOW_MS = range(10, 31)
"""How long each caller's App.Slow takes (caller i: the i-th, cycling), so that calls end all the
time rather than in step."""
PINNED_MS = 3_600_000
"""One call pinned on each sidecar for the whole test, so a killed one surely has a call in flight:
only its cancellation ends it."""
SHARE = 200
"""App.Pid answers to wait for from each sidecar between steps: a few tenths of a second of load."""


class Load:
    """``CALLERS`` tasks calling ``App.Slow`` then ``App.Pid`` through ``gt`` in a loop, plus one
    long ``App.Slow`` pinned on each endpoint. Every call is counted: it succeeded, failed with
    `SidecarError`, or (only a pinned call, at `stop`) was cancelled; any other error fails the
    test."""

    def __init__(self, gt: GoTask, *, pin: bool = True) -> None:
        self.gt = gt
        self._pin = pin
        self.started = 0
        self.succeeded = 0
        self.cancelled = 0
        self.failures: list[SidecarError] = []
        self.served: Counter[int] = Counter()
        """Which sidecar (by pid) answered each ``App.Pid``."""
        self.active = 0
        """Calls inside ``gt.call`` now."""
        self._open = trio.Event()
        self._open.set()
        self._stopping = False
        self._pins: list[trio.CancelScope] = []
        self._watches: list[tuple[Callable[[], bool], trio.Event]] = []
        self.done = trio.Event()
        """Set when every caller has ended, after `stop`."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            if self._pin:
                endpoints = len(self.gt.statistics().endpoints)
                for _ in range(endpoints):
                    nursery.start_soon(self._pinned)
                await trio.testing.wait_all_tasks_blocked()
                # Least-loaded first: one each.
                assert [e.in_flight for e in self.gt.statistics().endpoints] == [1] * endpoints
            for i in range(CALLERS):
                nursery.start_soon(self._caller, SLOW_MS[i % len(SLOW_MS)])
            task_status.started()
        self.done.set()

    def hold(self) -> None:
        """New calls wait until `release`; calls in flight go on."""
        if self._open.is_set():
            self._open = trio.Event()

    def release(self) -> None:
        self._open.set()

    def stop(self) -> None:
        """Each caller ends after its current call; the pinned calls are cancelled."""
        self._stopping = True
        for scope in self._pins:
            scope.cancel()
        self.release()

    async def until(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds; it is checked each time a call ends."""
        if not condition():
            event = trio.Event()
            self._watches.append((condition, event))
            await event.wait()

    async def _pinned(self) -> None:
        with trio.CancelScope() as scope:
            self._pins.append(scope)
            await self._call("App.Slow", PINNED_MS)

    async def _caller(self, ms: int) -> None:
        while not self._stopping:
            await self._call("App.Slow", ms)
            if self._stopping:
                break
            pid = await self._call("App.Pid", None)
            if pid is not None:
                self.served[pid] += 1
                self._check()

    async def _call(self, method: str, arg: Any) -> Any:
        while not self._open.is_set():
            await self._open.wait()
        # No checkpoint from here into the connection's count of its calls in flight.
        self.started += 1
        self.active += 1
        try:
            result = await self.gt.call(method, arg)
        except SidecarError as exc:
            self.failures.append(exc)
            return None
        except trio.Cancelled:
            self.cancelled += 1
            raise
        finally:
            self.active -= 1
            self._check()
        self.succeeded += 1
        return result

    def _check(self) -> None:
        for watch in list(self._watches):
            condition, event = watch
            if condition():
                event.set()
                self._watches.remove(watch)

    def assert_all_accounted(self) -> None:
        assert self.active == 0
        assert self.started == self.succeeded + len(self.failures) + self.cancelled


def endpoint(gt: GoTask, address: str) -> EndpointStatistics:
    (found,) = (e for e in gt.statistics().endpoints if e.address == address)
    return found


def kill_mid_load(gt: GoTask, load: Load, victim: Standalone) -> int:
    """SIGKILL ``victim`` with new calls held, and return its calls in flight at that moment: the
    most that may fail. Without the hold, calls made between the kill and the moment the client
    reads the end of the connection would go to the dead sidecar too, and fail as they should."""
    load.hold()
    in_flight = {e.address: e.in_flight for e in gt.statistics().endpoints}
    # Every call made is counted on some endpoint (none waits for a connection to open), so the
    # count below is exact: no checkpoint separates it from the kill.
    assert sum(in_flight.values()) == load.active, (in_flight, load.active)
    victim.process.kill()
    return in_flight[victim.address]


def noticed(gt: GoTask, load: Load, address: str) -> Callable[[], bool]:
    """Whether the client dropped the killed sidecar's connection and each call it failed has
    reached its caller. A call pinned there fails, so a caller always checks this once it holds."""
    return lambda: endpoint(gt, address).connections == 0 and load.active == gt.statistics().in_flight


def served_each(load: Load, pids: set[int], since: Counter[int]) -> Callable[[], bool]:
    """Whether each of ``pids`` has answered ``SHARE`` more ``App.Pid`` calls than in ``since``.

    Waited for, not compared: how many calls each sidecar answers in a while depends on how fast
    each runs on a busy machine (least-loaded routing sends more to one that answers sooner). A
    rotation that starves one never gets there; the even split itself is checked exactly in
    test_endpoints.py, where every call is routed before any is answered."""
    return lambda: all(load.served[pid] - since[pid] >= SHARE for pid in pids)


@pytest.mark.fault(
    fault="one of several endpoints killed under load (90 callers, 3 sidecars)",
    sees="SidecarError for at most its calls in flight at the kill; every other call served by the others",
)
async def test_a_sidecar_killed_under_load_fails_at_most_its_calls_in_flight(sidecar: str) -> None:
    async with (
        standalone(sidecar, "-address", "127.0.0.2:0") as a,
        standalone(sidecar, "-address", "127.0.0.3:0") as b,
        standalone(sidecar, "-address", "127.0.0.4:0") as c,
        connect_gotask([a.address, b.address, c.address]) as gt,
    ):
        load = Load(gt)
        pids = {a.process.pid, b.process.pid, c.process.pid}
        with trio.fail_after(HANG):  # no hang: every caller ends
            async with trio.open_nursery() as nursery:
                await nursery.start(load.run)
                await load.until(served_each(load, pids, Counter()))
                assert set(load.served) == pids
                assert not load.failures

                in_flight = kill_mid_load(gt, load, a)
                await load.until(noticed(gt, load, a.address))
                failed = len(load.failures)
                # The call pinned on a failed; any other call failed was in flight on a too.
                assert 1 <= failed <= in_flight, (failed, in_flight)
                load.release()

                served_at_kill = Counter(load.served)
                await load.until(served_each(load, {b.process.pid, c.process.pid}, served_at_kill))
                after = load.served - served_at_kill
                load.stop()
        assert len(load.failures) == failed  # none after the kill
        assert all("lost the connection" in str(exc) for exc in load.failures), load.failures
        assert set(after) == {b.process.pid, c.process.pid}
        assert load.cancelled == 2  # the pinned calls on b and c
        load.assert_all_accounted()
        assert endpoint(gt, a.address).state == "down"


@pytest.mark.fault(
    fault="one of several endpoints stopped by SIGTERM under load",
    sees="nothing: its calls in flight finish, the calls it refuses go to the others",
)
async def test_a_sidecar_stopped_under_load_loses_no_call(sidecar: str) -> None:
    async with (
        standalone(sidecar, "-address", "127.0.0.2:0", "-grace", "1h") as a,
        standalone(sidecar, "-address", "127.0.0.3:0") as b,
        standalone(sidecar, "-address", "127.0.0.4:0") as c,
        connect_gotask([a.address, b.address, c.address]) as gt,
        connect_gotask(a.address) as direct,
    ):
        load = Load(gt, pin=False)  # a's call in flight at the SIGTERM is held by direct instead
        held: list[int] = []
        pids = {a.process.pid, b.process.pid, c.process.pid}
        with trio.fail_after(HANG):
            async with trio.open_nursery() as nursery:
                # Keep a draining, past its own calls, until the test lets it go: WaitCancelled
                # returns once the Slow beside it is cancelled. Both were running before the
                # SIGTERM: a's answer to the Pid sent after them says so.
                release_a = trio.CancelScope()

                async def hold_a() -> None:
                    held.append(await direct.call("App.WaitCancelled", 1))

                async def slow_on_a() -> None:
                    with release_a:
                        await direct.call("App.Slow", PINNED_MS)

                nursery.start_soon(hold_a)
                nursery.start_soon(slow_on_a)
                await trio.testing.wait_all_tasks_blocked()
                assert await direct.call("App.Pid") == a.process.pid

                await nursery.start(load.run)
                await load.until(served_each(load, pids, Counter()))
                # Mid-load: these must finish. (Each caller is always in a call, and each call
                # goes to the least loaded: no sidecar is ever left with none.)
                assert endpoint(gt, a.address).in_flight
                a.process.send_signal(signal.SIGTERM)
                # It refuses new calls with shutting_down; the client sends them elsewhere.
                await load.until(lambda: endpoint(gt, a.address).state == "draining")

                # Let a finish, with the load still running: a request that crosses its close
                # is answered shutting_down, or after its $drained sent on, never lost.
                release_a.cancel()
                assert await a.process.wait() == 0

                served_at_exit = Counter(load.served)
                await load.until(served_each(load, {b.process.pid, c.process.pid}, served_at_exit))
                after = load.served - served_at_exit
                load.stop()
        assert held == [1]  # a's call in flight at the SIGTERM finished in its grace period
        assert not load.failures
        assert set(after) == {b.process.pid, c.process.pid}
        assert load.cancelled == 0
        load.assert_all_accounted()


@pytest.mark.fault(
    fault="one of several endpoints killed under load, then restarted on its address",
    sees="SidecarError for at most its calls in flight at the kill; back, it serves its share again",
)
async def test_a_sidecar_brought_back_under_load_rejoins_the_rotation(sidecar: str) -> None:
    async with (
        standalone(sidecar, "-address", "127.0.0.3:0") as b,
        standalone(sidecar, "-address", "127.0.0.4:0") as c,
        AsyncExitStack() as first_a,
    ):
        a = await first_a.enter_async_context(standalone(sidecar, "-address", "127.0.0.2:0"))
        async with connect_gotask([a.address, b.address, c.address]) as gt:
            load = Load(gt)
            with trio.fail_after(HANG):
                async with trio.open_nursery() as nursery:
                    await nursery.start(load.run)
                    await load.until(
                        served_each(load, {a.process.pid, b.process.pid, c.process.pid}, Counter())
                    )

                    in_flight = kill_mid_load(gt, load, a)
                    await load.until(noticed(gt, load, a.address))
                    failed = len(load.failures)
                    assert 1 <= failed <= in_flight, (failed, in_flight)
                    load.release()
                    await load.until(lambda: endpoint(gt, a.address).state == "down")
                    await first_a.aclose()

                    async with standalone(sidecar, "-address", a.address) as again:
                        # Back once its rest ends and a call tries it (0.5 s, or more if it
                        # was tried again before it was listening).
                        await load.until(lambda: again.process.pid in load.served)
                        assert endpoint(gt, a.address).state == "up"
                        pids = {again.process.pid, b.process.pid, c.process.pid}
                        served_back = Counter(load.served)
                        await load.until(served_each(load, pids, served_back))
                        after = load.served - served_back
                        load.stop()
                        await load.done.wait()  # before a stops again
        assert len(load.failures) == failed  # none after the kill, none as it came back
        assert all("lost the connection" in str(exc) for exc in load.failures), load.failures
        assert set(after) == pids
        assert load.cancelled == 2
        load.assert_all_accounted()


@pytest.mark.fault(
    fault="a call sent to a sidecar that drained and closed before the client read its $goaway",
    sees="nothing: $drained says it never ran, and it goes to another sidecar",
)
async def test_a_request_crossing_a_draining_sidecars_close_goes_to_another(sidecar: str) -> None:
    """A call sent to a sidecar that is closing after a SIGTERM, before the client read the end of
    its connection, never ran: the sidecar said ``$drained`` (every call it ran is answered)
    before it closed, so the client sends it on, as it does a ``shutting_down`` answer, instead
    of failing it as it would after a crash."""
    async with (
        standalone(sidecar, "-address", "127.0.0.2:0") as a,
        standalone(sidecar, "-address", "127.0.0.3:0") as b,
        connect_gotask([a.address, b.address]) as gt,
        trio.open_nursery() as nursery,
    ):
        # One call held on b, none on a, so that the next call goes to a (the least loaded).
        pins: list[trio.CancelScope] = []

        async def pin() -> None:
            with trio.CancelScope() as scope:
                pins.append(scope)
                await gt.call("App.Slow", PINNED_MS)

        while endpoint(gt, b.address).in_flight == 0:
            nursery.start_soon(pin)
            await trio.testing.wait_all_tasks_blocked()
        if endpoint(gt, a.address).in_flight:
            pins[0].cancel()  # the first went to a
            await trio.testing.wait_all_tasks_blocked()
        assert [endpoint(gt, x.address).in_flight for x in (a, b)] == [0, 1]

        a.process.send_signal(signal.SIGTERM)  # nothing in flight there: it drains at once
        # Wait for a to exit without a checkpoint, so that the client has read nothing of what a
        # sent ($goaway, $drained, the end): the call below crosses a's close, as one sent a
        # moment earlier would. (a waits a second for clients to close, then closes anyway.)
        pidfd = os.pidfd_open(a.process.pid)
        try:
            assert select.select([pidfd], [], [], HANG)[0], "a did not exit on SIGTERM"
        finally:
            os.close(pidfd)
        assert await gt.call("App.Pid") == b.process.pid  # sent to a, which never ran it
        assert endpoint(gt, a.address).state in {"draining", "down"}
        nursery.cancel_scope.cancel()


async def stack_connect(nursery: trio.Nursery, address: str) -> GoTask:
    """A `GoTask` connected to ``address`` for as long as ``nursery`` runs."""

    async def run(task_status: trio.TaskStatus[GoTask]) -> None:
        async with connect_gotask(address) as gt:
            task_status.started(gt)
            await trio.sleep_forever()

    gt: GoTask = await nursery.start(run)
    return gt


async def test_a_call_run_before_a_sidecar_began_draining_does_not_bring_it_back(
    sidecar: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A call a sidecar took before its SIGTERM and answers after the client saw it refuse
    another (``shutting_down``) says nothing about whether it takes calls: the sidecar stays out
    of rotation. (Found under load: the draining sidecar came back "up" and logged "back in
    rotation" when its last calls finished, and was tried again when its rest ended.)"""
    caplog.set_level(logging.INFO, logger="trio_gotask")
    async with (
        standalone(sidecar, "-address", "127.0.0.2:0", "-grace", "1h") as first,
        standalone(sidecar, "-address", "127.0.0.3:0", "-grace", "1h") as second,
        connect_gotask([first.address, second.address]) as gt,
    ):
        with trio.fail_after(HANG):
            async with trio.open_nursery() as nursery:
                results: list[int] = []

                async def wait_cancelled() -> None:
                    results.append(await gt.call("App.WaitCancelled", 1))

                releases: list[trio.CancelScope] = []

                async def slow(on: GoTask) -> None:
                    with trio.CancelScope() as scope:
                        releases.append(scope)
                        await on.call("App.Slow", PINNED_MS)

                nursery.start_soon(wait_cancelled)
                await trio.testing.wait_all_tasks_blocked()
                # a is the one it went to (ties go round from a random start).
                a, b = (first, second) if endpoint(gt, first.address).in_flight else (second, first)
                nursery.start_soon(slow, gt)  # to b, the least loaded
                direct = await stack_connect(nursery, a.address)
                nursery.start_soon(slow, direct)  # to a, on a connection of its own
                await trio.testing.wait_all_tasks_blocked()
                assert [endpoint(gt, x.address).in_flight for x in (a, b)] == [1, 1]
                # Taken by a before the SIGTERM: a answers a call sent after them.
                assert await direct.call("App.Pid") == a.process.pid

                a.process.send_signal(signal.SIGTERM)
                while endpoint(gt, a.address).state == "up":  # until the client hears a drain
                    assert await gt.call("App.Pid") in {a.process.pid, b.process.pid}
                assert endpoint(gt, a.address).state == "draining"
                for scope in releases:
                    scope.cancel()  # WaitCancelled returns, on a, after it began draining
                await a.process.wait()
                nursery.cancel_scope.cancel()
        assert results == [1]
        assert endpoint(gt, a.address).state == "draining"
        assert not [r for r in caplog.records if "back in rotation" in r.getMessage()]
