"""`Supervisor` with fake processes and fake sidecars over memory streams, on the autojump clock:
starting, deaths, the restart policy's delays and caps, closing."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import outcome
import pytest
import trio
import trio.testing
from fakesidecar import Answer, FakePeer, echo, fake_connect
from wirehelpers import pack

from trio_gotask import GoTask, GoTaskError, ProtocolError, SidecarError
from trio_gotask._errors import ErrorFactory, error_factory
from trio_gotask._opening import Connect, Opened
from trio_gotask._settings import Limits, PoolSettings
from trio_gotask._sidecar import Handshake
from trio_gotask._supervisor import _DEATH_NOTICE, RestartPolicy, Supervisor
from trio_gotask._wire import frame_header

pytestmark = pytest.mark.fast  # no process: nox -s fast

# Every test runs on the autojump clock, so that a test waiting for what never comes fails at once,
# its clock jumping to this deadline.
STUCK = 10_000


class FakeProcess:
    """One run of a fake sidecar, number ``number`` in its supervisor's life.

    Its start raises ``start_error`` if given; otherwise it shakes hands after ``handshake_delay``
    seconds and runs until the test calls `exit`, or for ``lifetime`` seconds. It exits with status
    ``number + 1``."""

    def __init__(
        self, number: int, *, start_error: str | None, handshake_delay: float, lifetime: float | None
    ) -> None:
        self.number = number
        self.start_error = start_error
        self.handshake_delay = handshake_delay
        self.lifetime = lifetime
        self.address = f"fake-{number}.sock"
        self.peers: list[FakePeer] = []
        """The sidecar's end of each connection to it."""
        self.exited = trio.Event()
        self.started_at = self.exited_at = -1.0

    @property
    def pid(self) -> int:
        return 1000 + self.number

    async def run(self, *, task_status: trio.TaskStatus[Handshake]) -> None:
        self.started_at = trio.current_time()
        if self.start_error is not None:
            raise SidecarError(self.start_error)
        await trio.sleep(self.handshake_delay)
        task_status.started(Handshake(self.address, b""))
        if self.lifetime is not None:
            await trio.sleep(self.lifetime)
            self.exit()
        await self.exited.wait()

    def exit(self) -> None:
        self.exited_at = trio.current_time()
        self.exited.set()

    def has_exited(self) -> bool:
        return self.exited.is_set()  # a fake is seen exiting the moment it exits

    def death_error(self) -> ErrorFactory:
        status = self.number + 1
        return error_factory(
            SidecarError, f"sidecar #{self.number} exited with status {status}", returncode=status
        )


class Harness:
    """A `Supervisor` of `FakeProcess`es (all kept in ``processes``), connecting to them over
    memory streams; ``ended`` is set once its `run` returned.

    ``start_errors``, ``handshake_delays`` and ``lifetimes`` set a process's ``start_error``,
    ``handshake_delay`` and ``lifetime`` by its number. ``connect_error`` makes every connection
    fail to open. ``answer`` answers the requests (by default the test does, with `FakePeer.answer_waiting`)."""

    def __init__(
        self,
        nursery: trio.Nursery,
        restart: RestartPolicy | None = None,
        *,
        start_errors: Mapping[int, str] = {},
        handshake_delays: Mapping[int, float] = {},
        lifetimes: Mapping[int, float] = {},
        connect_error: str | None = None,
        answer: Answer | None = None,
    ) -> None:
        self.nursery = nursery
        self.start_errors = start_errors
        self.handshake_delays = handshake_delays
        self.lifetimes = lifetimes
        self.connect_error = connect_error
        self.answer = answer
        self.processes: list[FakeProcess] = []
        self.supervisor = Supervisor(
            nursery,
            self._new_process,
            self._new_connect,
            PoolSettings(1, Limits(1 << 20, 64), keepalive_timeout=None),
            restart=restart,
        )
        self.ended = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None]) -> None:
        try:
            await self.supervisor.run(task_status=task_status)
        finally:
            self.ended.set()

    def _new_process(self) -> FakeProcess:
        number = len(self.processes)
        process = FakeProcess(
            number,
            start_error=self.start_errors.get(number),
            handshake_delay=self.handshake_delays.get(number, 0),
            lifetime=self.lifetimes.get(number),
        )
        self.processes.append(process)
        return process

    def _new_connect(self, process: FakeProcess, handshake: Handshake) -> Connect:
        assert handshake == Handshake(process.address, b"")
        connect_fake = fake_connect(self.nursery, process.peers, answer=self.answer)

        async def connect() -> Opened:
            if self.connect_error is not None:
                raise SidecarError(self.connect_error)
            return await connect_fake()

        return connect


@asynccontextmanager
async def supervising(restart: RestartPolicy | None = None, **options: Any) -> AsyncIterator[Harness]:
    """A started `Harness` (``options`` go to it); at the end, the supervisor is closed and every
    task cancelled."""
    with trio.fail_after(STUCK):
        async with trio.open_nursery() as nursery:
            harness = Harness(nursery, restart, **options)
            await nursery.start(harness.run)
            try:
                yield harness
            finally:
                harness.supervisor.close()
                nursery.cancel_scope.cancel()


class Call:
    """A call running in the background, made as a `GoTask` makes it; ``result`` holds its outcome
    and ``ended_at`` its time once ``done``."""

    def __init__(self, nursery: trio.Nursery, supervisor: Supervisor[FakeProcess], arg: Any = None) -> None:
        self.result: outcome.Outcome[Any] | None = None
        self.ended_at = -1.0
        self.done = trio.Event()
        nursery.start_soon(self._run, supervisor, arg)

    async def _run(self, supervisor: Supervisor[FakeProcess], arg: Any) -> None:
        self.result = await outcome.acapture(call, supervisor, arg)
        self.ended_at = trio.current_time()
        self.done.set()

    async def outcome(self) -> Any:
        """The call's result, or its exception raised."""
        await self.done.wait()
        assert self.result is not None
        return self.result.unwrap()


async def start_call(harness: Harness, arg: Any = None) -> Call:
    """A `Call`, once every task is blocked: its request is sent, or it waits."""
    started = Call(harness.nursery, harness.supervisor, arg)
    await trio.testing.wait_all_tasks_blocked()
    return started


async def call(supervisor: Supervisor[FakeProcess], arg: Any = None) -> Any:
    return await GoTask(supervisor).call("Echo", arg)


async def exit_and_settle(process: FakeProcess) -> None:
    """The process exits, and the supervisor has seen it (it is restarting, or has ended)."""
    process.exit()
    await trio.testing.wait_all_tasks_blocked()


def restart_delays(processes: list[FakeProcess]) -> list[float]:
    """The time between each process's end (its exit, or its failed start) and the next start."""
    ends = [p.exited_at if p.start_error is None else p.started_at for p in processes]
    return [after.started_at - end for end, after in zip(ends[:-1], processes[1:], strict=True)]


# -- the restart policy ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"), [("backoff", "0.1"), ("max_backoff", None), ("reset_after", True)]
)
def test_a_restart_policy_takes_seconds_as_numbers(field: str, value: object) -> None:
    with pytest.raises(
        TypeError, match=rf"^{field} must be a number of seconds, not {re.escape(repr(value))}$"
    ):
        RestartPolicy(**{field: value})  # type: ignore[arg-type]


# -- starting --------------------------------------------------------------------------------------


async def test_start_returns_once_the_first_sidecar_serves_a_warm_pool(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with supervising(answer=None) as harness:
        supervisor = harness.supervisor
        (process,) = harness.processes
        assert supervisor.current is not None
        pool = supervisor.current.pool
        assert supervisor.current.sidecar is process
        assert supervisor.current_pool is pool
        assert pool.connections == len(process.peers) == 1
        assert (supervisor.address, supervisor.pid, supervisor.restarts) == ("fake-0.sock", 1000, 0)
        assert await supervisor.wait_pool() is pool


@pytest.mark.parametrize("restart", [None, RestartPolicy()])
async def test_a_first_start_that_fails_fails_start_without_a_restart(
    autojump_clock: trio.testing.MockClock, restart: RestartPolicy | None
) -> None:
    async with trio.open_nursery() as nursery:
        harness = Harness(nursery, restart, start_errors={0: "it exited before its handshake"})
        with pytest.raises(SidecarError, match=r"^it exited before its handshake$"):
            await nursery.start(harness.run)
        await trio.sleep(100)
        assert len(harness.processes) == 1


async def test_a_first_connection_that_fails_to_open_fails_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        harness = Harness(nursery, RestartPolicy(), connect_error="the sidecar refused the connection")
        with pytest.raises(SidecarError, match=r"^the sidecar refused the connection$"):
            await nursery.start(harness.run)
        assert len(harness.processes) == 1
        nursery.cancel_scope.cancel()  # stops the process, as open_gotask does


# -- deaths without a restart policy ---------------------------------------------------------------


async def test_without_a_policy_a_death_fails_the_calls_in_flight_with_its_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with supervising(answer=None) as harness:
        in_flight = await start_call(harness)
        await exit_and_settle(harness.processes[0])
        with pytest.raises(SidecarError, match=r"^sidecar #0 exited with status 1$") as info:
            await in_flight.outcome()
        assert info.value.returncode == 1


async def test_without_a_policy_every_call_after_a_death_fails_and_none_restarts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with supervising(answer=None) as harness:
        await exit_and_settle(harness.processes[0])
        await harness.ended.wait()
        for _ in range(2):
            with pytest.raises(SidecarError, match="status 1") as info:
                await call(harness.supervisor)
            assert info.value.returncode == 1
        await trio.sleep(100)
        assert len(harness.processes) == 1
        assert (harness.supervisor.restarts, harness.supervisor.pid) == (0, None)


# -- restarts --------------------------------------------------------------------------------------


async def test_restart_delays_double_from_backoff_up_to_max_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    policy = RestartPolicy(max_restarts=5, backoff=0.5, max_backoff=2)
    async with supervising(policy, lifetimes=dict.fromkeys(range(6), 0)) as harness:
        await harness.ended.wait()
        assert restart_delays(harness.processes) == [0.5, 1, 2, 2, 2]
        assert harness.supervisor.restarts == 5


@pytest.mark.parametrize("max_restarts", [0, 3])
async def test_after_max_restarts_consecutive_deaths_calls_fail_with_the_last_death(
    autojump_clock: trio.testing.MockClock, max_restarts: int
) -> None:
    policy = RestartPolicy(max_restarts=max_restarts, backoff=0.5)
    async with supervising(policy, lifetimes=dict.fromkeys(range(10), 1)) as harness:
        await harness.ended.wait()
        await trio.sleep(100)
        assert len(harness.processes) == max_restarts + 1
        assert harness.supervisor.restarts == max_restarts
        with pytest.raises(SidecarError, match=rf"^sidecar #{max_restarts} exited") as info:
            await call(harness.supervisor)
        assert info.value.returncode == max_restarts + 1


@pytest.mark.parametrize(("served", "started"), [(10, 3), (9.5, 2)])
async def test_a_sidecar_that_served_reset_after_seconds_starts_the_count_afresh(
    autojump_clock: trio.testing.MockClock, served: float, started: int
) -> None:
    # One restart allowed; the second sidecar's service decides whether a third one starts.
    policy = RestartPolicy(max_restarts=1, backoff=0.5, reset_after=10)
    async with supervising(policy, lifetimes={0: 0, 1: served, 2: 0}) as harness:
        await harness.ended.wait()
        assert len(harness.processes) == started
        # After a reset, the backoff starts afresh too.
        assert restart_delays(harness.processes) == [0.5] * (started - 1)


async def test_a_restart_whose_start_fails_counts_as_a_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    policy = RestartPolicy(max_restarts=2, backoff=0.5)
    failures = {1: "sidecar #1 sent no handshake", 2: "sidecar #2 sent no handshake"}
    async with supervising(policy, lifetimes={0: 0}, start_errors=failures) as harness:
        await harness.ended.wait()
        assert len(harness.processes) == 3
        assert restart_delays(harness.processes) == [0.5, 1]
        assert harness.supervisor.restarts == 2
        with pytest.raises(
            SidecarError, match=r"^restarting the sidecar failed: sidecar #2 sent no handshake$"
        ) as info:
            await call(harness.supervisor)
        assert isinstance(info.value.__cause__, SidecarError)


async def test_calls_made_while_restarting_wait_for_the_new_sidecar(
    autojump_clock: trio.testing.MockClock,
) -> None:
    policy = RestartPolicy(backoff=0.5)
    async with supervising(policy, answer=None) as harness:
        supervisor = harness.supervisor
        old = harness.processes[0]
        await exit_and_settle(old)
        assert (supervisor.current, supervisor.current_pool, supervisor.pid) == (None, None, None)
        waiting = await start_call(harness, "waited")
        assert not waiting.done.is_set()
        await trio.sleep(0.5)  # the backoff
        await trio.testing.wait_all_tasks_blocked()
        new = harness.processes[1]
        await new.peers[0].answer_waiting()
        assert await waiting.outcome() == "waited"
        assert waiting.ended_at == old.exited_at + 0.5
        assert (supervisor.restarts, supervisor.pid, supervisor.address) == (1, 1001, "fake-1.sock")


async def test_calls_wait_through_a_restart_that_fails(autojump_clock: trio.testing.MockClock) -> None:
    policy = RestartPolicy(backoff=0.5)
    async with supervising(
        policy, lifetimes={0: 0}, start_errors={1: "no handshake"}, answer=None
    ) as harness:
        await trio.testing.wait_all_tasks_blocked()  # #0 exited: the first backoff
        waiting = await start_call(harness, "waited")
        await trio.sleep(0.5 + 1)  # two restarts' backoff
        await trio.testing.wait_all_tasks_blocked()
        await harness.processes[2].peers[0].answer_waiting()
        assert await waiting.outcome() == "waited"
        assert harness.supervisor.restarts == 2


async def test_a_call_in_flight_when_the_sidecar_dies_fails_and_is_not_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with supervising(RestartPolicy(backoff=0.5), answer=None) as harness:
        in_flight = await start_call(harness, "once")
        await exit_and_settle(harness.processes[0])
        with pytest.raises(SidecarError, match="status 1") as info:
            await in_flight.outcome()
        assert info.value.returncode == 1
        after = await start_call(harness, "after")
        await trio.sleep(0.5)
        await trio.testing.wait_all_tasks_blocked()
        (peer,) = harness.processes[1].peers
        request = peer.requests.receive_nowait()
        assert request.params == "after"
        with pytest.raises(trio.WouldBlock):
            peer.requests.receive_nowait()  # "once" was not sent again
        await peer.reply(request.msgid, "done")
        assert await after.outcome() == "done"


# -- a connection lost before the death is seen ----------------------------------------------------


async def test_a_connection_lost_just_before_the_death_fails_with_the_death_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with supervising(answer=None) as harness:
        process = harness.processes[0]
        in_flight = await start_call(harness)
        lost_at = trio.current_time()
        await process.peers[0].hang_up()
        await trio.sleep(_DEATH_NOTICE / 2)
        process.exit()
        with pytest.raises(SidecarError, match="status 1") as info:
            await in_flight.outcome()
        assert info.value.returncode == 1
        assert in_flight.ended_at == lost_at + _DEATH_NOTICE / 2


async def test_a_connection_lost_while_the_sidecar_lives_fails_its_calls_after_the_death_notice(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with supervising(answer=None) as harness:
        process = harness.processes[0]
        in_flight = await start_call(harness)
        lost_at = trio.current_time()
        await process.peers[0].hang_up()
        with pytest.raises(
            SidecarError, match=r"^lost the connection to the sidecar: the sidecar closed the connection$"
        ) as info:
            await in_flight.outcome()
        assert info.value.returncode is None
        assert in_flight.ended_at == lost_at + _DEATH_NOTICE
        # The sidecar still runs: the next call opens another connection to it.
        again = await start_call(harness, "again")
        await process.peers[1].answer_waiting()
        assert await again.outcome() == "again"
        assert (len(harness.processes), harness.supervisor.restarts) == (1, 0)


async def test_garbage_from_the_sidecar_fails_its_calls_at_once_with_a_protocol_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with supervising(answer=None) as harness:
        in_flight = await start_call(harness)
        sent_at = trio.current_time()
        garbage = pack([9])
        await harness.processes[0].peers[0].send(frame_header(len(garbage)) + garbage)
        with pytest.raises(ProtocolError) as info:
            await in_flight.outcome()
        assert info.value.code == "bad_message"
        assert in_flight.ended_at == sent_at


# -- closing ---------------------------------------------------------------------------------------


async def test_close_during_a_restart_backoff_starts_no_other_sidecar(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with supervising(RestartPolicy(backoff=5)) as harness:
        await exit_and_settle(harness.processes[0])
        waiting = await start_call(harness)
        closed_at = trio.current_time()
        harness.supervisor.close()
        with pytest.raises(GoTaskError, match=r"^the GoTask is closed$"):
            await waiting.outcome()
        assert waiting.ended_at == closed_at  # woken at once, not after the backoff
        await harness.ended.wait()
        await trio.sleep(100)
        assert len(harness.processes) == 1
        with pytest.raises(GoTaskError, match=r"^the GoTask is closed$"):
            await harness.supervisor.wait_pool()


async def test_a_sidecar_that_exits_after_close_is_not_restarted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with supervising(RestartPolicy(backoff=0.5)) as harness:
        harness.supervisor.close()
        await exit_and_settle(harness.processes[0])
        await harness.ended.wait()
        await trio.sleep(100)
        assert (len(harness.processes), harness.supervisor.restarts) == (1, 0)
        with pytest.raises(GoTaskError, match=r"^the GoTask is closed$"):
            await call(harness.supervisor)


async def test_close_after_a_final_death_keeps_the_death_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with supervising() as harness:
        await exit_and_settle(harness.processes[0])
        await harness.ended.wait()
        harness.supervisor.close()
        with pytest.raises(SidecarError, match="status 1"):
            await call(harness.supervisor)


async def test_a_restart_that_shakes_hands_after_close_serves_no_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    policy = RestartPolicy(backoff=0.5)
    async with supervising(policy, lifetimes={0: 0}, handshake_delays={1: 1}, answer=echo) as harness:
        await trio.sleep(1)  # the backoff, and half of #1's start
        assert len(harness.processes) == 2
        harness.supervisor.close()
        await trio.sleep(1)  # #1 shook hands
        with pytest.raises(GoTaskError, match=r"^the GoTask is closed$"):
            await call(harness.supervisor)


async def test_close_during_a_restart_backoff_counts_no_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with supervising(RestartPolicy(backoff=5), lifetimes={0: 0}) as harness:
        await trio.testing.wait_all_tasks_blocked()
        harness.supervisor.close()
        await harness.ended.wait()
        assert harness.supervisor.restarts == 0
