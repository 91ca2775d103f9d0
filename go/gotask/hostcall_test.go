package gotask

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trio-gotask/trio-gotask/go/gotask/internal/scan"
)

// Host is a service whose methods make host calls.
type Host struct {
	errs chan error // Record's CallHost errors
}

type hostArgs struct {
	Method string
	Arg    any
}

func (h *Host) Ping(_ any, r *int) error { *r = 1; return nil }

func (h *Host) Blob(n int, r *[]byte) error { *r = make([]byte, n); return nil }

// Call calls the host with the method's own context and returns what it got.
func (h *Host) Call(ctx context.Context, a hostArgs, r *any) error {
	return CallHost(ctx, a.Method, a.Arg, r)
}

// Record calls the host like Call, and also sends the error to h.errs.
func (h *Host) Record(ctx context.Context, a hostArgs, r *any) error {
	err := CallHost(ctx, a.Method, a.Arg, r)
	h.errs <- err
	return err
}

// Nest returns Arg at Depth 0, else what the host's Py.Nest returns for
// Depth-1 (the test client's Py.Nest calls Host.Nest again).
func (h *Host) Nest(ctx context.Context, a struct {
	Depth int
	Arg   any
}, r *any) error {
	if a.Depth == 0 {
		*r = a.Arg
		return nil
	}
	return CallHost(ctx, "Py.Nest", map[string]any{"Depth": a.Depth - 1, "Arg": a.Arg}, r)
}

func newHostServer(t *testing.T) (*Server, *Host, *syncBuffer) {
	t.Helper()
	srv := NewServer()
	logBuf := new(syncBuffer)
	srv.ErrorLog = log.New(logBuf, "gotask: ", 0)
	h := &Host{errs: make(chan error, 16)}
	if err := srv.Register(h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return srv, h, logBuf
}

// serveHost serves srv on an in-memory connection whose client sends hello
// (nil: none) as its $hello, and returns the client, whose inbox gets the
// host calls, once the sidecar has read the $hello; done is closed when
// ServeConn returns.
func serveHost(t *testing.T, srv *Server, hello map[string]any) (c *testClient, done chan struct{}) {
	t.Helper()
	a, b := net.Pipe()
	done = make(chan struct{})
	go func() {
		srv.ServeConn(b)
		close(done)
	}()
	c = startTestClient(t, a, make(chan *message, 64))
	if hello != nil {
		c.sendHello(hello)
	}
	c.ping()
	return c, done
}

// sendHello sends the client's $hello, with the fields of hello.
func (c *testClient) sendHello(hello map[string]any) {
	c.t.Helper()
	hello["version"] = ProtocolVersion
	payload, err := marshalCompact([]any{typeNotification, "$hello", hello})
	if err != nil {
		c.t.Fatal(err)
	}
	if err := c.writeFrame(payload); err != nil {
		c.t.Fatal(err)
	}
}

// ping makes a round trip: what the sidecar read or queued before is done.
func (c *testClient) ping() {
	c.t.Helper()
	var n int
	if err := c.call("Host.Ping", nil, &n); err != nil || n != 1 {
		c.t.Fatalf("ping: %v %v", n, err)
	}
}

// next returns the next host call or notification from the sidecar.
func (c *testClient) next() *message {
	c.t.Helper()
	select {
	case m := <-c.inbox:
		return m
	case <-c.done:
		c.t.Fatalf("connection closed while waiting for a host call: %v", c.err)
	case <-time.After(hangGuard):
		c.t.Fatal("timed out waiting for a host call")
	}
	return nil
}

// respond answers a host call.
func (c *testClient) respond(msgid uint32, werr map[string]any, result any) {
	c.t.Helper()
	var e any
	if werr != nil {
		e = werr
	}
	payload, err := marshalCompact([]any{typeResponse, msgid, e, result})
	if err != nil {
		c.t.Fatal(err)
	}
	if err := c.writeFrame(payload); err != nil {
		c.t.Fatal(err)
	}
}

// answer answers every host call by fn until stop is closed.
func (c *testClient) answer(stop chan struct{}, fn func(m *message) (map[string]any, any)) {
	go func() {
		for {
			select {
			case m := <-c.inbox:
				if m.typ == typeRequest {
					werr, res := fn(m)
					c.respond(m.msgid, werr, res)
				}
			case <-stop:
				return
			case <-c.done:
				return
			}
		}
	}()
}

func decoded[T any](t *testing.T, raw []byte) T {
	t.Helper()
	var v T
	if err := decodeValue(raw, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func wantRequest(t *testing.T, m *message, method string) {
	t.Helper()
	if m.typ != typeRequest || m.method != method {
		t.Fatalf("got %+v, want a request for %s", m, method)
	}
}

func TestHostCallRoundTrip(t *testing.T) {
	srv, _, _ := newHostServer(t)
	c, _ := serveHost(t, srv, map[string]any{"max_host_calls": 4})

	_, ch := c.start("Host.Call", map[string]any{"Method": "Py.Upper", "Arg": "abc"}, nil)
	m := c.next()
	wantRequest(t, m, "Py.Upper")
	if got := decoded[string](t, m.params); got != "abc" {
		t.Errorf("params %q", got)
	}
	if m.meta != nil || m.hasTimeout {
		t.Errorf("meta %x without a deadline, want nil", m.meta)
	}
	c.respond(m.msgid, nil, "ABC")
	var s string
	if err := c.wait(ch, &s); err != nil || s != "ABC" {
		t.Fatalf("Host.Call: %q %v", s, err)
	}

	// Outside a call, Server.CallHost finds the connection; the reply is
	// decoded by the type of the pointer.
	errc := make(chan error, 1)
	var reply struct {
		N int `msgpack:"n"`
	}
	go func() { errc <- srv.CallHost(context.Background(), "Py.Struct", nil, &reply) }()
	m = c.next()
	wantRequest(t, m, "Py.Struct")
	c.respond(m.msgid, nil, map[string]any{"n": 7})
	if err := <-errc; err != nil || reply.N != 7 {
		t.Fatalf("struct reply: %+v %v", reply, err)
	}

	// A reply the pointer cannot take fails that call only.
	var n int8
	go func() { errc <- srv.CallHost(context.Background(), "Py.Int", nil, &n) }()
	m = c.next()
	c.respond(m.msgid, nil, 300)
	if err := <-errc; err == nil || !strings.Contains(err.Error(), "Py.Int") || !strings.Contains(err.Error(), "int8") {
		t.Fatalf("300 into an int8: %v", err)
	}
	c.ping()
}

func TestHostCallError(t *testing.T) {
	srv, _, _ := newHostServer(t)
	c, _ := serveHost(t, srv, map[string]any{"max_host_calls": 4})
	errc := make(chan error, 1)
	go func() { errc <- srv.CallHost(context.Background(), "Py.Upper", 1, nil) }()
	trace := "  File \"app.py\", line 3, in upper\nValueError: bad"
	c.respond(c.next().msgid, map[string]any{"type": "error", "message": "ValueError: bad", "stack": trace}, nil)
	err := <-errc
	var he *HostError
	if !errors.As(err, &he) || *he != (HostError{Method: "Py.Upper", Type: "error", Message: "ValueError: bad", Stack: trace}) {
		t.Fatalf("got %#v, want a HostError", err)
	}
	if err.Error() != "Py.Upper: ValueError: bad" {
		t.Errorf("Error() = %q", err.Error())
	}

	go func() { errc <- srv.CallHost(context.Background(), "Py.Nope", 1, nil) }()
	c.respond(c.next().msgid, map[string]any{"type": "not_found", "message": "no handler Py.Nope"}, nil)
	if err := <-errc; !errors.As(err, &he) || he.Type != "not_found" || err.Error() != "Py.Nope: not_found: no handler Py.Nope" {
		t.Fatalf("not_found: %v", err)
	}

	// A method that returns the HostError as is: the client sees its text.
	_, ch := c.start("Host.Call", map[string]any{"Method": "Py.Upper", "Arg": 1}, nil)
	c.respond(c.next().msgid, map[string]any{"type": "error", "message": "ValueError: bad"}, nil)
	if err := c.wait(ch, nil); errType(err) != "error" || !strings.Contains(err.Error(), "Py.Upper: ValueError: bad") {
		t.Fatalf("through a method: %v", err)
	}
}

func TestHostCallNoHost(t *testing.T) {
	if err := NewServer().CallHost(context.Background(), "Py.X", nil, nil); err != ErrNoHost {
		t.Fatalf("no connection: %v, want ErrNoHost", err)
	}
	for _, hello := range []map[string]any{
		nil, // no $hello at all
		{"max_frame_size": 1024},
		{"max_frame_size": 1024, "max_host_calls": 0},
		{"max_frame_size": 1024, "max_host_calls": -1},
		{"max_frame_size": 1024, "max_host_calls": "8"},
		{"max_frame_size": 1024, "max_host_calls": 1.5},
	} {
		srv, _, _ := newHostServer(t)
		c, _ := serveHost(t, srv, hello)
		if err := srv.CallHost(context.Background(), "Py.X", nil, nil); err != ErrNoHost {
			t.Errorf("%v: %v, want ErrNoHost", hello, err)
		}
		err := c.call("Host.Call", map[string]any{"Method": "Py.X"}, nil)
		if !strings.Contains(err.Error(), ErrNoHost.Error()) {
			t.Errorf("%v: from a method: %v", hello, err)
		}
		// A max_host_calls that is not one leaves the frame limit alone.
		if err := c.call("Host.Blob", 2000, nil); hello != nil && errType(err) != "too_large" {
			t.Errorf("%v: a 2000-byte reply: %v, want too_large", hello, err)
		}
		if len(c.inbox) != 0 {
			t.Errorf("%v: the sidecar sent %+v", hello, <-c.inbox)
		}
	}
}

func TestHostCallLimit(t *testing.T) {
	srv, _, _ := newHostServer(t)
	c, _ := serveHost(t, srv, map[string]any{"max_host_calls": 2})
	const n = 10
	results := make([]int, n)
	errs := make([]error, n)
	var started, finished sync.WaitGroup
	for i := range n {
		started.Add(1)
		finished.Add(1)
		go func() {
			defer finished.Done()
			started.Done()
			errs[i] = srv.CallHost(context.Background(), "Py.Times10", i, &results[i])
		}()
	}
	started.Wait()
	var outstanding []*message
	for received, answered := 0, 0; answered < n; answered++ {
		for received < n && len(outstanding) < 2 {
			m := c.next()
			wantRequest(t, m, "Py.Times10")
			outstanding = append(outstanding, m)
			received++
		}
		// Anything the sidecar sent before the ping's reply is in the inbox.
		c.ping()
		if len(c.inbox) != 0 {
			t.Fatalf("a third host call in flight (max_host_calls is 2): %+v", <-c.inbox)
		}
		var m *message
		m, outstanding = outstanding[0], outstanding[1:]
		c.respond(m.msgid, nil, 10*decoded[int](t, m.params))
	}
	finished.Wait()
	for i := range n {
		if errs[i] != nil || results[i] != 10*i {
			t.Errorf("call %d: %d %v", i, results[i], errs[i])
		}
	}
}

func TestHostCallCancel(t *testing.T) {
	srv, _, logBuf := newHostServer(t)
	c, done := serveHost(t, srv, map[string]any{"max_host_calls": 2})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- srv.CallHost(ctx, "Py.Slow", 1, nil) }()
	first := c.next()
	wantRequest(t, first, "Py.Slow")
	cancel()
	if err := <-errc; err != context.Canceled {
		t.Fatalf("cancelled call: %v, want context.Canceled", err)
	}
	m := c.next()
	if cur := (scan.Cursor{B: m.params}); m.typ != typeNotification || m.method != "$cancel" {
		t.Fatalf("got %+v, want $cancel", m)
	} else if id, err := readMsgid(&cur); err != nil || id != first.msgid {
		t.Fatalf("$cancel of %d, want %d", id, first.msgid)
	}

	// The cancelled msgid stays reserved until its late reply comes.
	go func() { errc <- srv.CallHost(context.Background(), "Py.Fast", 2, nil) }()
	second := c.next()
	if second.msgid == first.msgid {
		t.Fatalf("msgid %d reused while its late reply may still come", first.msgid)
	}
	c.respond(second.msgid, nil, nil)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	c.respond(first.msgid, map[string]any{"type": "cancelled", "message": "cancelled"}, nil)
	c.ping() // the late reply was dropped, and the connection lives

	// Once it came, the msgid is free: another reply to it is malformed.
	c.respond(first.msgid, nil, nil)
	<-done
	if !strings.Contains(logBuf.String(), "bad_message") {
		t.Errorf("log %q, want a bad_message", logBuf.String())
	}
}

func TestHostCallUnknownResponse(t *testing.T) {
	for _, hello := range []map[string]any{nil, {"max_host_calls": 2}} {
		srv, _, logBuf := newHostServer(t)
		c, done := serveHost(t, srv, hello)
		c.respond(42, nil, 1)
		<-done
		<-c.done
		if got := logBuf.String(); !strings.Contains(got, "bad_message") {
			t.Errorf("%v: log %q, want bad_message", hello, got)
		}
	}
}

func TestHostCallConnectionCloses(t *testing.T) {
	srv, h, _ := newHostServer(t)
	c, done := serveHost(t, srv, map[string]any{"max_host_calls": 1})
	c.start("Host.Record", map[string]any{"Method": "Py.A"}, nil)
	wantRequest(t, c.next(), "Py.A")
	c.start("Host.Record", map[string]any{"Method": "Py.B"}, nil) // waits for the slot, or finds the connection gone
	errc := make(chan error, 1)
	go func() { errc <- srv.CallHost(context.Background(), "Py.C", nil, nil) }()
	c.rwc.Close()
	for range 2 {
		if err := <-h.errs; !errors.Is(err, ErrHostGone) {
			t.Errorf("a method's host call: %v, want ErrHostGone", err)
		}
	}
	// Py.C started before or after the connection ended.
	if err := <-errc; !errors.Is(err, ErrHostGone) && err != ErrNoHost {
		t.Errorf("a background host call: %v", err)
	}
	<-done
	if err := srv.CallHost(context.Background(), "Py.D", nil, nil); err != ErrNoHost {
		t.Errorf("after the connection closed: %v, want ErrNoHost", err)
	}
}

func TestHostCallDeadline(t *testing.T) {
	srv, _, _ := newHostServer(t)
	c, _ := serveHost(t, srv, map[string]any{"max_host_calls": 1})
	// Deadlines far enough away that no machine reaches them during the test.
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- srv.CallHost(ctx, "Py.X", nil, nil) }()
	m := c.next()
	if !m.hasTimeout || m.timeout <= 0 || m.timeout > 3600 {
		t.Errorf("meta %x: timeout %v (%v), want one in (0, 3600]", m.meta, m.timeout, m.hasTimeout)
	}
	c.respond(m.msgid, nil, nil)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}

	// A method's deadline reaches the host call it makes.
	_, ch := c.start("Host.Call", map[string]any{"Method": "Py.Y"}, map[string]any{"timeout": 1800})
	m = c.next()
	if !m.hasTimeout || m.timeout <= 0 || m.timeout > 1800 {
		t.Errorf("meta %x: timeout %v (%v), want one in (0, 1800]", m.meta, m.timeout, m.hasTimeout)
	}
	c.respond(m.msgid, nil, nil)
	if err := c.wait(ch, nil); err != nil {
		t.Fatal(err)
	}
}

func TestHostCallNested(t *testing.T) {
	srv, _, _ := newHostServer(t)
	c, _ := serveHost(t, srv, map[string]any{"max_host_calls": 4})
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case m := <-c.inbox:
				// Py.Nest calls Host.Nest back, answering while others wait.
				go func() {
					var r any
					if err := c.call("Host.Nest", decoded[map[string]any](t, m.params), &r); err != nil {
						c.respond(m.msgid, map[string]any{"type": "error", "message": err.Error()}, nil)
						return
					}
					c.respond(m.msgid, nil, r)
				}()
			case <-stop:
				return
			}
		}
	}()
	var r string
	if err := c.call("Host.Nest", map[string]any{"Depth": 4, "Arg": "deep"}, &r); err != nil || r != "deep" {
		t.Fatalf("nested: %q %v", r, err)
	}
}

func TestHostCallRefusedBeforeSending(t *testing.T) {
	srv, _, _ := newHostServer(t)
	c, _ := serveHost(t, srv, map[string]any{"max_host_calls": 1, "max_frame_size": 1024})
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	for _, tc := range []struct {
		arg, reply any
		want       string
	}{
		{make([]byte, 2000), nil, "the client's frame limit is 1024"},
		{make(chan int), nil, "cannot be encoded"},
		{time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC), nil, "outside years 1-9999"},
		{1, 5, "reply must be a non-nil pointer"},
		{1, (*int)(nil), "reply must be a non-nil pointer"},
	} {
		// Twice, with one slot: a refused call gives its slot back.
		for range 2 {
			if err := srv.CallHost(ctx, "Py.X", tc.arg, tc.reply); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%T: %v, want %q", tc.arg, err, tc.want)
			}
		}
	}
	c.ping()
	if len(c.inbox) != 0 {
		t.Fatalf("sent %+v", <-c.inbox)
	}
	stop := make(chan struct{})
	defer close(stop)
	c.answer(stop, func(*message) (map[string]any, any) { return nil, "ok" })
	var s string
	if err := srv.CallHost(ctx, "Py.X", make([]byte, 900), &s); err != nil || s != "ok" {
		t.Fatalf("a call within the limit: %q %v", s, err)
	}
}

func TestHostCallPicksHostConnection(t *testing.T) {
	srv, _, _ := newHostServer(t)
	plain, _ := serveHost(t, srv, nil)
	host, _ := serveHost(t, srv, map[string]any{"max_host_calls": 1})
	stop := make(chan struct{})
	defer close(stop)
	host.answer(stop, func(*message) (map[string]any, any) { return nil, "host" })
	for range 3 {
		var s string
		if err := srv.CallHost(context.Background(), "Py.X", nil, &s); err != nil || s != "host" {
			t.Fatalf("%q %v", s, err)
		}
	}
	plain.ping()
	if len(plain.inbox) != 0 {
		t.Fatal("a host call went to a client that takes none")
	}
}

// TestHostRequestFrame: the bytes of a host call's request, by hand.
func TestHostRequestFrame(t *testing.T) {
	e := getEncBuf()
	if _, _, err := encodeRequest(e, 7, "Py.Up", "x", 0, false, nil); err != nil {
		t.Fatal(err)
	}
	want := []byte{0x95, 0x00, 0x07, 0xa5, 'P', 'y', '.', 'U', 'p', 0xa1, 'x', 0xc0}
	if got := e.buf.Bytes(); !bytes.Equal(got[4:], want) || binary.BigEndian.Uint32(got) != uint32(len(want)) {
		t.Errorf("got %x, want the payload %x", got, want)
	}

	e = getEncBuf()
	start, end, err := encodeRequest(e, 300, "P.Q", []int{1}, 2.5, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	want = []byte{0x95, 0x00, 0xcd, 0x01, 0x2c, 0xa3, 'P', '.', 'Q', 0x91, 0x01, 0x81, 0xa7, 't', 'i', 'm', 'e', 'o', 'u', 't', 0xcb}
	want = binary.BigEndian.AppendUint64(want, math.Float64bits(2.5))
	if got := e.buf.Bytes()[4:]; !bytes.Equal(got, want) {
		t.Errorf("got %x, want %x", got, want)
	}
	if arg := e.buf.Bytes()[start:end]; !bytes.Equal(arg, []byte{0x91, 0x01}) {
		t.Errorf("the argument's bytes %x", arg)
	}
}

// TestSidecarHostCalls: the example sidecar's methods that call the client.
func TestSidecarHostCalls(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t, true)
	c := startTestClient(t, sc.dial(), make(chan *message, 64))
	c.sendHello(map[string]any{"max_frame_size": DefaultMaxFrameSize, "max_host_calls": 8})
	hangs := make(chan uint32, 1)
	cancels := make(chan uint32, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			var m *message
			select {
			case m = <-c.inbox:
			case <-stop:
				return
			}
			if m.typ == typeNotification {
				cur := scan.Cursor{B: m.params}
				if id, err := readMsgid(&cur); m.method == "$cancel" && err == nil {
					cancels <- id
				}
				continue
			}
			switch m.method {
			case "Py.Upper":
				c.respond(m.msgid, nil, strings.ToUpper(decoded[string](t, m.params)))
			case "Py.Ident":
				c.respond(m.msgid, nil, decoded[any](t, m.params))
			case "Py.Fail":
				c.respond(m.msgid, map[string]any{"type": "error", "message": "ValueError: bad"}, nil)
			case "Py.Hang":
				hangs <- m.msgid
			case "Py.Nest":
				go func() {
					var r any
					if err := c.call("App.Nest", decoded[map[string]any](t, m.params), &r); err != nil {
						c.respond(m.msgid, map[string]any{"type": "error", "message": err.Error()}, nil)
						return
					}
					c.respond(m.msgid, nil, r)
				}()
			default:
				c.respond(m.msgid, map[string]any{"type": "not_found", "message": m.method}, nil)
			}
		}
	}()

	var s string
	if err := c.call("App.CallPy", map[string]any{"method": "Py.Upper", "arg": "abc"}, &s); err != nil || s != "ABC" {
		t.Errorf("CallPy: %q %v", s, err)
	}
	if err := c.call("App.CallPy", map[string]any{"method": "Py.Fail"}, nil); errType(err) != "error" || !strings.Contains(err.Error(), "Py.Fail: ValueError: bad") {
		t.Errorf("CallPy of a failing handler: %v", err)
	}
	var many []int
	if err := c.call("App.CallPyMany", map[string]any{"method": "Py.Ident", "n": 20}, &many); err != nil || len(many) != 20 || many[19] != 19 {
		t.Errorf("CallPyMany: %v %v", many, err)
	}
	var out map[string]any
	if err := c.call("App.CallPyTimeout", map[string]any{"method": "Py.Hang", "ms": 50}, &out); err != nil ||
		out["type"] != "deadline_exceeded" || out["err"] != "context deadline exceeded" {
		t.Errorf("CallPyTimeout: %v %v", out, err)
	}
	hung := <-hangs
	if id := <-cancels; id != hung {
		t.Errorf("$cancel of %d, want %d", id, hung)
	}
	c.respond(hung, map[string]any{"type": "cancelled", "message": "cancelled"}, nil)
	if err := c.call("App.CallPyBackground", map[string]any{"method": "Py.Upper", "arg": "bg"}, &s); err != nil || s != "BG" {
		t.Errorf("CallPyBackground: %q %v", s, err)
	}
	if err := c.call("App.Nest", map[string]any{"depth": 5, "arg": "deep"}, &s); err != nil || s != "deep" {
		t.Errorf("Nest: %q %v", s, err)
	}
}

// lateCtx is a context whose deadline passes when the test calls expire, and
// whose timer fires late, as a real one can under load: only when asked, at
// the next call of Err (firesOnErr) or of Done. That opens, at will, the
// window in which the client's answer to a host call (its own
// deadline_exceeded, say) reaches CallHost before ctx is done.
type lateCtx struct {
	context.Context
	err        error // what Err returns once the timer fired
	firesOnErr bool

	mu       sync.Mutex
	deadline time.Time
	expired  bool
	done     chan struct{}
}

func newLateCtx(err error, firesOnErr bool) *lateCtx {
	return &lateCtx{Context: context.Background(), err: err, firesOnErr: firesOnErr,
		deadline: time.Now().Add(time.Hour), done: make(chan struct{})}
}

// expire makes the deadline pass: Deadline is in the past from now on, and
// the timer fires at the next Err or Done.
func (c *lateCtx) expire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expired = true
	c.deadline = time.Now().Add(-time.Millisecond)
}

func (c *lateCtx) fire() {
	if c.expired && !isClosed(c.done) {
		close(c.done)
	}
}

func (c *lateCtx) Deadline() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.deadline, c.err == context.DeadlineExceeded
}

func (c *lateCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.firesOnErr {
		c.fire()
	}
	return c.done
}

func (c *lateCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.firesOnErr {
		c.fire()
	}
	if isClosed(c.done) {
		return c.err
	}
	return nil
}

// TestHostCallContextWinsACrossedAnswer: when the client's answer crosses the
// end of ctx (its deadline passed, or it was cancelled, just as the client
// answered deadline_exceeded, cancelled, or even a result), CallHost returns
// ctx.Err(), as it promises, and leaves reply alone.
func TestHostCallContextWinsACrossedAnswer(t *testing.T) {
	srv, _, _ := newHostServer(t)
	c, _ := serveHost(t, srv, map[string]any{"max_host_calls": 4})
	answers := []struct {
		werr   map[string]any
		result any
	}{
		{map[string]any{"type": "deadline_exceeded", "message": "Py.X: the Go caller's deadline passed"}, nil},
		{map[string]any{"type": "cancelled", "message": "Py.X: the Go caller cancelled the call"}, nil},
		{nil, "a result"},
	}
	for _, ctxErr := range []error{context.DeadlineExceeded, context.Canceled} {
		for _, firesOnErr := range []bool{true, false} {
			if ctxErr == context.Canceled && !firesOnErr {
				continue // without a deadline, nothing says ctx ends but ctx itself
			}
			for _, a := range answers {
				ctx := newLateCtx(ctxErr, firesOnErr)
				errc := make(chan error, 1)
				reply := "untouched"
				go func() { errc <- srv.CallHost(ctx, "Py.X", nil, &reply) }()
				m := c.next()
				wantRequest(t, m, "Py.X")
				ctx.expire()
				c.respond(m.msgid, a.werr, a.result)
				if err := <-errc; err != ctxErr || err != ctx.Err() {
					t.Errorf("%v (timer fires on Err: %v), the client answered %v %v: got %v, want ctx.Err()",
						ctxErr, firesOnErr, a.werr, a.result, err)
				}
				if reply != "untouched" {
					t.Errorf("reply set to %q", reply)
				}
			}
		}
	}
	c.ping()
	if len(c.inbox) != 0 {
		t.Errorf("the sidecar sent %+v: an answered call needs no $cancel", <-c.inbox)
	}
}
