// Package otelgotask traces a gotask sidecar with OpenTelemetry: a span for
// every call the sidecar serves, child of the span that made the call in
// Python, and a span for every host call it makes, parent of the span the
// Python handler runs in.
//
// The trace context travels in the calls' metadata as W3C Trace Context
// (docs/protocol.md, "Application metadata"); the Python client sends and reads
// it when the opentelemetry-api package is installed. Install both
// interceptors on the server before it serves:
//
//	otelgotask.Install(gotask.DefaultServer)
//	gotask.Register(new(App))
//	gotask.Run()
//
// Spans go to the global TracerProvider unless WithTracerProvider says
// otherwise; set one up (otel.SetTracerProvider) with the exporter of your
// choice. The context is carried with W3C Trace Context and Baggage whatever
// the global propagator is, since that is what the other side speaks;
// WithPropagator replaces them.
//
// This is a module of its own so that a sidecar without tracing does not
// depend on OpenTelemetry.
package otelgotask

import (
	"context"
	"strings"

	"github.com/trio-gotask/trio-gotask/go/gotask"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of the tracer the spans come from.
const ScopeName = "github.com/trio-gotask/trio-gotask/go/otelgotask"

// Option configures the interceptors.
type Option func(*config)

type config struct {
	provider   trace.TracerProvider
	propagator propagation.TextMapPropagator
}

// WithTracerProvider makes the spans with tp instead of the global provider.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.provider = tp }
}

// WithPropagator reads and writes the trace context in the metadata with p
// instead of W3C Trace Context and Baggage.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(c *config) { c.propagator = p }
}

func newConfig(opts []Option) *config {
	c := &config{}
	for _, o := range opts {
		o(c)
	}
	if c.propagator == nil {
		c.propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	return c
}

// tracer is the provider's tracer, looked up at each span so that a global
// provider set after Install is the one used.
func (c *config) tracer() trace.Tracer {
	if c.provider != nil {
		return c.provider.Tracer(ScopeName)
	}
	return otel.GetTracerProvider().Tracer(ScopeName)
}

// Install adds Interceptor and HostInterceptor to srv, outside the
// interceptors it has already, so that their spans cover those too.
func Install(srv *gotask.Server, opts ...Option) {
	srv.Interceptors = append([]gotask.Interceptor{Interceptor(opts...)}, srv.Interceptors...)
	srv.HostInterceptors = append([]gotask.HostInterceptor{HostInterceptor(opts...)}, srv.HostInterceptors...)
}

// Interceptor starts a server span for each call, named after its method,
// whose parent is the span the trace context in the call's metadata names
// (none: a new trace). The method runs with the span in its context, so
// spans it starts, and host calls it makes, are its children. An error the
// method returns marks the span as failed.
func Interceptor(opts ...Option) gotask.Interceptor {
	c := newConfig(opts)
	return func(ctx context.Context, info *gotask.CallInfo, next func(context.Context) error) (err error) {
		ctx = c.propagator.Extract(ctx, propagation.MapCarrier(info.Metadata))
		ctx, span := c.tracer().Start(ctx, info.Method,
			trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attributes(info.Method, info.Stream)...))
		defer func() { end(span, err) }()
		return next(ctx)
	}
}

// HostInterceptor starts a client span for each host call, named after its
// method, as a child of the span in the caller's context, and sends its
// trace context in the host call's metadata.
func HostInterceptor(opts ...Option) gotask.HostInterceptor {
	c := newConfig(opts)
	return func(ctx context.Context, info *gotask.HostCallInfo, next func(context.Context) error) (err error) {
		ctx, span := c.tracer().Start(ctx, info.Method,
			trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attributes(info.Method, false)...))
		defer func() { end(span, err) }()
		c.propagator.Inject(ctx, propagation.MapCarrier(info.Metadata))
		return next(ctx)
	}
}

// attributes are the RPC semantic conventions' attributes of a method.
func attributes(method string, stream bool) []attribute.KeyValue {
	service, name, _ := strings.Cut(method, ".")
	kv := []attribute.KeyValue{
		attribute.String("rpc.system", "gotask"),
		attribute.String("rpc.service", service),
		attribute.String("rpc.method", name),
	}
	if stream {
		kv = append(kv, attribute.Bool("gotask.stream", true))
	}
	return kv
}

// end records err, if any, on span and ends it.
func end(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
