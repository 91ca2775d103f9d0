"""Application metadata against the real example sidecar (go/example), over every transport:
what an interceptor sets, and tracing's trace context, arrive in Go (``App.Metadata`` answers
with ``gotask.MetadataFrom(ctx)``)."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from standalone import standalone

from trio_gotask import CallInfo, CallNext, connect_gotask, open_gotask
from trio_gotask._address import Transport
from trio_gotask._tracing import tracing_interceptors

TRANSPORTS = ["unix", "tcp", "pipe"]


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> Transport:
    return request.param  # type: ignore[no-any-return]


async def tenant(info: CallInfo, call_next: CallNext) -> Any:
    info.metadata["tenant"] = "acme"
    info.metadata["Authorization"] = "Bearer héllo ✓"  # case and any UTF-8 kept as sent
    return await call_next(info)


async def test_metadata_an_interceptor_sets_arrives_in_go(sidecar: str, transport: Transport) -> None:
    async with open_gotask(sidecar, transport=transport, interceptors=[tenant], tracing=False) as gt:
        assert await gt.call("App.Metadata") == {"tenant": "acme", "Authorization": "Bearer héllo ✓"}
    async with open_gotask(sidecar, transport=transport, tracing=False) as gt:
        assert await gt.call("App.Metadata") in (None, {})  # none sent: Go sees none


async def test_go_receives_the_trace_context_of_the_client_span(sidecar: str, transport: Transport) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    client, _ = tracing_interceptors(True, tracer_provider=provider)
    assert client is not None
    async with open_gotask(sidecar, transport=transport, interceptors=[client, tenant], tracing=False) as gt:
        got = await gt.call("App.Metadata")
    (span,) = exporter.get_finished_spans()
    assert span.name == "App.Metadata" and span.context is not None
    context = span.context
    traceparent = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    assert got == {"traceparent": traceparent, "tenant": "acme", "Authorization": "Bearer héllo ✓"}


async def test_connect_gotask_sends_metadata_too(sidecar: str) -> None:
    async with (
        standalone(sidecar, "-address", "127.0.0.1:0") as running,
        connect_gotask(running.address, interceptors=[tenant], tracing=False) as gt,
    ):
        assert (await gt.call("App.Metadata"))["tenant"] == "acme"


async def test_a_stream_carries_the_metadata_its_interceptors_set(sidecar: str, transport: Transport) -> None:
    async with (
        open_gotask(sidecar, transport=transport, interceptors=[tenant], tracing=False) as gt,
        gt.stream("App.MetadataEntries") as entries,
    ):
        assert [entry async for entry in entries] == ["Authorization=Bearer héllo ✓", "tenant=acme"]
