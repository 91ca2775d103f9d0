"""connect_gotask with several addresses: sidecars started with -standalone on distinct loopback
addresses (127.0.0.2, 127.0.0.3), as on several hosts; one killed, one stopped gracefully, one
brought back, one frozen (SIGSTOP) and resumed; a DNS name (a test resolver) whose addresses
change; idempotent calls re-sent."""

from __future__ import annotations

import logging
import signal
import socket
import ssl
from collections import Counter
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from fakeresolver import Resolver
from freeze import frozen
from standalone import Standalone, standalone
from timing import HANG

from trio_gotask import GoTask, SidecarError, connect_gotask
from trio_gotask import _rotation as rotation_module
from trio_gotask._address import open_stream
from trio_gotask._names import dns_name, resolve
from trio_gotask._rotation import FIRST_BACKOFF, MAX_BACKOFF, STRIKES

pytestmark = pytest.mark.slow  # several sidecars at once: the newest Python only

FOREVER = 3_600_000
"""App.Slow's milliseconds for a call that only its cancellation ends."""


async def pids(gt: GoTask, calls: int) -> Counter[int]:
    """Which sidecar (by pid) served each of ``calls`` concurrent calls.

    The calls start together (in one batch of Trio's scheduler), and each picks its endpoint
    before it first yields: every one is routed before any reply is read, however fast the
    sidecars answer."""
    served: Counter[int] = Counter()

    async def one() -> None:
        served[await gt.call("App.Pid")] += 1

    async with trio.open_nursery() as nursery:
        for _ in range(calls):
            nursery.start_soon(one)
    return served


def states(gt: GoTask) -> dict[str, str]:
    return {e.address: e.state for e in gt.statistics().endpoints}


async def test_calls_spread_over_every_endpoint(sidecar: str) -> None:
    async with (
        standalone(sidecar, "-address", "127.0.0.2:0") as a,
        standalone(sidecar, "-address", "127.0.0.3:0") as b,
        connect_gotask([a.address, b.address]) as gt,
    ):
        # Least-loaded first, with every call routed before any is answered: an even split.
        assert await pids(gt, 200) == {a.process.pid: 100, b.process.pid: 100}
        stats = gt.statistics()
        assert [e.address for e in stats.endpoints] == [a.address, b.address]
        assert all(e.state == "up" and e.connections == 1 for e in stats.endpoints)
        assert gt.address == f"{a.address}, {b.address}"


async def test_calls_one_at_a_time_go_round_the_endpoints(sidecar: str) -> None:
    async with (
        standalone(sidecar, "-address", "127.0.0.2:0") as a,
        standalone(sidecar, "-address", "127.0.0.3:0") as b,
        standalone(sidecar, "-address", "127.0.0.4:0") as c,
        connect_gotask([a.address, b.address, c.address]) as gt,
    ):
        # Each endpoint has none in flight each time: a tie, taken in turn (several clients
        # making a call at a time would otherwise all pile on the first).
        served = [await gt.call("App.Pid") for _ in range(30)]
        assert Counter(served) == {a.process.pid: 10, b.process.pid: 10, c.process.pid: 10}
        assert served[:3] == served[3:6]


@pytest.mark.fault(
    fault="one of several endpoints killed mid-load",
    sees="SidecarError for its calls in flight only; later calls go to the others",
)
async def test_a_killed_endpoint_fails_only_its_calls_in_flight_and_leaves_rotation(
    sidecar: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        standalone(sidecar, "-address", "127.0.0.2:0") as a,
        standalone(sidecar, "-address", "127.0.0.3:0") as b,
        connect_gotask([a.address, b.address]) as gt,
    ):
        send, receive = trio.open_memory_channel[BaseException](4)

        async def slow() -> None:
            try:
                await gt.call("App.Slow", FOREVER)
            except SidecarError as exc:
                await send.send(exc)

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(slow)
            await trio.testing.wait_all_tasks_blocked()
            assert [e.in_flight for e in gt.statistics().endpoints] == [2, 2]
            a.process.kill()  # mid-load: the calls in flight there fail, with the reason
            with trio.fail_after(HANG):
                failed = [await receive.receive(), await receive.receive()]
            assert all("lost the connection" in str(exc) for exc in failed), failed
            assert [e.in_flight for e in gt.statistics().endpoints] == [0, 2]  # b's go on
            nursery.cancel_scope.cancel()
        # Every later call goes to b: none is lost while a is down.
        assert await pids(gt, 50) == {b.process.pid: 50}
        assert states(gt) == {a.address: "down", b.address: "up"}
        assert any(
            "out of rotation" in r.getMessage() and a.address in r.getMessage() for r in caplog.records
        )


@pytest.mark.fault(
    fault="one of several endpoints shutting down (SIGTERM)",
    sees="nothing: its shutting_down answers are sent on to the others",
)
async def test_an_endpoint_shutting_down_hands_new_calls_to_the_others_unseen(sidecar: str) -> None:
    async with (
        standalone(sidecar, "-address", "127.0.0.2:0", "-grace", "1h") as a,
        standalone(sidecar, "-address", "127.0.0.3:0") as b,
        connect_gotask([a.address, b.address]) as gt,
    ):
        await pids(gt, 20)  # a connection to each
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(gt.call, "App.Slow", FOREVER)  # one each: holds a in its grace period
            async with connect_gotask(a.address) as direct:
                assert await direct.call("App.Running", 1) == 1  # running there before the SIGTERM
            a.process.send_signal(signal.SIGTERM)  # a rolling update: a drains
            with trio.fail_after(HANG):  # a refuses new calls with shutting_down; the callers never see it
                while states(gt)[a.address] != "draining":
                    await pids(gt, 5)
            assert await pids(gt, 50) == {b.process.pid: 50}
            nursery.cancel_scope.cancel()


async def test_an_endpoint_that_comes_back_rejoins_the_rotation(
    sidecar: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_gotask")
    async with standalone(sidecar, "-address", "127.0.0.3:0") as b:
        async with standalone(sidecar, "-address", "127.0.0.2:0") as a:
            address = a.address
            gt_context = connect_gotask([address, b.address])
            gt = await gt_context.__aenter__()
        try:
            assert await pids(gt, 20) == {b.process.pid: 20}  # a stopped: its calls went to b
            # It said $goaway as it stopped (draining), and is found down once a call tries it again.
            assert states(gt)[address] in {"draining", "down"}
            async with standalone(sidecar, "-address", address) as again:
                # Out of rotation until its backoff (which began before) ends: the client's clock,
                # which nothing but waiting can move. Then the first calls made try it.
                (failures,) = (e.failures for e in gt.statistics().endpoints if e.address == address)
                await trio.sleep(min(FIRST_BACKOFF * 2 ** (failures - 1), MAX_BACKOFF))
                assert again.process.pid in await pids(gt, 10)
                assert states(gt)[address] == "up"
                assert any("back in rotation" in r.getMessage() for r in caplog.records)
        finally:
            await gt_context.__aexit__(None, None, None)


def frozen_sidecar(sidecar: Standalone) -> AbstractAsyncContextManager[None]:
    """``sidecar`` stopped with SIGSTOP (its kernel still accepts and acknowledges), and resumed
    on the way out, whatever happened."""
    return frozen(sidecar.process.pid)


async def hold_one_on(gt: GoTask, nursery: trio.Nursery, busy: Standalone) -> None:
    """Pin a call that never ends by itself on ``busy``, so that a call made alone goes to the
    other, the less loaded. (Ties go round from a random start: a pin that lands on the other
    is cancelled, by hand, and another is started.)"""

    async def pin(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            await gt.call("App.Slow", FOREVER)

    while True:
        scope: trio.CancelScope = await nursery.start(pin)
        await trio.testing.wait_all_tasks_blocked()
        if {e.address: e.in_flight for e in gt.statistics().endpoints}[busy.address]:
            return
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()


async def deadline_passes(gt: GoTask) -> bool:
    """Make one call under a short deadline; whether the deadline passed. The deadline is no
    measure of speed: the call goes to a frozen sidecar, which never answers by itself."""
    with trio.move_on_after(0.05) as scope:
        await gt.call("App.Pid")
    return scope.cancelled_caught


@pytest.mark.fault(
    fault="one of several endpoints frozen (SIGSTOP, a hung host): its kernel accepts and acknowledges",
    sees="the deadline of each call sent there; 3 in a row take it out of rotation (stalled), later calls go to the others",
)
async def test_a_frozen_endpoint_leaves_the_rotation_once_deadlines_pass_there(
    sidecar: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Out of rotation for longer than the test, however slow the machine: every later call must
    # go to b, none probing a.
    monkeypatch.setattr(rotation_module, "FIRST_BACKOFF", HANG)
    async with (
        standalone(sidecar, "-address", "127.0.0.2:0") as a,
        standalone(sidecar, "-address", "127.0.0.3:0") as b,
        connect_gotask([a.address, b.address]) as gt,
        trio.open_nursery() as nursery,
    ):
        await hold_one_on(gt, nursery, b)  # each call made alone below goes to a
        async with frozen_sidecar(a):
            with trio.fail_after(HANG):
                for _ in range(STRIKES - 1):
                    assert await deadline_passes(gt)
                assert states(gt)[a.address] == "up"  # not yet: a deadline may just be short
                assert await deadline_passes(gt)
            assert states(gt) == {a.address: "stalled", b.address: "up"}
            assert await pids(gt, 50) == {b.process.pid: 50}
            assert any(
                f"the sidecar at {a.address} is out of rotation" in r.getMessage()
                and "calls ran out of time there" in r.getMessage()
                for r in caplog.records
            )
        nursery.cancel_scope.cancel()


@pytest.mark.fault(
    fault="a frozen endpoint resumed (SIGCONT)",
    sees="nothing: after its rest one call tries it (a second deadline while frozen doubles the rest); answered, it rejoins",
)
async def test_a_frozen_endpoint_that_resumes_rejoins_the_rotation(
    sidecar: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_gotask")
    async with (
        standalone(sidecar, "-address", "127.0.0.2:0") as a,
        standalone(sidecar, "-address", "127.0.0.3:0") as b,
        connect_gotask([a.address, b.address]) as gt,
        trio.open_nursery() as nursery,
    ):
        await hold_one_on(gt, nursery, b)
        with trio.fail_after(HANG):
            async with frozen_sidecar(a):
                for _ in range(STRIKES):
                    assert await deadline_passes(gt)
                assert states(gt)[a.address] == "stalled"
                # Its rest ends (the client's clock, which nothing but waiting moves): one call
                # at a time tries it, and the others go to b meanwhile.
                await trio.sleep(FIRST_BACKOFF)
                answered: list[int] = []
                waiting: set[trio.CancelScope] = set()
                four = trio.Event()

                async def call() -> None:
                    with trio.CancelScope() as scope:
                        waiting.add(scope)
                        answered.append(await gt.call("App.Pid"))
                        waiting.discard(scope)
                        if len(answered) == 4:
                            four.set()

                async with trio.open_nursery() as calls:
                    for _ in range(5):
                        calls.start_soon(call)
                    await four.wait()
                    (probe,) = waiting  # the one trying a, which never answers
                    probe.deadline = trio.current_time()  # so its deadline passes there
                assert answered == [b.process.pid] * 4
                (stats,) = (e for e in gt.statistics().endpoints if e.address == a.address)
                assert (stats.state, stats.failures) == ("stalled", 2)  # out again, for twice as long
            await trio.sleep(FIRST_BACKOFF * 2)
            assert await gt.call("App.Pid") == a.process.pid  # the call that tries it, answered
        assert states(gt) == {a.address: "up", b.address: "up"}
        assert any(
            f"the sidecar at {a.address} is back in rotation" in r.getMessage() for r in caplog.records
        )
        nursery.cancel_scope.cancel()


@pytest.mark.fault(fault="every endpoint unreachable", sees="SidecarError saying why, at connect_gotask")
async def test_every_endpoint_unreachable_fails_with_the_reason(tmp_path: Any) -> None:
    with pytest.raises(SidecarError, match="cannot connect"):
        async with connect_gotask([str(tmp_path / "a.sock"), str(tmp_path / "b.sock")]):
            pass


async def test_addresses_are_checked_at_once() -> None:
    with pytest.raises(TypeError, match="non-empty list"):
        async with connect_gotask([]):
            pass
    with pytest.raises(ValueError, match="not an address"):
        async with connect_gotask(["127.0.0.1:1", ""]):
            pass


# -- DNS names ------------------------------------------------------------------------------------


@pytest.fixture
async def resolver() -> Resolver:
    resolver = Resolver({})
    trio.socket.set_custom_hostname_resolver(resolver)
    return resolver


def port_of(address: str) -> str:
    return address.rpartition(":")[2]


async def test_a_dns_name_stands_for_every_address_it_resolves_to(sidecar: str, resolver: Resolver) -> None:
    async with standalone(sidecar, "-address", "127.0.0.2:0") as a:
        port = port_of(a.address)
        async with standalone(sidecar, "-address", f"127.0.0.3:{port}") as b:
            resolver.names["sidecars.test"] = ["127.0.0.2", "127.0.0.3"]
            async with connect_gotask(f"dns:sidecars.test:{port}") as gt:
                assert await pids(gt, 200) == {a.process.pid: 100, b.process.pid: 100}
                stats = gt.statistics().endpoints
                assert [(e.address, e.source) for e in stats] == [
                    (a.address, f"dns:sidecars.test:{port}"),
                    (b.address, f"dns:sidecars.test:{port}"),
                ]
                assert gt.address == f"dns:sidecars.test:{port}"
            # gRPC's spelling, beside a plain address that the name resolves to as well: one endpoint
            async with connect_gotask([a.address, f"dns:///sidecars.test:{port}"]) as gt:
                assert [e.address for e in gt.statistics().endpoints] == [a.address, b.address]
                assert set(await pids(gt, 50)) == {a.process.pid, b.process.pid}


async def test_addresses_join_and_leave_as_the_name_changes(
    sidecar: str, resolver: Resolver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_gotask")
    async with standalone(sidecar, "-address", "127.0.0.2:0") as a:
        port = port_of(a.address)
        async with standalone(sidecar, "-address", f"127.0.0.3:{port}") as b:
            resolver.names["sidecars.test"] = ["127.0.0.2"]
            async with connect_gotask(f"dns:sidecars.test:{port}", resolve_interval=0.05) as gt:
                assert set(await pids(gt, 20)) == {a.process.pid}

                resolver.names["sidecars.test"] = ["127.0.0.2", "127.0.0.3"]  # scaled up
                await resolver.resolutions(2)
                assert [e.address for e in gt.statistics().endpoints] == [a.address, b.address]
                assert set(await pids(gt, 50)) == {a.process.pid, b.process.pid}
                assert any("joins the rotation" in r.getMessage() for r in caplog.records)

                async with trio.open_nursery() as nursery:
                    results: list[str] = []

                    async def held() -> None:
                        results.append(await gt.call("App.Hold", "leaving"))

                    nursery.start_soon(held)
                    nursery.start_soon(held)
                    await trio.testing.wait_all_tasks_blocked()
                    assert [e.in_flight for e in gt.statistics().endpoints] == [1, 1]
                    resolver.names["sidecars.test"] = ["127.0.0.3"]  # a leaves, a call in flight there
                    await resolver.resolutions(2)
                    assert [e.address for e in gt.statistics().endpoints] == [b.address]
                    assert gt._router._retiring  # type: ignore[attr-defined]
                    assert set(await pids(gt, 20)) == {b.process.pid}
                    async with connect_gotask(a.address) as at_a:
                        await at_a.call("App.Release", "leaving")
                    await gt.call("App.Release", "leaving")
                # Its call in flight finished there unharmed; then its connection was closed.
                assert results == ["leaving", "leaving"]
                assert not gt._router._retiring  # type: ignore[attr-defined]
                assert any("no longer resolves to" in r.getMessage() for r in caplog.records)


@pytest.mark.fault(
    fault="a dns: name stops resolving",
    sees="a warning; its last addresses are kept and keep serving",
)
async def test_a_name_that_stops_resolving_keeps_its_addresses(
    sidecar: str, resolver: Resolver, caplog: pytest.LogCaptureFixture
) -> None:
    async with standalone(sidecar, "-address", "127.0.0.2:0") as a:
        resolver.names["sidecars.test"] = ["127.0.0.2"]
        async with connect_gotask(f"dns:sidecars.test:{port_of(a.address)}", resolve_interval=0.05) as gt:
            del resolver.names["sidecars.test"]
            await resolver.resolutions(2)
            assert set(await pids(gt, 20)) == {a.process.pid}
            assert any(
                "cannot resolve 'sidecars.test'" in r.getMessage()
                and "keeping the addresses" in r.getMessage()
                for r in caplog.records
            )


@pytest.mark.fault(fault="a dns: name that does not resolve", sees="SidecarError at connect_gotask naming it")
async def test_a_name_that_never_resolves_fails_at_connect(resolver: Resolver) -> None:
    with pytest.raises(SidecarError, match=r"cannot resolve 'nowhere.test' \(from 'dns:nowhere.test:6001'\)"):
        async with connect_gotask("dns:nowhere.test:6001"):
            pass


async def test_dns_addresses_are_checked_at_once() -> None:
    for bad in ["dns:", "dns:sidecars.test", "dns:/tmp/a.sock", "dns:///:6001", "dns:sidecars.test:0"]:
        with pytest.raises(ValueError, match=r"dns:host:port|between 1 and 65535"):
            async with connect_gotask(bad):
                pass


async def test_resolve_formats_ipv4_and_ipv6(resolver: Resolver) -> None:
    resolver.names["mixed.test"] = ["10.0.0.1", "fd00::1", "10.0.0.1"]
    name = dns_name("dns:mixed.test:6001")
    assert name is not None
    assert await resolve(name) == ["10.0.0.1:6001", "[fd00::1]:6001"]


async def test_tls_certificates_are_checked_against_the_name(
    sidecar: str, resolver: Resolver, tmp_path: Path
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("sidecars.test")  # the name only: an address would fail the check
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    tls = ["-tls-cert", str(cert_file), "-tls-key", str(key_file)]
    secret = {"GOTASK_SECRET": "s3cret-per-endpoint"}
    async with standalone(sidecar, "-address", "127.0.0.2:0", *tls, env=secret) as a:
        port = port_of(a.address)
        async with standalone(sidecar, "-address", f"127.0.0.3:{port}", *tls, env=secret) as b:
            resolver.names["sidecars.test"] = ["127.0.0.2", "127.0.0.3"]
            async with connect_gotask(
                f"dns:sidecars.test:{port}", ssl_context=context, secret="s3cret-per-endpoint"
            ) as gt:
                assert set(await pids(gt, 50)) == {a.process.pid, b.process.pid}
            with pytest.raises(SidecarError, match="CERTIFICATE_VERIFY_FAILED"):
                async with connect_gotask(
                    [a.address, b.address], ssl_context=context, secret="s3cret-per-endpoint"
                ):
                    pass


# -- idempotent methods ---------------------------------------------------------------------------


@pytest.mark.fault(
    fault="an endpoint killed with calls of an idempotent method in flight",
    sees="nothing: those calls are re-sent to another endpoint (opt-in, idempotent=)",
)
async def test_idempotent_calls_lost_in_flight_are_sent_to_another_endpoint(
    sidecar: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_gotask")
    async with (
        standalone(sidecar, "-address", "127.0.0.2:0") as a,
        standalone(sidecar, "-address", "127.0.0.3:0") as b,
        connect_gotask([a.address, b.address], idempotent={"App.Hold"}) as gt,
    ):
        results: list[object] = []
        lost: list[SidecarError] = []

        async def call(method: str, arg: object) -> None:
            try:
                results.append(await gt.call(method, arg))
            except SidecarError as exc:
                lost.append(exc)

        # Hold returns once released; Holding once three Holds reached the gate on its sidecar.
        gate = "resent"
        holding = {"name": gate, "n": 3}
        async with trio.open_nursery() as nursery:
            for method, arg in [("App.Hold", gate)] * 2 + [("App.Holding", holding)] * 2:
                nursery.start_soon(call, method, arg)
                await trio.testing.wait_all_tasks_blocked()  # one by one: each pair spreads over a and b
            assert [e.in_flight for e in gt.statistics().endpoints] == [2, 2]
            a.process.kill()
            async with connect_gotask(b.address) as at_b:
                await at_b.call("App.Release", gate)  # b's Holds return, a's too once re-sent there
                assert await at_b.call("App.Hold", gate) == gate  # the third at b
        # Both Holds (a's re-sent to b), and b's Holding, which counted them there.
        assert sorted(results, key=str) == [3, gate, gate], results
        assert len(lost) == 1 and "lost the connection" in str(lost[0])  # Holding is not idempotent
        assert any(r.getMessage().startswith("re-sending App.Hold, lost at") for r in caplog.records)


@pytest.mark.fault(
    fault="an endpoint killed with calls waiting for a slot (max_inflight reached)",
    sees="nothing for those: they were never sent, and go to another endpoint",
)
async def test_calls_waiting_for_a_slot_on_a_killed_endpoint_go_to_another(sidecar: str) -> None:
    async with (
        standalone(sidecar, "-address", "127.0.0.2:0") as a,
        standalone(sidecar, "-address", "127.0.0.3:0") as b,
        connect_gotask([a.address, b.address], max_inflight=1) as gt,
    ):
        outcomes: list[object] = []

        async def call() -> None:
            try:
                outcomes.append(await gt.call("App.Hold", "slot"))
            except SidecarError as exc:
                outcomes.append(exc)

        async with trio.open_nursery() as nursery:
            for _ in range(3):  # one in flight on each, the third waits for a slot on one of them
                nursery.start_soon(call)
                await trio.testing.wait_all_tasks_blocked()
            loads = [e.in_flight for e in gt.statistics().endpoints]
            assert sorted(loads) == [1, 2]
            doomed, other = (a, b) if loads[0] == 2 else (b, a)
            doomed.process.kill()
            async with connect_gotask(other.address) as direct:  # its only slot is taken
                await direct.call("App.Release", "slot")
        failed = [o for o in outcomes if isinstance(o, SidecarError)]
        assert len(failed) == 1 and "lost the connection" in str(failed[0])  # the one sent there
        assert outcomes.count("slot") == 2  # the other's own, and the one that waited


async def test_idempotent_must_name_methods() -> None:
    with pytest.raises(TypeError, match="collection of method names"):
        async with connect_gotask(["127.0.0.1:1"], idempotent="App.Slow"):
            pass


async def test_tcp_connections_are_set_to_notice_a_vanished_host(sidecar: str) -> None:
    """A host powered off or cut from the network closes nothing: the client must notice by
    itself. (Dropping packets to see it happen needs privileges tests do not have; the kernel's
    side of these options is its own.)"""
    async with standalone(sidecar, "-address", "127.0.0.2:0") as a:
        stream = await open_stream(a.address)
        try:
            assert isinstance(stream, trio.SocketStream)
            sock = stream.socket
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            if hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 30_000
                idle = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
                interval = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)
                count = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)
                assert idle + interval * count <= 30  # an idle connection: about as soon
        finally:
            await stream.aclose()
