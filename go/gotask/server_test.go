package gotask

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// Svc is an in-process service for server tests.
type Svc struct {
	running atomic.Int32
	release chan struct{} // Block returns when it is closed
	started chan struct{} // Block sends one value when it starts
}

type typedErr struct{}

func (typedErr) Error() string     { return "I'm a teapot" }
func (typedErr) ErrorType() string { return "teapot" }

// claimErr is an error whose ErrorType is its own text.
type claimErr string

func (e claimErr) Error() string     { return "I claim " + string(e) }
func (e claimErr) ErrorType() string { return string(e) }

func (s *Svc) Block(ctx context.Context, _ any, r *int) error {
	n := s.running.Add(1)
	defer s.running.Add(-1)
	s.started <- struct{}{}
	select {
	case <-s.release:
		*r = int(n)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Svc) Teapot(_ any, _ *any) error      { return typedErr{} }
func (s *Svc) Claim(typ string, _ *any) error  { return fmt.Errorf("wrapped: %w", claimErr(typ)) }
func (s *Svc) Claim2(typ string, _ *any) error { return claimErr(typ) }
func (s *Svc) Wrapped(_ any, _ *any) error     { return errors.Join(errors.New("x"), context.Canceled) }
func (s *Svc) Unencodable(_ any, r *any) error {
	*r = map[string]any{"items": []any{1, map[string]any{"done": make(chan int)}}}
	return nil
}
func (s *Svc) NilSlice(_ any, r *[]string) error        { *r = nil; return nil }
func (s *Svc) UnsetSlice(_ any, r *[]string) error      { return nil }
func (s *Svc) MapReply(k int, r *map[int]int) error     { (*r)[k] = k * k; return nil }
func (s *Svc) NilDeref(_ any, r *int) error             { var p *int; *r = *p; return nil }
func (s *Svc) Args(a struct{ X, Y int }, r *int) error  { *r = a.X * a.Y; return nil }
func (s *Svc) Float32(f float32, r *float32) error      { *r = f; return nil }
func (s *Svc) Str(v string, r *string) error            { *r = v; return nil }
func (s *Svc) Nested(v map[string][]int, r *int) error  { *r = len(v["a"]); return nil }
func (s *Svc) TimePtr(v *time.Time, r *time.Time) error { *r = v.UTC(); return nil }
func (s *Svc) Blob(n int, r *[]byte) error              { *r = make([]byte, n); return nil }
func (s *Svc) LongError(n int, _ *any) error            { return errors.New(strings.Repeat("é", n)) }
func (s *Svc) LongPanic(n int, _ *any) error            { panic(strings.Repeat("x", n)) }

func newSvc() *Svc { return &Svc{release: make(chan struct{}), started: make(chan struct{}, 100)} }

// serve starts srv on an in-memory connection and returns a client for it and
// a channel closed when ServeConn returns.
func serve(t *testing.T, srv *Server) (*testClient, chan struct{}) {
	a, b := net.Pipe()
	done := make(chan struct{})
	go func() {
		srv.ServeConn(b)
		close(done)
	}()
	return newTestClient(t, a), done
}

func newTestServer(t *testing.T, svc *Svc) (*Server, *syncBuffer) {
	srv := NewServer()
	logBuf := new(syncBuffer)
	srv.ErrorLog = log.New(logBuf, "gotask: ", 0)
	if err := srv.Register(svc); err != nil {
		t.Fatal(err)
	}
	return srv, logBuf
}

func TestServerErrors(t *testing.T) {
	srv, _ := newTestServer(t, newSvc())
	c, _ := serve(t, srv)
	if err := c.call("Svc.Teapot", nil, nil); errType(err) != "teapot" {
		t.Errorf("ErrorType: %v", err)
	}
	if err := c.call("Svc.Wrapped", nil, nil); errType(err) != "cancelled" {
		t.Errorf("wrapped context.Canceled: %v", err)
	}
	if err := c.call("Svc.Unencodable", nil, nil); errType(err) != "bad_reply" || !strings.Contains(err.Error(), "the reply cannot be encoded: reply.items[1].done is a chan int, which msgpack cannot carry") {
		t.Errorf("unencodable reply: %v", err)
	}
	var ss []string
	if err := c.call("Svc.NilSlice", nil, &ss); err != nil || ss != nil {
		t.Errorf("nil slice: %v %v", ss, err)
	}
	// As in net/rpc, a map or slice reply reaches the method empty, not nil.
	if err := c.call("Svc.UnsetSlice", nil, &ss); err != nil || ss == nil || len(ss) != 0 {
		t.Errorf("unset slice: %#v %v", ss, err)
	}
	var m map[int]int
	if err := c.call("Svc.MapReply", 3, &m); err != nil || len(m) != 1 || m[3] != 9 {
		t.Errorf("map reply: %v %v", m, err)
	}
	if err := c.call("Svc.NilDeref", nil, nil); errType(err) != "panic" {
		t.Errorf("nil dereference: %v", err)
	} else if re := err.(*remoteError); !strings.Contains(re.Stack, "NilDeref") || strings.Contains(re.Stack, "reflect.") {
		t.Errorf("stack %q", re.Stack)
	}
	var n int
	if err := c.call("Svc.Args", map[string]int{"X": 6, "Y": 7}, &n); err != nil || n != 42 {
		t.Errorf("struct args by field name: %v %v", n, err)
	}
	var f float32
	if err := c.call("Svc.Float32", 0.25, &f); err != nil || f != 0.25 {
		t.Errorf("float32: %v %v", f, err)
	}
	if err := c.call("Svc.Str", []byte("x"), nil); errType(err) != "bad_params" {
		t.Errorf("bin for a string: %v", err)
	}
	if err := c.call("Svc.Nested", map[string]any{"a": "x"}, nil); errType(err) != "bad_params" {
		t.Errorf("bad nested: %v", err)
	}
	now := time.Now()
	var got time.Time
	if err := c.call("Svc.TimePtr", now, &got); err != nil || !got.Equal(now) {
		t.Errorf("time: %v %v", got, err)
	}
}

// TestServerRuntimeErrorTypes: a method's error cannot claim a type that only
// the runtime sends, and that the client acts on (shutting_down makes it send
// the call to another sidecar: a method that ran would run twice). Such an
// error reaches the client as "error", with its text, and is logged once per
// method and type; the types a method reports by returning its context's
// error, and types of its own, reach the client as they are.
func TestServerRuntimeErrorTypes(t *testing.T) {
	srv, logBuf := newTestServer(t, newSvc())
	c, _ := serve(t, srv)
	reserved := []string{"shutting_down", "busy", "not_found", "bad_params", "bad_reply", "too_large", "panic", "stream_mismatch"}
	for _, typ := range reserved {
		for _, method := range []string{"Svc.Claim", "Svc.Claim2"} {
			for range 2 {
				err := c.call(method, typ, nil)
				var re *remoteError
				if !errors.As(err, &re) || re.Type != "error" || !strings.HasSuffix(re.Message, "I claim "+typ) {
					t.Errorf("%s claiming %s: %v, want an error of type error with the method's text", method, typ, err)
				}
			}
			line := fmt.Sprintf("%s returned an error whose ErrorType() is %q", method, typ)
			if n := strings.Count(logBuf.String(), line); n != 1 {
				t.Errorf("%q logged %d times, want once:\n%s", line, n, logBuf.String())
			}
		}
	}
	for _, typ := range []string{"cancelled", "deadline_exceeded", "error", "teapot", "Busy"} {
		if err := c.call("Svc.Claim", typ, nil); errType(err) != typ {
			t.Errorf("claiming %s: %v", typ, err)
		}
	}
	if n := strings.Count(logBuf.String(), "\n"); n != 2*len(reserved) {
		t.Errorf("%d lines logged, want %d:\n%s", n, 2*len(reserved), logBuf.String())
	}
}

// A reply over the frame limit becomes a too_large error: sent as it is, the
// client would refuse the frame and close the connection, failing every call on it.
func TestServerReplyTooLarge(t *testing.T) {
	srv, _ := newTestServer(t, newSvc())
	srv.MaxFrameSize = 1024
	c, _ := serve(t, srv)
	var b []byte
	if err := c.call("Svc.Blob", 2000, &b); errType(err) != "too_large" || !strings.Contains(err.Error(), "frame limit is 1024") {
		t.Fatalf("large reply: %v", err)
	}
	if err := c.call("Svc.Blob", 100, &b); err != nil || len(b) != 100 {
		t.Fatalf("the connection should still serve: %v %d", err, len(b))
	}
}

// TestServerErrorRepliesFit: an error reply never exceeds the client's frame
// limit (a client would refuse it and lose the connection): the stack goes,
// then the message is shortened, at a character boundary.
func TestServerErrorRepliesFit(t *testing.T) {
	srv, _ := newTestServer(t, newSvc())
	srv.MaxFrameSize = MinMaxFrameSize
	c, _ := serve(t, srv)
	err := c.call("Svc.LongError", 10000, nil)
	var re *remoteError
	if !errors.As(err, &re) || re.Type != "error" || !strings.HasSuffix(re.Message, "é [truncated]") || len(re.Message) > MinMaxFrameSize {
		t.Fatalf("long error: %v", err)
	}
	if err := c.call("Svc.LongPanic", 5000, nil); !errors.As(err, &re) || re.Type != "panic" || !strings.HasSuffix(re.Message, "x [truncated]") {
		t.Fatalf("long panic: %v", err)
	}
	if err := c.call("Svc.LongPanic", 10, nil); !errors.As(err, &re) || re.Message != "xxxxxxxxxx" || re.Stack == "" {
		t.Fatalf("short panic keeps its stack: %v", err)
	}
	if err := c.call("Svc.Str", "still serving", nil); err != nil {
		t.Fatal(err)
	}
}

// TestServerHonoursTheClientsFrameLimit: replies are bounded by the limit in
// the client's $hello, not only by the server's own.
func TestServerHonoursTheClientsFrameLimit(t *testing.T) {
	srv, _ := newTestServer(t, newSvc())
	c, _ := serve(t, srv)
	hello, err := marshalCompact([]any{2, "$hello", map[string]any{"version": ProtocolVersion, "max_frame_size": 3000}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.writeFrame(hello); err != nil {
		t.Fatal(err)
	}
	var b []byte
	if err := c.call("Svc.Blob", 5000, &b); errType(err) != "too_large" || !strings.Contains(err.Error(), "frame limit is 3000") {
		t.Fatalf("reply over the client's limit: %v", err)
	}
	if err := c.call("Svc.Blob", 2000, &b); err != nil || len(b) != 2000 {
		t.Fatalf("reply within it: %v %d", err, len(b))
	}
}

func TestServerInflightBound(t *testing.T) {
	svc := newSvc()
	srv, _ := newTestServer(t, svc)
	srv.MaxInflight = 2
	c, _ := serve(t, srv)
	hello := <-c.hello
	if limit, ok := helloField(hello.params, "max_inflight"); !ok || limit != 2 {
		t.Fatalf("$hello announces max_inflight %d (%v), want 2", limit, ok)
	}
	first, ch1 := c.start("Svc.Block", nil, nil)
	_, ch2 := c.start("Svc.Block", nil, nil)
	<-svc.started
	<-svc.started
	// A client past the announced limit gets busy at once: the server keeps
	// reading, so a $cancel behind the request still gets through.
	if err := c.call("Svc.Block", nil, nil); errType(err) != "busy" {
		t.Fatalf("a third call: %v, want busy", err)
	}
	if err := c.cancel(first); err != nil {
		t.Fatal(err)
	}
	if err := c.wait(ch1, nil); errType(err) != "cancelled" {
		t.Fatalf("cancelled call: %v", err)
	}
	close(svc.release)
	if err := c.wait(ch2, nil); err != nil {
		t.Fatalf("second call: %v", err)
	}
}

func TestServerFreesTheSlotBeforeReplying(t *testing.T) {
	srv, _ := newTestServer(t, newSvc())
	srv.MaxInflight = 1
	c, _ := serve(t, srv)
	// A client that sends its next request the moment a reply arrives must find
	// the slot free, every time.
	for i := 0; i < 500; i++ {
		if err := c.call("Svc.Str", "x", nil); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
}

// helloField returns the unsigned integer field of a $hello's params.
func helloField(params []byte, name string) (uint64, bool) {
	var m map[string]any
	if err := msgpack.Unmarshal(params, &m); err != nil {
		return 0, false
	}
	switch v := m[name].(type) {
	case uint8:
		return uint64(v), true
	case uint16:
		return uint64(v), true
	case uint32:
		return uint64(v), true
	case uint64:
		return v, true
	case int8:
		return uint64(v), v >= 0
	case int16:
		return uint64(v), v >= 0
	case int32:
		return uint64(v), v >= 0
	case int64:
		return uint64(v), v >= 0
	}
	return 0, false
}

func TestServerConnCloseCancels(t *testing.T) {
	svc := newSvc()
	srv, _ := newTestServer(t, svc)
	c, done := serve(t, srv)
	c.start("Svc.Block", nil, nil)
	<-svc.started
	c.rwc.Close()
	select {
	case <-done: // ServeConn returned, so Block saw its context cancelled
	case <-time.After(hangGuard):
		t.Fatal("ServeConn did not return after the client closed")
	}
}

func TestServerProtocolErrorLogsOnce(t *testing.T) {
	srv, logBuf := newTestServer(t, newSvc())
	c, done := serve(t, srv)
	c.writeFrame([]byte{0xc1})
	<-done
	<-c.done
	if s := logBuf.String(); strings.Count(s, "\n") != 1 || !strings.Contains(s, "bad_msgpack") {
		t.Fatalf("log %q", s)
	}
}

func TestServerShutdown(t *testing.T) {
	svc := newSvc()
	srv, _ := newTestServer(t, svc)
	srv.replyWait = time.Minute // the cancelled call's reply is sent, however slow the machine
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := newTestClient(t, conn)
	_, blocked := c.start("Svc.Block", nil, nil)
	<-svc.started

	// The grace ends when the test ends it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(ctx) }()
	select {
	case <-c.goaway:
	case <-time.After(hangGuard):
		t.Fatal("no $goaway")
	}
	if err := c.call("Svc.Teapot", nil, nil); errType(err) != "shutting_down" {
		t.Fatalf("a request during the grace: %v, want shutting_down", err)
	}
	cancel()
	// Block never finishes by itself: once the grace ends it is cancelled.
	if err := c.wait(blocked, nil); errType(err) != "cancelled" {
		t.Fatalf("in-flight call: %v, want cancelled", err)
	}
	if err := <-shut; !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	<-c.done // the connection was closed
}

// A graceful shutdown tells every connection $goaway, keeps reading and
// answering shutting_down while calls finish, says $drained after the last
// reply, and ends once the clients have closed their connections (a request
// in transit is then answered, not lost), or after its linger for a client
// that does not close.
func TestServerShutdownSaysGoAwayAndWaitsForClientsToClose(t *testing.T) {
	svc := newSvc()
	srv, _ := newTestServer(t, svc)
	srv.linger = time.Minute // so only the clients closing can end Shutdown here
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	dial := func() *testClient {
		conn, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c := newTestClient(t, conn)
		<-c.hello
		return c
	}
	busy, idle := dial(), dial()
	_, blocked := busy.start("Svc.Block", nil, nil)
	<-svc.started

	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	for _, c := range []*testClient{busy, idle} {
		select {
		case <-c.goaway:
		case <-time.After(hangGuard):
			t.Fatal("no $goaway")
		}
	}
	if err := idle.call("Svc.Teapot", nil, nil); errType(err) != "shutting_down" {
		t.Fatalf("a request after $goaway: %v, want shutting_down", err)
	}
	if isClosed(busy.drained) || isClosed(idle.drained) {
		t.Fatal("$drained with a call still running")
	}
	close(svc.release)
	for _, c := range []*testClient{busy, idle} {
		select {
		case <-c.drained:
		case <-time.After(hangGuard):
			t.Fatal("no $drained once the calls were done")
		}
	}
	select { // $drained came after the reply of the call it ran
	case m := <-blocked:
		if m == nil || m.errMap != nil {
			t.Fatalf("the call in flight: %+v", m)
		}
	default:
		t.Fatal("$drained came before the reply of a call the sidecar ran")
	}
	// After $drained, where it would close the connections if it did not wait
	// for the clients, it still serves both and has not returned.
	for _, c := range []*testClient{busy, idle} {
		if err := c.call("Svc.Teapot", nil, nil); errType(err) != "shutting_down" {
			t.Fatalf("a request after the calls finished: %v, want shutting_down", err)
		}
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) with clients still connected", err)
	default:
	}
	busy.rwc.Close()
	idle.rwc.Close()
	select {
	case err := <-shut:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(hangGuard):
		t.Fatal("Shutdown did not return once the clients closed")
	}
}

func TestServerShutdownLingersForAClientThatStaysAtMostLinger(t *testing.T) {
	srv, _ := newTestServer(t, newSvc())
	srv.linger = 100 * time.Millisecond
	c, done := serve(t, srv)
	<-c.hello
	start := time.Now()
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < srv.linger {
		t.Fatalf("Shutdown returned after %v, before its linger", waited)
	}
	<-done // it closed the connection
	<-c.done
	if !isClosed(c.goaway) {
		t.Fatal("no $goaway before the close")
	}
}

func TestRunInProcess(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), NewServer(), Options{}, false, strings.NewReader(""), &stdout, &stderr); code != 1 || stdout.Len() != 0 {
		t.Fatalf("no cookie: %d %q", code, stdout.String())
	}
	base := Options{Standalone: true, MaxInflight: 1, Grace: time.Second}
	bad := base
	bad.MaxInflight = -1
	if code := run(context.Background(), NewServer(), bad, false, nil, &stdout, &stderr); code != 1 {
		t.Fatalf("bad -max-inflight: %d", code)
	}

	// Standalone on TCP until the context (the signal) ends.
	srv, _ := newTestServer(t, newSvc())
	o := base
	o.Address = "127.0.0.1:0"
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	exit := make(chan int, 1)
	go func() { exit <- run(ctx, srv, o, false, nil, pw, io.Discard) }()
	line, err := readLine(pr)
	if err != nil || !strings.HasPrefix(line, fmt.Sprintf("gotask|%d|tcp|127.0.0.1:", ProtocolVersion)) {
		t.Fatalf("handshake %q %v", line, err)
	}
	if n, err := pr.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("stdout after the handshake: %d bytes, %v; want it closed", n, err)
	}
	conn, err := net.Dial("tcp", strings.Split(line, "|")[3])
	if err != nil {
		t.Fatal(err)
	}
	if err := newTestClient(t, conn).call("Svc.Teapot", nil, nil); errType(err) != "teapot" {
		t.Fatal(err)
	}
	cancel()
	if code := <-exit; code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func readLine(r io.Reader) (string, error) {
	var b []byte
	one := make([]byte, 1)
	for {
		if _, err := r.Read(one); err != nil {
			return string(b), err
		}
		if one[0] == '\n' {
			return string(b), nil
		}
		b = append(b, one[0])
	}
}

// TestTimeoutNaN: a NaN meta.timeout (found by FuzzReadMessage; it used to
// panic the reader) is ignored like an unknown key: no deadline.
func TestTimeoutNaN(t *testing.T) {
	srv, logBuf := newTestServer(t, newSvc())
	c, _ := serve(t, srv)
	for _, meta := range []map[string]any{{"timeout": math.NaN()}, {"timeout": float32(math.NaN())}, {"timeout": "soon"}} {
		if err := c.callMeta("Svc.Teapot", nil, meta, nil); errType(err) != "teapot" {
			t.Fatalf("%v: %v", meta, err)
		}
	}
	if s := logBuf.String(); s != "" {
		t.Fatalf("log %q", s)
	}
}
