"""Interceptors and tracing against a fake sidecar over memory streams (tests/fakesidecar.py), on
the autojump clock: the order of a chain, what an interceptor may change, answer, raise or let
through, host interceptors around handlers, the documented uses (authentication, metrics,
logging), and OpenTelemetry's spans and trace context both ways."""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from fakesidecar import Answer, Fail, FakePeer, echo, fake_connect, frame
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from trio_gotask import (
    CallInfo,
    CallNext,
    GoTask,
    GoTaskError,
    HostCallInfo,
    HostCallNext,
    HostInterceptor,
    Interceptor,
    RemoteError,
    connect_gotask,
)
from trio_gotask._client import _chains
from trio_gotask._dialect import DIALECTS
from trio_gotask._errors import lost_without_explanation
from trio_gotask._goridge import GoridgeProtocol
from trio_gotask._handlers import Handler, Handlers
from trio_gotask._pool import Pool
from trio_gotask._settings import Limits, PoolSettings
from trio_gotask._tracing import NO_OPENTELEMETRY, tracing_interceptors
from trio_gotask._wire import CANCEL, Notification, Request, Response

pytestmark = pytest.mark.fast  # no process: nox -s fast

# Every test runs on the autojump clock: a test waiting for what never comes fails at once, its
# clock jumping to this deadline.
STUCK = 10_000
TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331
TRACEPARENT = f"00-{TRACE_ID:032x}-{SPAN_ID:016x}-01"


@asynccontextmanager
async def fake_gotask(
    *,
    interceptors: Sequence[Interceptor] = (),
    host_interceptors: Sequence[HostInterceptor] = (),
    tracing: bool | None = False,
    handlers: Mapping[str, Handler] | None = None,
    answer: Answer | None = echo,
) -> AsyncIterator[tuple[GoTask, FakePeer]]:
    """A `GoTask` with the chains `open_gotask` would compose, on one connection to a fake
    sidecar that answers with ``answer`` (or queues the requests, with ``None``)."""
    with trio.fail_after(STUCK):
        async with trio.open_nursery() as nursery:
            peers: list[FakePeer] = []
            registry = Handlers(handlers)
            calls, hosts = _chains(DIALECTS["gotask"], interceptors, host_interceptors, tracing)
            registry.intercept(hosts)
            settings = PoolSettings(1, Limits(1 << 20, 64, max_host_calls=8), keepalive_timeout=None)
            connect = fake_connect(nursery, peers, answer=answer, max_host_calls=8)
            pool = Pool(nursery, connect, settings, explain=lost_without_explanation, handlers=registry)
            await pool.warm_up()
            try:
                yield GoTask(pool, registry, calls), peers[0]
            finally:
                pool.close()
                nursery.cancel_scope.cancel()


async def sent(request: Request) -> dict[str, Any]:
    """An `Answer`: what the sidecar received, the request's params and metadata."""
    return {"params": request.params, "metadata": (request.meta or {}).get("metadata")}


async def host_call(
    peer: FakePeer, method: str, arg: Any, metadata: dict[str, str] | None = None, *, msgid: int = 1
) -> Response:
    """Call the client's handler ``method`` as the sidecar does, and return the answer."""
    meta = None if metadata is None else {"metadata": metadata}
    await peer.send(frame(Request(msgid, method, arg, meta)))
    return await peer.responses.receive()


# -- the chain -------------------------------------------------------------------------------------


async def test_without_interceptors_a_call_takes_the_plain_path(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with fake_gotask(answer=sent) as (gt, _):
        assert gt._chain is None
        assert await gt.call("App.Hi", "x") == {"params": "x", "metadata": None}


async def test_interceptors_run_outermost_first(autojump_clock: trio.testing.MockClock) -> None:
    log: list[str] = []

    def named(name: str) -> Interceptor:
        async def interceptor(info: CallInfo, call_next: CallNext) -> Any:
            log.append(f"{name} in {info.method}")
            result = await call_next(info)
            log.append(f"{name} out {result!r}")
            return result

        return interceptor

    async with fake_gotask(interceptors=[named("a"), named("b")]) as (gt, _):
        assert await gt.call("App.Echo", 1) == 1
    assert log == ["a in App.Echo", "b in App.Echo", "b out 1", "a out 1"]


async def test_an_interceptor_changes_the_method_argument_and_metadata(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def change(info: CallInfo, call_next: CallNext) -> Any:
        info.method = "App.Other"
        info.arg = {"wrapped": info.arg}
        info.metadata["tenant"] = "acme"
        info.metadata["request-id"] = "7"
        return await call_next(info)

    methods: list[str] = []

    async def answer(request: Request) -> Any:
        methods.append(request.method)
        return await sent(request)

    async with fake_gotask(interceptors=[change], answer=answer) as (gt, _):
        assert await gt.call("App.Hi", "x") == {
            "params": {"wrapped": "x"},
            "metadata": {"tenant": "acme", "request-id": "7"},
        }
    assert methods == ["App.Other"]


async def test_empty_metadata_is_not_sent(autojump_clock: trio.testing.MockClock) -> None:
    async def nothing(info: CallInfo, call_next: CallNext) -> Any:
        assert info.metadata == {}
        return await call_next(info)

    metas: list[Any] = []

    async def answer(request: Request) -> Any:
        metas.append(request.meta)

    async with fake_gotask(interceptors=[nothing], answer=answer) as (gt, _):
        await gt.call("App.Hi")
    assert set(metas[0]) == {"timeout"}  # the test's deadline, and no "metadata"


async def test_an_interceptor_answers_without_calling_next(autojump_clock: trio.testing.MockClock) -> None:
    async def cached(info: CallInfo, call_next: CallNext) -> Any:
        if info.method == "App.Cached":
            return "from the cache"
        return await call_next(info)

    async with fake_gotask(interceptors=[cached]) as (gt, peer):
        assert await gt.call("App.Cached", "x") == "from the cache"
        assert peer.most_in_flight == 0  # nothing was sent
        assert await gt.call("App.Echo", "y") == "y"
        stats = gt.statistics()
        assert (stats.calls_done, stats.calls_failed) == (2, 0)


async def test_an_exception_in_an_interceptor_reaches_the_caller(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Denied(Exception):
        pass

    async def deny(info: CallInfo, call_next: CallNext) -> Any:
        if info.method == "App.Secret":
            raise Denied(info.method)
        return await call_next(info)

    async def translate(info: CallInfo, call_next: CallNext) -> Any:
        try:
            return await call_next(info)
        except RemoteError as exc:
            raise LookupError(f"{info.method}: {exc.message}") from exc

    async def answer(request: Request) -> Any:
        raise Fail("error", "no such user")

    async with fake_gotask(interceptors=[deny, translate], answer=answer) as (gt, peer):
        with pytest.raises(Denied, match=r"App\.Secret"):
            await gt.call("App.Secret")
        assert peer.most_in_flight == 0
        with pytest.raises(LookupError, match=r"App\.User: no such user") as info:
            await gt.call("App.User", 7)
        assert isinstance(info.value.__cause__, RemoteError)
        assert gt.statistics().calls_failed == 2
        assert gt._router.statistics().in_flight == 0


async def test_cancellation_passes_through_an_interceptor(autojump_clock: trio.testing.MockClock) -> None:
    seen: list[str] = []

    async def watch(info: CallInfo, call_next: CallNext) -> Any:
        try:
            return await call_next(info)
        except trio.Cancelled:
            seen.append("cancelled")
            raise

    async with fake_gotask(interceptors=[watch], answer=None) as (gt, peer):
        with trio.move_on_after(5) as scope:
            await gt.call("App.Slow")
        assert scope.cancelled_caught
        assert seen == ["cancelled"]
        request = peer.requests.receive_nowait()
        while request.msgid not in peer.cancels:
            await peer.cancel_arrived.wait()
        assert gt.statistics().calls_cancelled == 1


@pytest.mark.parametrize(
    ("metadata", "says"),
    [
        ({"retries": 3}, "the metadata entry 'retries' is a int, not a str"),
        ({"tenant": "acme", "user": None}, "the metadata entry 'user' is a NoneType"),
        ({7: "seven"}, "the metadata key 7 is a int, not a str"),
        ({"raw": b"bytes"}, "the metadata entry 'raw' is a bytes"),
        (None, "CallInfo.metadata must be a dict of str to str, not NoneType"),
        ([("a", "b")], "CallInfo.metadata must be a dict of str to str, not list"),
    ],
)
async def test_metadata_that_is_not_strings_fails_before_sending(
    metadata: Any, says: str, autojump_clock: trio.testing.MockClock
) -> None:
    async def bad(info: CallInfo, call_next: CallNext) -> Any:
        info.metadata = metadata
        return await call_next(info)

    async with fake_gotask(interceptors=[bad]) as (gt, peer):
        with pytest.raises(TypeError, match=f"^App.Hi: {re.escape(says)}"):
            await gt.call("App.Hi")
        assert peer.most_in_flight == 0
        assert await GoTask(gt._router).call("App.Echo", "still works") == "still works"


async def test_a_method_an_interceptor_sets_must_be_a_str(autojump_clock: trio.testing.MockClock) -> None:
    async def bad(info: CallInfo, call_next: CallNext) -> Any:
        info.method = 7  # type: ignore[assignment]
        return await call_next(info)

    async with fake_gotask(interceptors=[bad]) as (gt, peer):
        with pytest.raises(TypeError, match=r"an interceptor set CallInfo\.method to 7"):
            await gt.call("App.Hi")
        assert peer.most_in_flight == 0


async def test_interceptors_must_be_callables_in_a_sequence(
    tmp_path: Any, autojump_clock: trio.testing.MockClock
) -> None:
    async def fine(info: CallInfo, call_next: CallNext) -> Any:
        return await call_next(info)

    address = str(tmp_path / "nobody.sock")
    given: list[tuple[dict[str, Any], str]] = [
        ({"interceptors": fine}, "interceptors must be a sequence"),
        ({"interceptors": [fine, "log"]}, "interceptors holds 'log', which is not callable"),
        ({"host_interceptors": "x"}, "host_interceptors must be a sequence"),
    ]
    for keywords, says in given:
        with pytest.raises(TypeError, match=says):
            async with connect_gotask(address, **keywords):
                pass
    with pytest.raises(TypeError, match="tracing must be None, True or False"):
        async with connect_gotask(address, tracing="yes"):  # type: ignore[arg-type]
            pass


def without_timeout(meta: dict[str, Any] | None) -> dict[str, Any]:
    """A request's meta but its deadline (the hang guard's)."""
    return {key: value for key, value in (meta or {}).items() if key != "timeout"}


# -- streams ---------------------------------------------------------------------------------------


async def test_a_stream_opens_through_the_interceptors_with_their_metadata(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[Any] = []

    async def tenant(info: CallInfo, call_next: CallNext) -> Any:
        seen.append((info.method, info.arg, info.stream, info.window))
        info.metadata["tenant"] = "acme"
        stream = await call_next(info)
        seen.append(type(stream).__name__)
        return stream

    async with fake_gotask(interceptors=[tenant], answer=None) as (gt, peer):
        async with gt.stream("App.Count", 2, window=4096) as items:
            request = await peer.requests.receive()
            assert without_timeout(request.meta) == {"stream": 4096, "metadata": {"tenant": "acme"}}
            await peer.item(request.msgid, 1)
            await peer.reply(request.msgid)
            assert [item async for item in items] == [1]
        # A call through the same chain is a call: no stream, no window.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(gt.call, "App.Hi", "x")
            request = await peer.requests.receive()
            assert without_timeout(request.meta) == {"metadata": {"tenant": "acme"}}
            await peer.reply(request.msgid, "hi")
    assert seen == [("App.Count", 2, True, 4096), "ItemStream", ("App.Hi", "x", False, 0), "str"]


async def test_an_interceptor_must_hand_back_the_stream(autojump_clock: trio.testing.MockClock) -> None:
    async def swallow(info: CallInfo, call_next: CallNext) -> Any:
        stream = await call_next(info)
        await stream.aclose()
        return [1, 2, 3]

    async with fake_gotask(interceptors=[swallow], answer=None) as (gt, _):
        with pytest.raises(TypeError, match=r"must return the ItemStream that call_next returned"):
            async with gt.stream("App.Count", 2):
                pytest.fail("opened")  # pragma: no cover


async def test_bad_stream_metadata_is_refused_before_anything_is_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def bad(info: CallInfo, call_next: CallNext) -> Any:
        info.metadata["retries"] = 3  # type: ignore[assignment]
        return await call_next(info)

    async with fake_gotask(interceptors=[bad], answer=None) as (gt, peer):
        with pytest.raises(TypeError, match=r"App\.Count: the metadata entry 'retries' is a int"):
            async with gt.stream("App.Count", 2):
                pytest.fail("opened")  # pragma: no cover
        with pytest.raises(trio.WouldBlock):
            peer.requests.receive_nowait()


# -- host interceptors -----------------------------------------------------------------------------


async def test_host_interceptors_see_gos_metadata_and_wrap_the_handler(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[Any] = []

    async def upper(text: str) -> str:
        log.append(("handler", text))
        return text.upper()

    def named(name: str) -> HostInterceptor:
        async def interceptor(info: HostCallInfo, call_next: HostCallNext) -> Any:
            log.append((name, info.method, dict(info.metadata)))
            result = await call_next(info)
            log.append((name, "out", result))
            return result

        return interceptor

    async def shout(info: HostCallInfo, call_next: HostCallNext) -> Any:
        with pytest.raises(TypeError):
            info.metadata["tenant"] = "other"  # type: ignore[index]
        info.arg += "!"
        return await call_next(info)

    async with fake_gotask(
        handlers={"Py.Upper": upper}, host_interceptors=[named("a"), named("b"), shout]
    ) as (_, peer):
        metadata = {"traceparent": TRACEPARENT, "tenant": "acme"}
        response = await host_call(peer, "Py.Upper", "reasno", metadata)
        assert (response.error, response.result) == (None, "REASNO!")
        response = await host_call(peer, "Py.Upper", "plain", msgid=2)
        assert (response.error, response.result) == (None, "PLAIN!")
    assert log == [
        ("a", "Py.Upper", metadata),
        ("b", "Py.Upper", metadata),
        ("handler", "reasno!"),
        ("b", "out", "REASNO!"),
        ("a", "out", "REASNO!"),
        ("a", "Py.Upper", {}),
        ("b", "Py.Upper", {}),
        ("handler", "plain!"),
        ("b", "out", "PLAIN!"),
        ("a", "out", "PLAIN!"),
    ]


async def test_a_host_interceptors_exception_reaches_go_as_a_handlers_would(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def authorize(info: HostCallInfo, call_next: HostCallNext) -> Any:
        if info.metadata.get("authorization") != "Bearer go":
            raise PermissionError(f"{info.method}: not authorized")
        return await call_next(info)

    async with fake_gotask(handlers={"Py.Hi": lambda: "hi"}, host_interceptors=[authorize]) as (_, peer):
        response = await host_call(peer, "Py.Hi", None)
        assert response.error is not None
        assert response.error["type"] == "error"
        assert response.error["message"] == "PermissionError: Py.Hi: not authorized"
        response = await host_call(peer, "Py.Hi", None, {"authorization": "Bearer go"}, msgid=2)
        assert (response.error, response.result) == (None, "hi")
        # A name not registered is still not_found, through the chain.
        response = await host_call(peer, "Py.Nobody", None, {"authorization": "Bearer go"}, msgid=3)
        assert response.error is not None and response.error["type"] == "not_found"


async def test_gos_cancel_passes_through_a_host_interceptor(autojump_clock: trio.testing.MockClock) -> None:
    seen: list[str] = []
    started = trio.Event()

    async def forever() -> None:
        started.set()
        await trio.sleep_forever()

    async def watch(info: HostCallInfo, call_next: HostCallNext) -> Any:
        try:
            return await call_next(info)
        except trio.Cancelled:
            seen.append("cancelled")
            raise

    async with fake_gotask(handlers={"Py.Forever": forever}, host_interceptors=[watch]) as (_, peer):
        await peer.send(frame(Request(1, "Py.Forever", None, None)))
        await started.wait()
        await peer.send(frame(Notification(CANCEL, 1)))
        response = await peer.responses.receive()
        assert response.error is not None and response.error["type"] == "cancelled"
    assert seen == ["cancelled"]


# -- the documented uses ---------------------------------------------------------------------------

_token: contextvars.ContextVar[str | None] = contextvars.ContextVar("token", default=None)


async def authenticate(info: CallInfo, call_next: CallNext) -> Any:
    """Per-call authentication: the caller's token, from a context variable."""
    token = _token.get()
    if token is not None:
        info.metadata["authorization"] = f"Bearer {token}"
    return await call_next(info)


async def test_authentication_from_a_context_variable(autojump_clock: trio.testing.MockClock) -> None:
    got: dict[str, Any] = {}

    async def as_user(gt: GoTask, user: str) -> None:
        _token.set(f"token-of-{user}")
        got[user] = await gt.call("App.Whoami", user)

    async with fake_gotask(interceptors=[authenticate], answer=sent) as (gt, _):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(as_user, gt, "ann")
            nursery.start_soon(as_user, gt, "bob")
        anonymous = await gt.call("App.Whoami")
    assert got == {
        "ann": {"params": "ann", "metadata": {"authorization": "Bearer token-of-ann"}},
        "bob": {"params": "bob", "metadata": {"authorization": "Bearer token-of-bob"}},
    }
    assert anonymous == {"params": None, "metadata": None}


class TokenSource:
    """Per-call authentication from a token source: a token fetched when needed and kept until
    it expires, shared by concurrent callers."""

    def __init__(self, lifetime: float) -> None:
        self.lifetime = lifetime
        self.fetched = 0
        self._token = ""
        self._expires = -float("inf")
        self._lock = trio.Lock()

    async def token(self) -> str:
        async with self._lock:
            if trio.current_time() >= self._expires:
                await trio.sleep(0.1)  # the round trip to an identity provider
                self.fetched += 1
                self._token = f"token-{self.fetched}"
                self._expires = trio.current_time() + self.lifetime
            return self._token

    async def __call__(self, info: CallInfo, call_next: CallNext) -> Any:
        info.metadata["authorization"] = f"Bearer {await self.token()}"
        return await call_next(info)


async def test_authentication_from_a_token_source(autojump_clock: trio.testing.MockClock) -> None:
    source = TokenSource(lifetime=60)
    async with fake_gotask(interceptors=[source], answer=sent) as (gt, _):
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(gt.call, "App.Hi")
        assert (await gt.call("App.Hi"))["metadata"] == {"authorization": "Bearer token-1"}
        await trio.sleep(60)
        assert (await gt.call("App.Hi"))["metadata"] == {"authorization": "Bearer token-2"}
    assert source.fetched == 2


class Metrics:
    """Counts and durations per method and outcome: what a metrics interceptor records (a real
    one hands them to Prometheus or OpenTelemetry's metrics)."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()
        self.durations: defaultdict[str, list[float]] = defaultdict(list)

    async def __call__(self, info: CallInfo, call_next: CallNext) -> Any:
        start = trio.current_time()
        outcome = "error"
        try:
            result = await call_next(info)
            outcome = "ok"
            return result
        except trio.Cancelled:
            outcome = "cancelled"
            raise
        finally:
            self.calls[info.method, outcome] += 1
            self.durations[info.method].append(trio.current_time() - start)


async def slow_echo(request: Request) -> Any:
    """An `Answer` that takes the seconds its params say, or fails for a negative number."""
    if request.params < 0:
        raise Fail("error", "negative")
    await trio.sleep(request.params)
    return request.params


async def test_metrics_count_and_time_each_method(autojump_clock: trio.testing.MockClock) -> None:
    metrics = Metrics()
    async with fake_gotask(interceptors=[metrics], answer=slow_echo) as (gt, _):
        assert await gt.call("App.Wait", 0.5) == 0.5
        assert await gt.call("App.Wait", 1.5) == 1.5
        with pytest.raises(RemoteError):
            await gt.call("App.Wait", -1)
        with trio.move_on_after(2):
            await gt.call("App.Sleep", 10)
    assert metrics.calls == {("App.Wait", "ok"): 2, ("App.Wait", "error"): 1, ("App.Sleep", "cancelled"): 1}
    assert metrics.durations == {"App.Wait": [0.5, 1.5, 0.0], "App.Sleep": [2.0]}  # the autojump clock


async def log_calls(info: CallInfo, call_next: CallNext) -> Any:
    """A log record per call: its method, outcome and duration."""
    start = trio.current_time()
    try:
        result = await call_next(info)
    except BaseException as exc:
        logging.getLogger("app.calls").warning(
            "%s failed after %.3f s: %s", info.method, trio.current_time() - start, type(exc).__name__
        )
        raise
    logging.getLogger("app.calls").info("%s ok in %.3f s", info.method, trio.current_time() - start)
    return result


async def test_logging_one_record_per_call(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    caplog.set_level(logging.INFO, "app.calls")
    async with fake_gotask(interceptors=[log_calls], answer=slow_echo) as (gt, _):
        await gt.call("App.Wait", 0.25)
        with pytest.raises(RemoteError):
            await gt.call("App.Wait", -1)
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "app.calls"] == [
        ("INFO", "App.Wait ok in 0.250 s"),
        ("WARNING", "App.Wait failed after 0.000 s: RemoteError"),
    ]


# -- tracing ---------------------------------------------------------------------------------------


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def traceparent(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-{span.context.trace_flags:02x}"


async def test_a_call_makes_a_client_span_whose_context_go_receives(
    provider: TracerProvider, exporter: InMemorySpanExporter, autojump_clock: trio.testing.MockClock
) -> None:
    client, host = tracing_interceptors(True, tracer_provider=provider)
    assert client is not None and host is not None
    async with fake_gotask(interceptors=[client], answer=sent) as (gt, _):
        got = await gt.call("App.Hi", "x")
    (span,) = exporter.get_finished_spans()
    assert (span.name, span.kind, span.parent) == ("App.Hi", SpanKind.CLIENT, None)
    assert dict(span.attributes or {}) == {"rpc.system": "gotask", "rpc.service": "App", "rpc.method": "Hi"}
    assert span.status.status_code == StatusCode.UNSET
    assert got == {"params": "x", "metadata": {"traceparent": traceparent(span)}}


async def test_a_client_span_is_the_child_of_the_callers_span(
    provider: TracerProvider, exporter: InMemorySpanExporter, autojump_clock: trio.testing.MockClock
) -> None:
    client, _ = tracing_interceptors(True, tracer_provider=provider)
    assert client is not None

    async def inner(info: CallInfo, call_next: CallNext) -> Any:
        # Inside the client span: an interceptor after tracing's may log its trace id.
        info.metadata["seen-span"] = f"{trace.get_current_span().get_span_context().span_id:016x}"
        return await call_next(info)

    async with fake_gotask(interceptors=[client, inner], answer=sent) as (gt, _):
        with provider.get_tracer("app").start_as_current_span("checkout"):
            got = await gt.call("Shop.Checkout")
    call, checkout = exporter.get_finished_spans()
    assert call.parent is not None and checkout.context is not None and call.context is not None
    assert call.parent.span_id == checkout.context.span_id
    assert call.context.trace_id == checkout.context.trace_id
    assert got["metadata"] == {"traceparent": traceparent(call), "seen-span": f"{call.context.span_id:016x}"}


async def test_a_failed_call_records_its_error(
    provider: TracerProvider, exporter: InMemorySpanExporter, autojump_clock: trio.testing.MockClock
) -> None:
    client, _ = tracing_interceptors(True, tracer_provider=provider)
    assert client is not None
    async with fake_gotask(interceptors=[client], answer=slow_echo) as (gt, _):
        with pytest.raises(RemoteError):
            await gt.call("App.Wait", -1)
        with trio.move_on_after(1):
            await gt.call("App.Wait", 5)
    failed, cancelled = exporter.get_finished_spans()
    assert failed.status.status_code == StatusCode.ERROR
    assert "negative" in (failed.status.description or "")
    assert [event.name for event in failed.events] == ["exception"]
    assert str((failed.events[0].attributes or {})["exception.type"]).endswith("RemoteError")
    assert (cancelled.status.status_code, cancelled.status.description) == (StatusCode.ERROR, "cancelled")
    assert cancelled.events == ()


async def test_a_host_call_makes_a_server_span_under_gos_context(
    provider: TracerProvider, exporter: InMemorySpanExporter, autojump_clock: trio.testing.MockClock
) -> None:
    _, host = tracing_interceptors(True, tracer_provider=provider)
    assert host is not None

    async def lookup(item: str) -> float:
        with provider.get_tracer("prices").start_as_current_span(f"read {item}"):
            return 0.5

    async def fail() -> None:
        raise ValueError("no price")

    async with fake_gotask(
        handlers={"Prices.Lookup": lookup, "Prices.Fail": fail}, host_interceptors=[host]
    ) as (_, peer):
        response = await host_call(peer, "Prices.Lookup", "apple", {"traceparent": TRACEPARENT})
        assert (response.error, response.result) == (None, 0.5)
        response = await host_call(peer, "Prices.Fail", None, msgid=2)
        assert response.error is not None and response.error["message"] == "ValueError: no price"
    read, served, failed = exporter.get_finished_spans()
    assert (served.name, served.kind) == ("Prices.Lookup", SpanKind.SERVER)
    assert dict(served.attributes or {}) == {
        "rpc.system": "gotask",
        "rpc.service": "Prices",
        "rpc.method": "Lookup",
    }
    assert served.parent is not None and served.parent.is_remote
    assert (served.parent.trace_id, served.parent.span_id) == (TRACE_ID, SPAN_ID)
    assert served.context is not None and read.parent is not None
    assert (read.name, read.parent.span_id) == ("read apple", served.context.span_id)
    # Without a trace context from Go, a host call's span starts a trace of its own.
    assert failed.parent is None and failed.status.status_code == StatusCode.ERROR
    assert failed.context is not None and failed.context.trace_id != TRACE_ID


async def test_tracing_true_uses_the_global_provider(
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
) -> None:
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)  # set-once, so set for this test alone

    async def hello(info: HostCallInfo, call_next: HostCallNext) -> Any:
        return await call_next(info)

    async with fake_gotask(tracing=True, answer=sent, handlers={"Py.Hi": lambda: "hi"}) as (gt, peer):
        got = await gt.call("App.Hi")
        response = await host_call(peer, "Py.Hi", None, {"traceparent": got["metadata"]["traceparent"]})
        assert response.result == "hi"
    call, served = exporter.get_finished_spans()
    assert (call.kind, served.kind) == (SpanKind.CLIENT, SpanKind.SERVER)
    assert got["metadata"] == {"traceparent": traceparent(call)}
    assert served.parent is not None and call.context is not None
    assert served.parent.span_id == call.context.span_id


async def test_tracing_without_an_sdk_sends_no_metadata(autojump_clock: trio.testing.MockClock) -> None:
    async with fake_gotask(tracing=None, answer=sent) as (gt, _):
        assert gt._chain is not None  # the API is installed here: tracing is on, spans are no-ops
        assert await gt.call("App.Hi", "x") == {"params": "x", "metadata": None}


async def test_without_opentelemetry_tracing_is_off_or_an_import_error(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # import opentelemetry: ImportError
    assert tracing_interceptors(None) == (None, None)
    assert tracing_interceptors(False) == (None, None)
    async with fake_gotask(tracing=None) as (gt, _):
        assert gt._chain is None
    with pytest.raises(ImportError, match="pip install opentelemetry-api") as info:
        tracing_interceptors(True)
    assert str(info.value) == NO_OPENTELEMETRY


async def test_goridge_carries_no_metadata(
    provider: TracerProvider, exporter: InMemorySpanExporter, autojump_clock: trio.testing.MockClock
) -> None:
    """GoTask's format has no place for metadata: tracing still makes spans but sends no
    context, and metadata an interceptor sets fails the call before it is sent."""
    protocol = GoridgeProtocol(max_frame_size=1 << 20, max_inflight=1)
    with pytest.raises(GoTaskError, match="carries no metadata"):
        protocol.send_request("App.Hi", 1, None, None, {"authorization": "Bearer x"})
    assert protocol.in_flight == 0 and not protocol.has_data_to_send
    protocol.send_request("App.Hi", 1, None, None, {})
    assert protocol.in_flight == 1

    goridge = DIALECTS["goridge"]
    calls, _ = _chains(goridge, (), (), True)
    assert len(calls) == 1
    client, _ = tracing_interceptors(True, inject=goridge.carries_metadata, tracer_provider=provider)
    assert client is not None
    async with fake_gotask(interceptors=[client], answer=sent) as (gt, _):
        assert await gt.call("App.Hi") == {"params": None, "metadata": None}
    assert [span.name for span in exporter.get_finished_spans()] == ["App.Hi"]

    async def host(info: HostCallInfo, call_next: HostCallNext) -> Any:
        return await call_next(info)

    with pytest.raises(ValueError, match="goridge format has no host_interceptors"):
        _chains(goridge, (), [host], False)


async def test_a_streams_span_lasts_until_the_stream_ends(
    provider: TracerProvider, exporter: InMemorySpanExporter, autojump_clock: trio.testing.MockClock
) -> None:
    client, _ = tracing_interceptors(True, tracer_provider=provider)
    assert client is not None
    async with fake_gotask(interceptors=[client], answer=None) as (gt, peer):
        async with gt.stream("App.Count", 2) as items:
            request = await peer.requests.receive()
            await peer.item(request.msgid, 1)
            assert await items.receive() == 1
            assert exporter.get_finished_spans() == ()  # open: its span too
            await peer.reply(request.msgid, error={"type": "error", "message": "cursor died"})
            with pytest.raises(RemoteError, match="cursor died"):
                await items.receive()
            (span,) = exporter.get_finished_spans()
        async with gt.stream("App.Count", 2) as items:
            request = await peer.requests.receive()
        (_, closed_early) = exporter.get_finished_spans()
    assert (span.name, span.kind) == ("App.Count", SpanKind.CLIENT)
    assert dict(span.attributes or {})["gotask.stream"] is True
    assert request.meta is not None and request.meta["metadata"] == {"traceparent": traceparent(closed_early)}
    assert span.status.status_code == StatusCode.ERROR and "cursor died" in (span.status.description or "")
    assert closed_early.status.status_code == StatusCode.UNSET
