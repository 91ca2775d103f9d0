// The Go side of examples/tracing: a sidecar traced with OpenTelemetry, whose
// spans join the Python caller's trace. Run it with:
// python examples/tracing/tracing.py
package main

import (
	"context"
	"log"

	"github.com/trio-gotask/trio-gotask/go/gotask"
	"github.com/trio-gotask/trio-gotask/go/otelgotask"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// Shop checks out carts with prices only the Python application knows.
type Shop struct {
	tracer trace.Tracer
}

// Checkout prices each item through the Python handler Prices.Lookup, each
// in a span of its own, and returns the sum.
func (s *Shop) Checkout(ctx context.Context, items []string, total *float64) error {
	for _, item := range items {
		price, err := s.price(ctx, item)
		if err != nil {
			return err
		}
		*total += price
	}
	return nil
}

func (s *Shop) price(ctx context.Context, item string) (price float64, err error) {
	ctx, span := s.tracer.Start(ctx, "price "+item)
	defer span.End()
	err = gotask.CallHost(ctx, "Prices.Lookup", item, &price)
	return price, err
}

// Span is a span the sidecar ended, as Trace.Spans reports it.
type Span struct {
	Name     string `msgpack:"name"`
	Kind     string `msgpack:"kind"`
	TraceID  string `msgpack:"trace_id"`
	SpanID   string `msgpack:"span_id"`
	ParentID string `msgpack:"parent_id"` // empty for a root span
	Failed   bool   `msgpack:"failed"`
}

// Trace hands the sidecar's spans to the Python side, which prints them
// beside its own. A real sidecar sends them to a collector instead: replace
// the recorder in main with an OTLP exporter.
type Trace struct {
	recorder *tracetest.SpanRecorder
}

// Spans returns the spans ended so far, in the order they ended.
func (t *Trace) Spans(_ struct{}, spans *[]Span) error {
	for _, s := range t.recorder.Ended() {
		span := Span{
			Name:    s.Name(),
			Kind:    s.SpanKind().String(),
			TraceID: s.SpanContext().TraceID().String(),
			SpanID:  s.SpanContext().SpanID().String(),
			Failed:  s.Status().Code.String() == "Error",
		}
		if s.Parent().IsValid() {
			span.ParentID = s.Parent().SpanID().String()
		}
		*spans = append(*spans, span)
	}
	return nil
}

func main() {
	recorder := tracetest.NewSpanRecorder()
	provider := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(recorder))
	otel.SetTracerProvider(provider)
	otelgotask.Install(gotask.DefaultServer)
	for _, service := range []any{&Shop{tracer: provider.Tracer("shop")}, &Trace{recorder: recorder}} {
		if err := gotask.Register(service); err != nil {
			log.Fatal(err)
		}
	}
	gotask.Run()
}
