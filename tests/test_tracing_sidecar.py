"""One trace across the process boundary, over every transport: the sidecar of examples/tracing,
traced with go/otelgotask, and this client's tracing interceptors, each side with an in-memory
exporter. Every span must be the child of the one that caused it, both ways."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from timing import HANG

from trio_gotask import RemoteError, open_gotask
from trio_gotask._address import Transport
from trio_gotask._build import build_sidecar
from trio_gotask._tracing import tracing_interceptors

TRACING = Path(__file__).resolve().parent.parent / "examples" / "tracing"


@pytest.fixture(scope="module")
def traced_sidecar() -> str:
    return str(trio.run(build_sidecar, TRACING))


@pytest.fixture(params=["unix", "tcp", "pipe"])
def transport(request: pytest.FixtureRequest) -> Transport:
    return request.param  # type: ignore[no-any-return]


class Spans:
    """Python's finished spans and Go's, as one list of dicts keyed alike."""

    def __init__(self, python: InMemorySpanExporter, go: list[dict[str, Any]]) -> None:
        self.all = [
            {
                "side": "python",
                "name": span.name,
                "kind": span.kind.name,
                "trace_id": f"{span.context.trace_id:032x}",
                "span_id": f"{span.context.span_id:016x}",
                "parent_id": f"{span.parent.span_id:016x}" if span.parent else "",
                "failed": not span.status.is_ok,
            }
            for span in python.get_finished_spans()
        ] + [{**span, "side": "go", "kind": span["kind"].upper()} for span in go]

    def one(self, side: str, name: str, kind: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = [
            s for s in self.all if (s["side"], s["name"], s["kind"]) == (side, name, kind)
        ]
        assert len(found) == 1, (side, name, kind, self.all)
        return found[0]

    def children(self, parent: dict[str, Any]) -> list[dict[str, Any]]:
        return [s for s in self.all if s["parent_id"] == parent["span_id"]]


async def traced_run(
    sidecar: str, transport: Transport, items: list[str], prices: dict[str, float]
) -> tuple[Spans, Any]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    call_tracing, host_tracing = tracing_interceptors(True, tracer_provider=provider)
    assert call_tracing is not None and host_tracing is not None

    async def lookup(item: str) -> float:
        with tracer.start_as_current_span(f"read {item}"):
            await trio.lowlevel.checkpoint()
            return prices[item]

    outcome: Any
    with trio.fail_after(HANG):
        async with open_gotask(
            sidecar,
            transport=transport,
            handlers={"Prices.Lookup": lookup},
            interceptors=[call_tracing],
            host_interceptors=[host_tracing],
            tracing=False,
        ) as gt:
            with tracer.start_as_current_span("checkout"):
                try:
                    outcome = await gt.call("Shop.Checkout", items)
                except RemoteError as exc:
                    outcome = exc
            go_spans = await gt.call("Trace.Spans")
    spans = Spans(exporter, go_spans)
    spans.all = [s for s in spans.all if s["name"] != "Trace.Spans"]
    return spans, outcome


async def test_one_trace_both_ways(traced_sidecar: str, transport: Transport) -> None:
    spans, total = await traced_run(
        traced_sidecar, transport, ["apple", "pear"], {"apple": 0.5, "pear": 0.75}
    )
    assert total == 1.25
    assert len({s["trace_id"] for s in spans.all}) == 1, spans.all

    checkout = spans.one("python", "checkout", "INTERNAL")
    call = spans.one("python", "Shop.Checkout", "CLIENT")
    served = spans.one("go", "Shop.Checkout", "SERVER")
    assert call["parent_id"] == checkout["span_id"]
    assert served["parent_id"] == call["span_id"]  # Python -> Go
    assert [s["name"] for s in spans.children(served)] == ["price apple", "price pear"]
    for item in ("apple", "pear"):
        price = spans.one("go", f"price {item}", "INTERNAL")
        (host_call,) = spans.children(price)
        assert (host_call["side"], host_call["name"], host_call["kind"]) == ("go", "Prices.Lookup", "CLIENT")
        (handler,) = spans.children(host_call)  # Go -> Python
        assert (handler["side"], handler["name"], handler["kind"]) == ("python", "Prices.Lookup", "SERVER")
        (read,) = spans.children(handler)
        assert (read["side"], read["name"]) == ("python", f"read {item}")
    assert not any(s["failed"] for s in spans.all)


async def test_a_failure_marks_the_spans_on_both_sides(traced_sidecar: str, transport: Transport) -> None:
    spans, outcome = await traced_run(traced_sidecar, transport, ["durian"], {})
    assert isinstance(outcome, RemoteError) and "KeyError" in str(outcome)
    handler = spans.one("python", "Prices.Lookup", "SERVER")
    host_call = spans.one("go", "Prices.Lookup", "CLIENT")
    served = spans.one("go", "Shop.Checkout", "SERVER")
    call = spans.one("python", "Shop.Checkout", "CLIENT")
    assert handler["parent_id"] == host_call["span_id"]
    assert all(s["failed"] for s in (handler, host_call, served, call))
