package otelgotask_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"reflect"
	"testing"
	"time"

	"github.com/trio-gotask/trio-gotask/go/gotask"
	"github.com/trio-gotask/trio-gotask/go/otelgotask"
	"github.com/vmihailenco/msgpack/v5"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// The caller's span, as the Python client would send it.
const (
	callerTrace = "0af7651916cd43dd8448eb211c80319c"
	callerSpan  = "b7ad6b7169203331"
	traceparent = "00-" + callerTrace + "-" + callerSpan + "-01"
)

type Svc struct{ srv *gotask.Server }

// Work calls the host method Host.Echo with arg and replies what it answered.
func (s *Svc) Work(ctx context.Context, arg string, reply *string) error {
	return s.srv.CallHost(ctx, "Host.Echo", arg, reply)
}

func (s *Svc) Fail(arg string, reply *string) error { return errors.New("no " + arg) }

// client is the Python client's side of one connection, as little of it as
// these tests need: a $hello taking host calls, requests, and host calls
// answered with their argument.
type client struct {
	t    *testing.T
	conn net.Conn
	// hostMeta is the meta of each host call received.
	hostMeta []map[string]any
}

func newClient(t *testing.T, srv *gotask.Server) *client {
	t.Helper()
	// A socket, not net.Pipe: both sides write their $hello first.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		if theirs, err := l.Accept(); err == nil {
			srv.ServeConn(theirs)
		}
	}()
	ours, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ours.Close() })
	if err := ours.SetDeadline(time.Now().Add(time.Minute)); err != nil { // a hang guard
		t.Fatal(err)
	}
	c := &client{t: t, conn: ours}
	c.send([]any{2, "$hello", map[string]any{"version": 2, "max_host_calls": 4}})
	return c
}

func (c *client) send(msg []any) {
	c.t.Helper()
	payload, err := msgpack.Marshal(msg)
	if err != nil {
		c.t.Fatal(err)
	}
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(payload)))
	if _, err := c.conn.Write(append(frame, payload...)); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) receive() []any {
	c.t.Helper()
	var size [4]byte
	if _, err := io.ReadFull(c.conn, size[:]); err != nil {
		c.t.Fatal(err)
	}
	payload := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(c.conn, payload); err != nil {
		c.t.Fatal(err)
	}
	var msg []any
	dec := msgpack.NewDecoder(bytes.NewReader(payload))
	if err := dec.Decode(&msg); err != nil {
		c.t.Fatal(err)
	}
	return msg
}

// call sends a request with meta and returns the response's error and
// result, answering the host calls that come first.
func (c *client) call(method string, arg any, meta map[string]any) (any, any) {
	c.t.Helper()
	c.send([]any{0, 1, method, arg, meta})
	for {
		msg := c.receive()
		switch reflect.ValueOf(msg[0]).Convert(reflect.TypeOf(0)).Int() {
		case 0: // a host call
			meta, _ := msg[4].(map[string]any)
			c.hostMeta = append(c.hostMeta, meta)
			c.send([]any{1, msg[1], nil, msg[3]})
		case 1:
			return msg[2], msg[3]
		}
	}
}

func setup(t *testing.T) (*client, *tracetest.SpanRecorder) {
	recorder := tracetest.NewSpanRecorder()
	provider := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(recorder))
	srv := gotask.NewServer()
	if err := srv.Register(&Svc{srv: srv}); err != nil {
		t.Fatal(err)
	}
	otelgotask.Install(srv, otelgotask.WithTracerProvider(provider))
	return newClient(t, srv), recorder
}

func byName(t *testing.T, spans []sdktrace.ReadOnlySpan, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	for _, s := range spans {
		if s.Name() == name {
			return s
		}
	}
	t.Fatalf("no span %q among %d", name, len(spans))
	return nil
}

func TestTraceCrossesBothWays(t *testing.T) {
	c, recorder := setup(t)
	meta := map[string]any{"metadata": map[string]any{"traceparent": traceparent}}
	if errMap, result := c.call("Svc.Work", "hi", meta); errMap != nil || result != "hi" {
		t.Fatalf("got %v, %v", errMap, result)
	}
	spans := recorder.Ended()
	server := byName(t, spans, "Svc.Work")
	host := byName(t, spans, "Host.Echo")

	if server.SpanKind() != trace.SpanKindServer || host.SpanKind() != trace.SpanKindClient {
		t.Errorf("kinds: %v, %v", server.SpanKind(), host.SpanKind())
	}
	if got := server.Parent(); got.TraceID().String() != callerTrace || got.SpanID().String() != callerSpan || !got.IsRemote() {
		t.Errorf("the server span's parent is %v, not the caller's span", got)
	}
	if host.Parent().SpanID() != server.SpanContext().SpanID() || host.SpanContext().TraceID().String() != callerTrace {
		t.Errorf("the host call's span is not the server span's child")
	}
	if len(c.hostMeta) != 1 {
		t.Fatalf("%d host calls", len(c.hostMeta))
	}
	sent, _ := c.hostMeta[0]["metadata"].(map[string]any)
	want := "00-" + callerTrace + "-" + host.SpanContext().SpanID().String() + "-01"
	if sent["traceparent"] != want {
		t.Errorf("the host call carried traceparent %v, want %v", sent["traceparent"], want)
	}
	attrs := map[string]string{}
	for _, kv := range server.Attributes() {
		attrs[string(kv.Key)] = kv.Value.Emit()
	}
	if attrs["rpc.system"] != "gotask" || attrs["rpc.service"] != "Svc" || attrs["rpc.method"] != "Work" {
		t.Errorf("attributes %v", attrs)
	}
}

func TestCallWithoutTraceContextStartsATrace(t *testing.T) {
	c, recorder := setup(t)
	if errMap, _ := c.call("Svc.Work", "hi", nil); errMap != nil {
		t.Fatal(errMap)
	}
	server := byName(t, recorder.Ended(), "Svc.Work")
	if server.Parent().IsValid() {
		t.Errorf("a call without a traceparent has parent %v", server.Parent())
	}
}

func TestFailedCallMarksItsSpan(t *testing.T) {
	c, recorder := setup(t)
	if errMap, _ := c.call("Svc.Fail", "luck", nil); errMap == nil {
		t.Fatal("Svc.Fail succeeded")
	}
	span := byName(t, recorder.Ended(), "Svc.Fail")
	if span.Status().Code != codes.Error || span.Status().Description != "no luck" {
		t.Errorf("status %+v", span.Status())
	}
	if len(span.Events()) != 1 || span.Events()[0].Name != "exception" {
		t.Errorf("events %+v", span.Events())
	}
}

// OpenTelemetry Python sets the random flag of W3C Trace Context Level 2
// (flags 03); an OpenTelemetry Go before v1.42 refused such a traceparent and
// started a new trace.
func TestTraceContextLevelTwoFlags(t *testing.T) {
	c, recorder := setup(t)
	meta := map[string]any{"metadata": map[string]any{"traceparent": "00-" + callerTrace + "-" + callerSpan + "-03"}}
	if errMap, _ := c.call("Svc.Work", "hi", meta); errMap != nil {
		t.Fatal(errMap)
	}
	if got := byName(t, recorder.Ended(), "Svc.Work").Parent(); got.SpanID().String() != callerSpan {
		t.Errorf("the server span's parent is %v, not the caller's span", got)
	}
}
