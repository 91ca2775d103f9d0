"""One trace across Python and Go: python examples/tracing/tracing.py [unix|tcp|pipe]

A Trio program checks out a cart in a span of its own. The call to Go, the Go method, the Go
method's own spans, its host calls back into Python and the Python handler that answers them all
land in that one trace, each span the child of the one that caused it: the W3C trace context travels
in the calls' metadata both ways (docs/observability.md).

Both sides keep their spans in memory here, so that the program can print the trace as a tree; a
real application exports them to a collector (an OTLP exporter on each side) instead. Needs
``pip install opentelemetry-sdk``; the folder is built with ``go build`` on first use.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

import trio
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from trio_gotask import open_gotask

SIDECAR = Path(__file__).resolve().parent
PRICES = {"apple": 0.5, "pear": 0.75}


async def lookup(item: str) -> float:
    with trace.get_tracer("prices").start_as_current_span(f"read {item}"):
        await trio.lowlevel.checkpoint()  # where a real handler would query a database
        return PRICES[item]


def python_spans(exporter: InMemorySpanExporter) -> list[dict[str, Any]]:
    return [
        {
            "name": span.name,
            "kind": span.kind.name.lower(),
            "trace_id": f"{span.context.trace_id:032x}",
            "span_id": f"{span.context.span_id:016x}",
            "parent_id": f"{span.parent.span_id:016x}" if span.parent else "",
            "side": "python",
        }
        for span in exporter.get_finished_spans()
    ]


def print_tree(spans: list[dict[str, Any]]) -> None:
    """Each span under its parent, Go's and Python's together."""
    children: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in spans:
        children[span["parent_id"]].append(span)

    def show(span: dict[str, Any], depth: int) -> None:
        print(f"{'  ' * depth}{span['name']} ({span['side']}, {span['kind']})")
        for child in children[span["span_id"]]:
            show(child, depth + 1)

    for root in children[""]:
        show(root, 0)
    print(f"spans: {len(spans)}, traces: {len({span['trace_id'] for span in spans})}")


async def main(transport: Literal["unix", "tcp", "pipe"]) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)

    async with open_gotask(SIDECAR, transport=transport, handlers={"Prices.Lookup": lookup}) as gt:
        with trace.get_tracer("shop").start_as_current_span("checkout"):
            total = await gt.call("Shop.Checkout", ["apple", "pear"])
        print(f"total: {total:.2f}")
        go_spans = await gt.call("Trace.Spans")
    spans = python_spans(exporter) + [{**span, "side": "go"} for span in go_spans]
    # Trace.Spans, the call that fetched Go's spans, is a trace of its own: leave it out.
    print_tree([span for span in spans if span["name"] != "Trace.Spans"])


if __name__ == "__main__":
    transports: dict[str, Literal["unix", "tcp", "pipe"]] = {"unix": "unix", "tcp": "tcp", "pipe": "pipe"}
    transport = sys.argv[1] if len(sys.argv) > 1 else "unix"
    if transport not in transports:
        sys.exit(f"usage: {sys.argv[0]} [unix|tcp|pipe]")
    trio.run(main, transports[transport])
