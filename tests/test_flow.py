"""Flow control between a client and a sidecar whose in-flight limits differ: the lower one
rules, learned from the sidecar's $hello, and a cancellation always gets through."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from timing import HANG

from trio_gotask import GoTask, open_gotask
from trio_gotask._connection import Connection
from trio_gotask._pool import Pool
from trio_gotask._supervisor import Supervisor

# (the sidecar's -max-inflight, the client's max_inflight): the lower is 2 either way.
LIMITS = [(2, 8), (8, 2), (2, 1024)]


def only_connection(gt: GoTask) -> Connection:
    router = gt._router
    pool = router.current_pool if isinstance(router, Supervisor) else router
    assert isinstance(pool, Pool)
    (connection,) = pool._connections
    return connection


@pytest.mark.fault(
    fault="sidecar -max-inflight below the client's max_inflight, calls cancelled at the limit",
    sees="Cancelled; the Go handlers see it; later calls run",
)
@pytest.mark.parametrize(("sidecar_limit", "client_limit"), LIMITS)
async def test_cancelling_calls_at_the_limit_never_wedges_the_connection(
    sidecar: str, sidecar_limit: int, client_limit: int
) -> None:
    async with open_gotask(
        sidecar, args=["-max-inflight", str(sidecar_limit)], max_inflight=client_limit
    ) as gt:
        connection = only_connection(gt)
        assert connection.max_inflight == 2
        with trio.fail_after(HANG):  # a wedged connection hangs here
            async with trio.open_nursery() as nursery:
                for _ in range(6):
                    nursery.start_soon(gt.call, "App.Slow", 600_000)
                await trio.testing.wait_all_tasks_blocked()
                assert connection._protocol.in_flight == 2  # two sent, four wait in the client
                nursery.cancel_scope.cancel()
            # Both handlers that ran saw their context cancelled: the $cancel frames got through.
            assert await gt.call("App.WaitCancelled", 2) == 2
            assert gt.statistics().in_flight == 0
            results = []

            async def echo(i: int) -> None:
                results.append(await gt.call("App.Echo", i))

            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(echo, i)
            assert sorted(results) == list(range(20))


@pytest.mark.parametrize(("sidecar_limit", "client_limit"), LIMITS)
async def test_deadlines_at_the_limit(sidecar: str, sidecar_limit: int, client_limit: int) -> None:
    async with open_gotask(
        sidecar, args=["-max-inflight", str(sidecar_limit)], max_inflight=client_limit
    ) as gt:
        outcomes: list[str] = []
        scopes: list[trio.CancelScope] = []

        async def slow() -> None:
            with trio.CancelScope() as scope:
                scopes.append(scope)
                await gt.call("App.Slow", 600_000)
            outcomes.append("timed out" if scope.cancelled_caught else "returned")

        with trio.fail_after(HANG):
            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(slow)
                # The deadlines pass with two calls sent and three waiting for a slot. (Set before,
                # one could pass before the writer sent the second call, which Go then never ran.)
                await trio.testing.wait_all_tasks_blocked()
                assert only_connection(gt)._protocol.in_flight == 2
                for scope in scopes:
                    scope.deadline = trio.current_time()
            assert outcomes == ["timed out"] * 5
            # The two that ran in Go saw their context end there too; the rest never ran.
            assert await gt.call("App.WaitCancelled", 2) == 2
            assert await gt.call("App.Hi", "after") == {"hello": "after"}


@pytest.mark.parametrize(("sidecar_limit", "client_limit"), LIMITS)
async def test_closing_with_calls_at_the_limit(sidecar: str, sidecar_limit: int, client_limit: int) -> None:
    failures: list[BaseException] = []

    async def slow(gt: GoTask) -> None:
        try:
            await gt.call("App.Slow", 600_000)
        except Exception as exc:
            failures.append(exc)

    with trio.fail_after(HANG):
        async with (
            trio.open_nursery() as nursery,
            open_gotask(sidecar, args=["-max-inflight", str(sidecar_limit)], max_inflight=client_limit) as gt,
        ):
            for _ in range(6):
                nursery.start_soon(slow, gt)
            await trio.testing.wait_all_tasks_blocked()
            # Leaving the block failed the two running and the four waiting alike.
    assert len(failures) == 6
    assert all("closed" in str(exc) for exc in failures)
