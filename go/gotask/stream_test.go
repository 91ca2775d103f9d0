package gotask

import (
	"context"
	"errors"
	"fmt"
	"log"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSidecarStreams: the example's stream methods, over a socket.
func TestSidecarStreams(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t, true)
	c := newStreamConn(t, sc.dial())
	check := func(method string, params any, want string, wantErr string) {
		t.Helper()
		items, werr := c.collect(c.open(method, params, stream(1<<20)))
		got := ""
		if werr != nil {
			got = werr.Type + ": " + werr.Message
		}
		if fmt.Sprint(items) != want || !strings.HasPrefix(got, wantErr) {
			t.Errorf("%s: %v, %q; want %v, %q", method, items, got, want, wantErr)
		}
	}
	check("App.Count", 3, "[0 1 2]", "")
	check("App.CountFail", map[string]any{"N": 2, "Message": "boom"}, "[0 1]", "error: boom")
	check("App.Chunks", map[string]any{"Count": 3, "Size": 2}, "[[0 0] [1 1] [2 2]]", "")
	check("App.Words", "to be  or", "[to be or]", "")
	check("App.BadItem", nil, "[1]", "bad_reply: item 1 cannot reach Python faithfully: time 12000-01-01T00:00:00Z is outside years 1-9999")
	check("App.Hi", "x", "[]", "stream_mismatch: App.Hi returns one reply")
	if items, werr := c.collect(c.open("App.Count", 3, nil)); len(items) != 0 || werr == nil || werr.Type != "stream_mismatch" {
		t.Errorf("App.Count called: %v %+v", items, werr)
	}

	state := func(tried, cancelled int) map[string]any {
		t.Helper()
		id := c.open("App.StreamState", map[string]any{"Tried": tried, "Cancelled": cancelled}, nil)
		f := c.next()
		if f.m == nil || f.m.msgid != id || f.m.errMap != nil {
			t.Fatalf("StreamState: %+v", f)
		}
		var r map[string]any
		if err := decodeValue(f.m.result, &r); err != nil {
			t.Fatal(err)
		}
		return normalize(r).(map[string]any)
	}
	// With no credit, Endless waits in its first Send until cancelled.
	id := c.open("App.Endless", map[string]any{"Size": 10}, stream(0))
	if got := fmt.Sprint(state(1, 0)); got != "map[cancelled:0 sent:0 tried:1]" {
		t.Errorf("state %s", got)
	}
	c.send([]any{2, "$cancel", id})
	if items, werr := c.collect(id); len(items) != 0 || werr == nil || werr.Type != "cancelled" {
		t.Errorf("Endless cancelled: %v %+v", items, werr)
	}
	if got := fmt.Sprint(state(1, 1)); got != "map[cancelled:1 sent:0 tried:1]" {
		t.Errorf("state %s", got)
	}
}

// Streamer is a service of stream methods for the stream tests.
type Streamer struct {
	ran    atomic.Int32      // runs of Count and Hi
	ready  chan int          // Gate sends i before its Send of item i
	errs   chan error        // Gate and Bad send each Send's error
	leaked chan *Stream[int] // Leak hands its stream out
}

func newStreamer() *Streamer {
	return &Streamer{ready: make(chan int, 16), errs: make(chan error, 16), leaked: make(chan *Stream[int], 1)}
}

func (s *Streamer) Hi(_ any, r *string) error { s.ran.Add(1); *r = "hi"; return nil }

// Count sends 0 ... n-1.
func (s *Streamer) Count(ctx context.Context, n int, out *Stream[int]) error {
	s.ran.Add(1)
	for i := 0; i < n; i++ {
		if err := out.Send(i); err != nil {
			return err
		}
	}
	return nil
}

// Words sends the words of text: a stream method without a context.
func (s *Streamer) Words(text string, out *Stream[string]) error {
	for _, w := range strings.Fields(text) {
		if err := out.Send(w); err != nil {
			return err
		}
	}
	return nil
}

// Fail sends 0 ... n-1, then fails.
func (s *Streamer) Fail(n int, out *Stream[int]) error {
	for i := 0; i < n; i++ {
		if err := out.Send(i); err != nil {
			return err
		}
	}
	return fmt.Errorf("failed after %d items", n)
}

// Panic sends 0 ... n-1, then panics.
func (s *Streamer) Panic(n int, out *Stream[int]) error {
	for i := 0; i < n; i++ {
		if err := out.Send(i); err != nil {
			return err
		}
	}
	panic("boom")
}

// Gate sends n items of 100 bytes, telling ready before each and errs after.
func (s *Streamer) Gate(ctx context.Context, n int, out *Stream[[]byte]) error {
	for i := 0; i < n; i++ {
		s.ready <- i
		err := out.Send(make([]byte, 100))
		s.errs <- err
		if err != nil {
			return err
		}
	}
	return nil
}

// Leak hands its stream to the test, which sends on it after the return.
func (s *Streamer) Leak(_ any, out *Stream[int]) error {
	s.leaked <- out
	return nil
}

// Bad sends 0, then an item that cannot be sent (of the kind args.Kind),
// then 1, and returns the bad item's error if args.Return.
func (s *Streamer) Bad(args struct {
	Kind   string
	Return bool
}, out *Stream[any]) error {
	if err := out.Send(0); err != nil {
		return err
	}
	var bad any
	switch args.Kind {
	case "time":
		bad = map[string]any{"when": time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC)}
	case "chan":
		bad = []any{make(chan int)}
	case "large":
		bad = make([]byte, 2000)
	}
	badErr := out.Send(bad)
	s.errs <- badErr
	if err := out.Send(1); err != nil {
		return err
	}
	if args.Return {
		return fmt.Errorf("Bad: %w", badErr)
	}
	return nil
}

// Many sends from G goroutines at once, N items each: goroutine g sends
// g*N ... g*N+N-1, in order.
func (s *Streamer) Many(args struct{ G, N int }, out *Stream[int]) error {
	var wg sync.WaitGroup
	errs := make([]error, args.G)
	for g := 0; g < args.G; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < args.N; i++ {
				if err := out.Send(g*args.N + i); err != nil {
					errs[g] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Flood sends items of size bytes until Send fails.
func (s *Streamer) Flood(ctx context.Context, size int, out *Stream[[]byte]) error {
	b := make([]byte, size)
	for {
		if err := out.Send(b); err != nil {
			return err
		}
	}
}

// frameIn is a frame the stream client read: an item, or any other message.
type frameIn struct {
	size  int // the payload's length
	item  bool
	msgid uint32
	value []byte   // an item's
	m     *message // another message
}

// streamConn is a client that reads the sidecar's frames in order, items
// included (testClient takes no items).
type streamConn struct {
	t      *testing.T
	conn   net.Conn
	frames chan frameIn // unbuffered: a client that does not take them reads at most one more
	nextID uint32
	srv    *Server
}

func newStreamServer(t *testing.T) (*Server, *Streamer, *syncBuffer) {
	t.Helper()
	srv := NewServer()
	logBuf := new(syncBuffer)
	srv.ErrorLog = log.New(logBuf, "gotask: ", 0)
	st := newStreamer()
	if err := srv.Register(st); err != nil {
		t.Fatal(err)
	}
	return srv, st, logBuf
}

// serveStreams serves srv on an in-memory connection and returns a client
// that has read the sidecar's $hello.
func serveStreams(t *testing.T, srv *Server) *streamConn {
	t.Helper()
	a, b := net.Pipe()
	go srv.ServeConn(b)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	c := newStreamConn(t, a)
	c.srv = srv
	return c
}

// newStreamConn starts a stream client on a connection to a sidecar, and
// reads the sidecar's $hello, which must announce streams.
func newStreamConn(t *testing.T, a net.Conn) *streamConn {
	t.Helper()
	c := &streamConn{t: t, conn: a, frames: make(chan frameIn)}
	t.Cleanup(func() { a.Close() })
	go func() {
		defer close(c.frames)
		for {
			payload, err := readWholeFrame(a)
			if err != nil {
				return
			}
			f := frameIn{size: len(payload)}
			if len(payload) > 1 && payload[1] == typeItem {
				f.item = true
				if f.msgid, f.value, err = parseItem(payload); err != nil {
					t.Errorf("the sidecar sent %x: %v", payload, err)
					return
				}
			} else if f.m, err = parseMessage(payload); err != nil {
				t.Errorf("the sidecar sent %x: %v", payload, err)
				return
			}
			c.frames <- f
		}
	}()
	f := c.next()
	var hello struct {
		Streams bool `msgpack:"streams"`
	}
	if f.m == nil || f.m.method != "$hello" || decodeValue(f.m.params, &hello) != nil || !hello.Streams {
		t.Fatalf("first frame %+v, want a $hello with streams", f)
	}
	return c
}

func (c *streamConn) send(msg []any) {
	c.t.Helper()
	if _, err := c.conn.Write(frameOf(c.t, msg)); err != nil {
		c.t.Fatal(err)
	}
}

// open sends a request for method with meta and returns its msgid.
func (c *streamConn) open(method string, params any, meta map[string]any) uint32 {
	c.t.Helper()
	c.nextID++
	var m any
	if meta != nil {
		m = meta
	}
	c.send([]any{0, c.nextID, method, params, m})
	return c.nextID
}

func (c *streamConn) next() frameIn {
	c.t.Helper()
	select {
	case f, ok := <-c.frames:
		if !ok {
			c.t.Fatal("the connection closed")
		}
		return f
	case <-time.After(hangGuard):
		c.t.Fatal("timed out waiting for a frame")
	}
	return frameIn{}
}

// collect reads the items of stream msgid and its response, and returns the
// items decoded into any and the response's error. Other frames fail the test.
func (c *streamConn) collect(msgid uint32) ([]any, *wireError) {
	c.t.Helper()
	var items []any
	for {
		f := c.next()
		if f.item && f.msgid == msgid {
			var v any
			if err := decodeValue(f.value, &v); err != nil {
				c.t.Fatal(err)
			}
			items = append(items, normalize(v))
			continue
		}
		if f.m == nil || f.m.typ != typeResponse || f.m.msgid != msgid {
			c.t.Fatalf("got %+v while reading stream %d", f, msgid)
		}
		if f.m.errMap == nil && len(f.m.result) != 1 || f.m.result[0] != 0xc0 {
			c.t.Fatalf("stream response with result %x, want nil", f.m.result)
		}
		return items, f.m.errMap
	}
}

// pingPong makes a round trip through the sidecar's reader: a frame it read
// before is acted on, and anything it queued before arrives first (returned).
func (c *streamConn) pingPong() []frameIn {
	c.t.Helper()
	c.send([]any{2, "$ping", 77})
	var before []frameIn
	for {
		f := c.next()
		if f.m != nil && f.m.method == "$pong" {
			return before
		}
		before = append(before, f)
	}
}

// stream returns the runtime's state of the stream msgid, once it runs.
func (c *streamConn) stream(msgid uint32) *outStream {
	c.t.Helper()
	var s *outStream
	waitState(c.t, fmt.Sprintf("stream %d runs", msgid), func() bool {
		c.srv.mu.Lock()
		defer c.srv.mu.Unlock()
		for sc := range c.srv.conns {
			sc.mu.Lock()
			if cl := sc.pending[msgid]; cl != nil {
				s = cl.stream
			}
			sc.mu.Unlock()
		}
		return s != nil
	})
	return s
}

// waitState waits until f, which reads the server's state, is true: no event
// says when a Send begins to wait.
func waitState(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// state returns a stream's credit, queued bytes and whether a Send waits.
func (s *outStream) state() (credit int64, queued int, waiting bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.credit, s.queued, s.waiting
}

func stream(credit int64) map[string]any { return map[string]any{"stream": credit} }

func ints(n int) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = int64(i)
	}
	return out
}

func TestStreamItemsThenResponse(t *testing.T) {
	srv, _, _ := newStreamServer(t)
	c := serveStreams(t, srv)
	for _, n := range []int{0, 1, 5} {
		items, werr := c.collect(c.open("Streamer.Count", n, stream(1<<20)))
		if werr != nil || fmt.Sprint(items) != fmt.Sprint(ints(n)) {
			t.Errorf("Count %d: %v, %v", n, items, werr)
		}
	}
	items, werr := c.collect(c.open("Streamer.Words", " a bb\tc ", stream(1<<20)))
	if werr != nil || fmt.Sprint(items) != "[a bb c]" {
		t.Errorf("Words: %v, %v", items, werr)
	}
	// Two streams at once: each gets its own items, in order.
	one, two := c.open("Streamer.Count", 50, stream(1<<20)), c.open("Streamer.Count", 50, stream(1<<20))
	got := map[uint32][]any{}
	for ended := 0; ended < 2; {
		f := c.next()
		switch {
		case f.item:
			var v any
			decodeValue(f.value, &v)
			got[f.msgid] = append(got[f.msgid], normalize(v))
		case f.m.typ == typeResponse && f.m.errMap == nil:
			ended++
		default:
			t.Fatalf("unexpected %+v", f)
		}
	}
	if fmt.Sprint(got[one]) != fmt.Sprint(ints(50)) || fmt.Sprint(got[two]) != fmt.Sprint(ints(50)) {
		t.Errorf("two streams: %v", got)
	}
}

func TestStreamErrorAfterItems(t *testing.T) {
	srv, _, _ := newStreamServer(t)
	c := serveStreams(t, srv)
	items, werr := c.collect(c.open("Streamer.Fail", 3, stream(1<<20)))
	if fmt.Sprint(items) != fmt.Sprint(ints(3)) || werr == nil || werr.Type != "error" || werr.Message != "failed after 3 items" {
		t.Errorf("Fail: %v, %+v", items, werr)
	}
	items, werr = c.collect(c.open("Streamer.Panic", 2, stream(1<<20)))
	if fmt.Sprint(items) != fmt.Sprint(ints(2)) || werr == nil || werr.Type != "panic" || werr.Message != "boom" || !strings.Contains(werr.Stack, "(*Streamer).Panic") {
		t.Errorf("Panic: %v, %+v", items, werr)
	}
}

// TestStreamMismatch: a stream opened to a call method, or a stream method
// called, is answered stream_mismatch and does not run. A "stream" that is
// not an integer 0 <= n < 2^63 is ignored, as an unknown key.
func TestStreamMismatch(t *testing.T) {
	srv, st, _ := newStreamServer(t)
	c := serveStreams(t, srv)
	cases := []struct {
		method string
		meta   map[string]any
		want   string
	}{
		{"Streamer.Hi", stream(100), "Streamer.Hi returns one reply: call it with GoTask.call, not GoTask.stream"},
		{"Streamer.Hi", stream(0), "returns one reply"},
		{"Streamer.Count", nil, "Streamer.Count is a stream method: open it with GoTask.stream, not GoTask.call"},
		{"Streamer.Count", map[string]any{"timeout": 5}, "is a stream method"},
		{"Streamer.Count", stream(-1), "is a stream method"},
		{"Streamer.Count", map[string]any{"stream": 1.5}, "is a stream method"},
		{"Streamer.Count", map[string]any{"stream": "1"}, "is a stream method"},
		{"Streamer.Count", map[string]any{"stream": uint64(1) << 63}, "is a stream method"},
	}
	for _, tc := range cases {
		items, werr := c.collect(c.open(tc.method, 3, tc.meta))
		if len(items) != 0 || werr == nil || werr.Type != "stream_mismatch" || !strings.Contains(werr.Message, tc.want) {
			t.Errorf("%s with meta %v: %v, %+v; want stream_mismatch %q", tc.method, tc.meta, items, werr, tc.want)
		}
	}
	if n := st.ran.Load(); n != 0 {
		t.Errorf("%d methods ran", n)
	}
	// The largest credit is a stream.
	if items, werr := c.collect(c.open("Streamer.Count", 2, stream(math.MaxInt64))); werr != nil || len(items) != 2 {
		t.Errorf("credit 2^63-1: %v, %+v", items, werr)
	}
}

// TestStreamCredit: Send waits while the credit is not positive, and a
// $credit lets it go on; the credit ends below zero by less than one frame.
func TestStreamCredit(t *testing.T) {
	srv, st, _ := newStreamServer(t)
	c := serveStreams(t, srv)
	id := c.open("Streamer.Gate", 3, stream(0))
	if i := <-st.ready; i != 0 {
		t.Fatalf("ready %d", i)
	}
	s := c.stream(id)
	waitState(t, "the first Send waits", func() bool { _, _, w := s.state(); return w || len(st.errs) > 0 })
	if early := c.pingPong(); len(early) != 0 {
		t.Fatalf("sent without credit: %+v", early)
	}

	// Credits that are not for a running stream, or of another shape, do nothing.
	for _, params := range []any{[]any{id, 0}, []any{id, -5}, []any{id}, []any{id, 1, 2}, "x", id, []any{999, 100}, []any{"1", 100}, []any{id, 1.5}, []any{id, uint64(1) << 63}} {
		c.send([]any{2, "$credit", params})
	}
	if early := c.pingPong(); len(early) != 0 {
		t.Fatalf("sent after bad credits: %+v", early)
	}
	if credit, _, _ := s.state(); credit != 0 {
		t.Fatalf("credit %d after bad $credits, want 0", credit)
	}

	// 150 bytes of credit: item 0 (105 bytes) leaves 45, enough for item 1,
	// which takes it to -60.
	c.send([]any{2, "$credit", []any{id, 150}})
	var frame int
	for i := 0; i < 2; i++ {
		f := c.next()
		if !f.item || f.msgid != id {
			t.Fatalf("got %+v, want an item", f)
		}
		frame = f.size
		if err := <-st.errs; err != nil {
			t.Fatal(err)
		}
		if got := <-st.ready; got != i+1 {
			t.Fatalf("ready %d, want %d", got, i+1)
		}
	}
	waitState(t, "the third Send waits", func() bool { _, _, w := s.state(); return w })
	credit, _, _ := s.state()
	if want := 150 - 2*int64(frame); credit != want || credit <= -int64(frame) {
		t.Fatalf("credit %d after two items of %d bytes, want %d", credit, frame, want)
	}
	c.send([]any{2, "$credit", []any{id, -credit}}) // back to 0: still no room
	if early := c.pingPong(); len(early) != 0 {
		t.Fatalf("sent at credit 0: %+v", early)
	}
	c.send([]any{2, "$credit", []any{id, 1}})
	if f := c.next(); !f.item || f.msgid != id {
		t.Fatalf("got %+v, want the third item", f)
	}
	if err := <-st.errs; err != nil {
		t.Fatal(err)
	}
	if f := c.next(); f.m == nil || f.m.typ != typeResponse || f.m.errMap != nil {
		t.Fatalf("got %+v, want the response", f)
	}
	// A $credit that crosses the stream's end is ignored.
	c.send([]any{2, "$credit", []any{id, 100}})
	c.pingPong()
}

// TestStreamCreditSaturates: credit beyond 2^63-1 stays there.
func TestStreamCreditSaturates(t *testing.T) {
	srv, st, _ := newStreamServer(t)
	c := serveStreams(t, srv)
	id := c.open("Streamer.Gate", 2, stream(0))
	<-st.ready
	s := c.stream(id)
	for i := 0; i < 2; i++ {
		c.send([]any{2, "$credit", []any{id, int64(math.MaxInt64)}})
	}
	items, werr := c.collect(id)
	if len(items) != 2 || werr != nil {
		t.Fatalf("%v %+v", items, werr)
	}
	// The items went between the $credits or after them: 2^63-1 less none,
	// one or both, and no overflow.
	if credit, _, _ := s.state(); credit < math.MaxInt64-2*200 {
		t.Fatalf("credit %d", credit)
	}
}

// TestStreamCancel: a $cancel, the request's timeout and the end of
// Shutdown's grace each end a Send waiting for credit with the context's
// error, and the response says so.
func TestStreamCancel(t *testing.T) {
	t.Run("cancel", func(t *testing.T) {
		srv, st, _ := newStreamServer(t)
		c := serveStreams(t, srv)
		id := c.open("Streamer.Gate", 1, stream(0))
		<-st.ready
		s := c.stream(id)
		waitState(t, "the Send waits", func() bool { _, _, w := s.state(); return w })
		c.send([]any{2, "$cancel", id})
		if err := <-st.errs; !errors.Is(err, context.Canceled) {
			t.Fatalf("Send: %v, want context.Canceled", err)
		}
		if items, werr := c.collect(id); len(items) != 0 || werr == nil || werr.Type != "cancelled" {
			t.Fatalf("%v %+v", items, werr)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		srv, st, _ := newStreamServer(t)
		c := serveStreams(t, srv)
		id := c.open("Streamer.Gate", 1, map[string]any{"stream": 0, "timeout": 0.05})
		if err := <-st.errs; !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Send: %v, want context.DeadlineExceeded", err)
		}
		if items, werr := c.collect(id); len(items) != 0 || werr == nil || werr.Type != "deadline_exceeded" {
			t.Fatalf("%v %+v", items, werr)
		}
	})
	t.Run("shutdown", func(t *testing.T) {
		srv, st, _ := newStreamServer(t)
		c := serveStreams(t, srv)
		id := c.open("Streamer.Gate", 1, stream(0))
		<-st.ready
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // no grace
		go srv.Shutdown(ctx)
		if err := <-st.errs; !errors.Is(err, context.Canceled) {
			t.Fatalf("Send: %v, want context.Canceled", err)
		}
		for {
			f := c.next()
			if f.m != nil && f.m.method == "$goaway" {
				continue
			}
			if f.m == nil || f.m.msgid != id || f.m.errMap == nil || f.m.errMap.Type != "cancelled" {
				t.Fatalf("got %+v, want the cancelled response", f)
			}
			break
		}
	})
}

// TestStreamSendAfterReturn: Send on a stream whose method returned, or on
// a Stream the runtime did not make, fails with ErrStreamClosed and sends
// nothing.
func TestStreamSendAfterReturn(t *testing.T) {
	srv, st, _ := newStreamServer(t)
	c := serveStreams(t, srv)
	id := c.open("Streamer.Leak", nil, stream(1<<20))
	if items, werr := c.collect(id); len(items) != 0 || werr != nil {
		t.Fatalf("%v %+v", items, werr)
	}
	if err := (<-st.leaked).Send(1); err != ErrStreamClosed {
		t.Fatalf("Send after the return: %v, want ErrStreamClosed", err)
	}
	if early := c.pingPong(); len(early) != 0 {
		t.Fatalf("sent after the response: %+v", early)
	}
	if err := new(Stream[int]).Send(1); err != ErrStreamClosed {
		t.Fatalf("Send on a zero Stream: %v", err)
	}
}

// TestStreamItemError: an item that cannot be sent is not; Send returns an
// *ItemError, the stream goes on, and returning the error ends it with its
// type (bad_reply, too_large), which a method's own error cannot claim.
func TestStreamItemError(t *testing.T) {
	srv, st, logBuf := newStreamServer(t)
	srv.MaxFrameSize = 1024
	c := serveStreams(t, srv)
	cases := []struct{ kind, typ, msg string }{
		{"time", "bad_reply", "item 1 cannot reach Python faithfully: when: time 12000-01-01T00:00:00Z is outside years 1-9999"},
		{"chan", "bad_reply", "item 1 cannot be encoded: item[0] is a chan int, which msgpack cannot carry"},
		{"large", "too_large", "item 1 is 2006 bytes; the client's frame limit is 1024 (max_frame_size)"},
	}
	for _, tc := range cases {
		for _, ret := range []bool{false, true} {
			items, werr := c.collect(c.open("Streamer.Bad", map[string]any{"Kind": tc.kind, "Return": ret}, stream(1<<20)))
			err := <-st.errs
			var ie *ItemError
			if !errors.As(err, &ie) || err.Error() != tc.msg {
				t.Errorf("%s: Send: %v, want an *ItemError %q", tc.kind, err, tc.msg)
			}
			if fmt.Sprint(items) != "[0 1]" {
				t.Errorf("%s: items %v, want [0 1]", tc.kind, items)
			}
			switch {
			case !ret && werr != nil:
				t.Errorf("%s: response %+v, want no error", tc.kind, werr)
			case ret && (werr == nil || werr.Type != tc.typ || werr.Message != "Bad: "+tc.msg):
				t.Errorf("%s: response %+v, want %s %q", tc.kind, werr, tc.typ, "Bad: "+tc.msg)
			}
		}
	}
	if s := logBuf.String(); s != "" {
		t.Errorf("logged %q", s)
	}
}

// TestStreamConcurrentSends: Sends from several goroutines all arrive, each
// goroutine's in its order.
func TestStreamConcurrentSends(t *testing.T) {
	srv, _, _ := newStreamServer(t)
	c := serveStreams(t, srv)
	const g, n = 8, 200
	items, werr := c.collect(c.open("Streamer.Many", map[string]any{"G": g, "N": n}, stream(1<<20)))
	if werr != nil || len(items) != g*n {
		t.Fatalf("%d items, %+v", len(items), werr)
	}
	last := make([]int64, g)
	for i := range last {
		last[i] = -1
	}
	for _, v := range items {
		x := v.(int64)
		k := x / n
		if x <= last[k] {
			t.Fatalf("goroutine %d: %d after %d", k, x, last[k])
		}
		last[k] = x
	}
}

// TestStreamFairness: a small call's reply goes before the items a stream
// has queued: ahead of it are at most the writer's buffer, the frame it is
// writing and the frame the client's reader holds, however much credit the
// stream has and however much of its output waits. The client reads nothing
// until the stream fills its share of the items queue (or the queue) and the
// reply is queued; then it counts the bytes of items that came before the
// reply. The bound is below what the stream had queued, so the reply
// overtook it.
func TestStreamFairness(t *testing.T) {
	for _, size := range []int{100, 4 << 10} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			srv, st, _ := newStreamServer(t)
			c := serveStreams(t, srv)
			id := c.open("Streamer.Flood", size, stream(math.MaxInt64))
			s := c.stream(id)
			sc := serverConn(srv)
			queued := 0
			waitState(t, "the stream fills its share of the queue", func() bool {
				var waiting bool
				_, queued, waiting = s.state()
				return waiting && queued > streamQueueLimit || len(sc.items) == cap(sc.items)
			})
			hi := c.open("Streamer.Hi", nil, nil)
			waitState(t, "the reply to Hi is queued", func() bool {
				srv.mu.Lock()
				defer srv.mu.Unlock()
				return st.ran.Load() == 1 && srv.active == 1 // Hi ran and was answered
			})
			before, frame := 0, 0
			for {
				f := c.next()
				if f.item {
					before += f.size + 4
					frame = f.size + 4
					continue
				}
				if f.m.typ != typeResponse || f.m.msgid != hi || f.m.errMap != nil {
					t.Fatalf("got %+v, want Hi's reply", f)
				}
				break
			}
			// Ahead of the reply: the writer's buffer and the frame it was
			// writing into it, and the frame the client's reader holds.
			limit := 64<<10 + 3*frame
			if queued <= limit {
				t.Fatalf("the stream queued %d bytes, not more than the bound %d: the test means nothing", queued, limit)
			}
			if before > limit {
				t.Fatalf("%d bytes of items before the reply, want at most %d", before, limit)
			}
			after := 0
			c.send([]any{2, "$cancel", id})
			for {
				f := c.next()
				if f.item {
					after += f.size + 4
					continue
				}
				if f.m.msgid != id || f.m.errMap == nil || f.m.errMap.Type != "cancelled" {
					t.Fatalf("got %+v, want the stream's cancelled response", f)
				}
				break
			}
			if after < queued-limit {
				t.Fatalf("%d bytes of items after the reply, want at least the %d queued beyond the bound", after, queued-limit)
			}
		})
	}
}

// serverConn returns the server's one connection.
func serverConn(srv *Server) *conn {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for k := range srv.conns {
		return k
	}
	return nil
}

// gatedConn is the sidecar's end of a connection whose writes wait while its
// gate is shut: once blocked is closed, the writer is stuck in a write and
// takes nothing more from its queues until the gate opens.
type gatedConn struct {
	net.Conn
	mu      sync.Mutex
	open    chan struct{} // closed while the gate is open
	blocked chan struct{} // closed once a write waits at the shut gate
	stopped bool          // blocked is closed
	closed  chan struct{}
	once    sync.Once
}

func newGatedConn(c net.Conn) *gatedConn {
	g := &gatedConn{Conn: c, open: make(chan struct{}), blocked: make(chan struct{}), closed: make(chan struct{})}
	close(g.open)
	return g
}

func (g *gatedConn) shut() {
	g.mu.Lock()
	g.open, g.blocked, g.stopped = make(chan struct{}), make(chan struct{}), false
	g.mu.Unlock()
}

func (g *gatedConn) reopen() {
	g.mu.Lock()
	close(g.open)
	g.mu.Unlock()
}

// waitBlocked waits until a write waits at the shut gate.
func (g *gatedConn) waitBlocked(t *testing.T) {
	t.Helper()
	g.mu.Lock()
	blocked := g.blocked
	g.mu.Unlock()
	select {
	case <-blocked:
	case <-time.After(hangGuard):
		t.Fatal("timed out waiting for the writer to block")
	}
}

func (g *gatedConn) Write(p []byte) (int, error) {
	g.mu.Lock()
	open := g.open
	select {
	case <-open:
	default:
		if !g.stopped {
			g.stopped = true
			close(g.blocked)
		}
	}
	g.mu.Unlock()
	select {
	case <-open:
	case <-g.closed:
		return 0, net.ErrClosed
	}
	return g.Conn.Write(p)
}

func (g *gatedConn) Close() error {
	g.once.Do(func() { close(g.closed) })
	return g.Conn.Close()
}

// serveStreamsGated is serveStreams over a gatedConn, shut once the client has read
// the $hello.
func serveStreamsGated(t *testing.T, srv *Server) (*streamConn, *gatedConn) {
	t.Helper()
	a, b := net.Pipe()
	g := newGatedConn(b)
	go srv.ServeConn(g)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	c := newStreamConn(t, a)
	c.srv = srv
	g.shut()
	return c, g
}

// active returns how many calls the server runs.
func active(srv *Server) int {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return srv.active
}

// sizedItem is item i of Streamer.Sized: its index, then dots up to size bytes.
func sizedItem(i, size int) string {
	item := fmt.Sprintf("%d:", i)
	return item + strings.Repeat(".", max(0, size-len(item)))
}

// Sized sends N items of Size bytes (see sizedItem), then ends as End says:
// "" returns nil, "fail" returns an error, "panic" panics.
func (s *Streamer) Sized(args struct {
	N, Size int
	End     string
}, out *Stream[string]) error {
	for i := 0; i < args.N; i++ {
		if err := out.Send(sizedItem(i, args.Size)); err != nil {
			return err
		}
	}
	switch args.End {
	case "fail":
		return fmt.Errorf("failed after %d items", args.N)
	case "panic":
		panic("boom")
	}
	return nil
}

// sizedStreams reads frames until every stream in want (msgid: its N items
// of size bytes) and every call in calls has its response, and checks that
// each stream's items come in order and all before its response. It returns
// the frames that were neither, in order, and each response's error type by
// msgid ("" for none).
func (c *streamConn) sizedStreams(want map[uint32]int, size int, calls map[uint32]bool) (others []frameIn, ends map[uint32]string) {
	c.t.Helper()
	got := make(map[uint32]int)
	ends = make(map[uint32]string)
	for len(ends) < len(want)+len(calls) {
		f := c.next()
		switch {
		case f.item:
			n, ok := want[f.msgid]
			if !ok {
				c.t.Fatalf("an item of %d, which is no stream", f.msgid)
			}
			if _, ended := ends[f.msgid]; ended {
				c.t.Fatalf("an item of stream %d after its response", f.msgid)
			}
			var v string
			if err := decodeValue(f.value, &v); err != nil {
				c.t.Fatal(err)
			}
			if i := got[f.msgid]; i >= n || v != sizedItem(i, size) {
				c.t.Fatalf("stream %d: item %.20q, want item %d of %d", f.msgid, v, i, n)
			}
			got[f.msgid]++
		case f.m != nil && f.m.typ == typeResponse:
			id := f.m.msgid
			_, isStream := want[id]
			if !isStream && !calls[id] {
				c.t.Fatalf("a response to %d, which was not sent", id)
			}
			if _, ended := ends[id]; ended {
				c.t.Fatalf("a second response to %d", id)
			}
			if isStream && got[id] != want[id] {
				c.t.Fatalf("stream %d's response after %d of its %d items", id, got[id], want[id])
			}
			ends[id] = ""
			if f.m.errMap != nil {
				ends[id] = f.m.errMap.Type
			}
		default:
			others = append(others, f)
		}
	}
	return others, ends
}

// TestStreamResponseAfterItems: a stream's response, whatever its error,
// follows all its items, though replies and notifications overtake items.
// The streams and calls all end while the writer is stuck, with most items
// queued; then the client reads them.
func TestStreamResponseAfterItems(t *testing.T) {
	srv, st, _ := newStreamServer(t)
	c, g := serveStreamsGated(t, srv)
	const n, size = 20, 2 << 10
	want, calls := make(map[uint32]int), make(map[uint32]bool)
	endOf := make(map[uint32]string)
	for i := 0; i < 9; i++ {
		end := []string{"", "fail", "panic"}[i%3]
		id := c.open("Streamer.Sized", map[string]any{"N": n, "Size": size, "End": end}, stream(1<<30))
		want[id], endOf[id] = n, map[string]string{"": "", "fail": "error", "panic": "panic"}[end]
		calls[c.open("Streamer.Hi", nil, nil)] = true
	}
	g.waitBlocked(t)
	waitState(t, "every call ends", func() bool { return st.ran.Load() == 9 && active(srv) == 0 })
	sc := serverConn(srv)
	if q := len(sc.items); q < len(want)+n {
		t.Fatalf("%d frames on the items queue: the test means nothing", q)
	}
	g.reopen()
	others, ends := c.sizedStreams(want, size, calls)
	if len(others) != 0 {
		t.Fatalf("other frames: %+v", others)
	}
	for id, typ := range endOf {
		if ends[id] != typ {
			t.Errorf("stream %d ended with %q, want %q", id, ends[id], typ)
		}
	}
}

// TestStreamDrainedAfterResponse: $drained, which says every call run on
// the connection was answered, follows the response of a stream that ended,
// behind its items, before Shutdown began; $goaway goes before them.
func TestStreamDrainedAfterResponse(t *testing.T) {
	srv, _, _ := newStreamServer(t)
	c, g := serveStreamsGated(t, srv)
	const n, size = 30, 4 << 10
	id := c.open("Streamer.Sized", map[string]any{"N": n, "Size": size, "End": "fail"}, stream(1<<30))
	g.waitBlocked(t)
	waitState(t, "the stream ends", func() bool { return active(srv) == 0 })
	sc := serverConn(srv)
	if len(sc.items) < 2 {
		t.Fatalf("%d frames on the items queue: the test means nothing", len(sc.items))
	}
	frames := len(sc.out) + len(sc.items)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		defer cancel()
		done <- srv.Shutdown(ctx)
	}()
	waitState(t, "$goaway and $drained are queued", func() bool { return len(sc.out)+len(sc.items) == frames+2 })
	g.reopen()
	others, ends := c.sizedStreams(map[uint32]int{id: n}, size, nil)
	if ends[id] != "error" {
		t.Fatalf("the stream ended with %q", ends[id])
	}
	if len(others) != 1 || others[0].m == nil || others[0].m.method != "$goaway" {
		t.Fatalf("before the stream's response: %+v, want $goaway", others)
	}
	if f := c.next(); f.m == nil || f.m.method != "$drained" {
		t.Fatalf("after the stream's response: %+v, want $drained", f)
	}
	c.conn.Close()
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// TestStreamHoldsASlot: a stream counts against MaxInflight from its request
// to its response, like a call.
func TestStreamHoldsASlot(t *testing.T) {
	srv, st, _ := newStreamServer(t)
	srv.MaxInflight = 1
	c := serveStreams(t, srv)
	id := c.open("Streamer.Gate", 1, stream(0))
	<-st.ready
	busy := c.open("Streamer.Hi", nil, nil)
	if f := c.next(); f.m == nil || f.m.msgid != busy || f.m.errMap == nil || f.m.errMap.Type != "busy" {
		t.Fatalf("got %+v, want busy", f)
	}
	c.send([]any{2, "$credit", []any{id, 1000}})
	if items, werr := c.collect(id); len(items) != 1 || werr != nil {
		t.Fatalf("%v %+v", items, werr)
	}
	hi := c.open("Streamer.Hi", nil, nil)
	if f := c.next(); f.m == nil || f.m.msgid != hi || f.m.errMap != nil {
		t.Fatalf("got %+v, want Hi's reply", f)
	}
}

// TestStreamItemFromClient: a client that sends an item (type 3), which only
// a sidecar sends, is closed as bad_message.
func TestStreamItemFromClient(t *testing.T) {
	srv, _, logBuf := newStreamServer(t)
	c := serveStreams(t, srv)
	c.send([]any{3, 1, 0})
	select {
	case f, ok := <-c.frames:
		if ok {
			t.Fatalf("got %+v, want the connection closed", f)
		}
	case <-time.After(hangGuard):
		t.Fatal("the connection stays open")
	}
	waitLines(t, logBuf.String, 1, "the item")
	if s := logBuf.String(); !strings.Contains(s, "bad_message: message type 3, an item of a stream: only a sidecar sends items") {
		t.Fatalf("log %q", s)
	}
}

type StreamShapes struct{}

func (StreamShapes) WithCtx(ctx context.Context, n int, out *Stream[map[string][]byte]) error {
	return nil
}
func (StreamShapes) NoCtx(_ any, out *Stream[any]) error { return nil }

type StreamChan struct{}

func (StreamChan) Bad(_ any, out *Stream[chan int]) error { return nil }

type StreamByValue struct{}

func (StreamByValue) Bad(_ any, out Stream[int]) error { return nil }

type StreamAsArgs struct{}

func (StreamAsArgs) Bad(out *Stream[int], r *int) error { return nil }

func TestRegisterStreams(t *testing.T) {
	s := NewServer()
	if err := s.Register(StreamShapes{}); err != nil {
		t.Fatal(err)
	}
	for name, item := range map[string]any{"StreamShapes.WithCtx": map[string][]byte{}, "StreamShapes.NoCtx": new(any)} {
		_, mt, err := s.lookup(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want := fmt.Sprintf("%T", item)
		if name == "StreamShapes.NoCtx" {
			want = "interface {}"
		}
		if mt.itemType == nil || mt.itemType.String() != want {
			t.Errorf("%s: item type %v, want %s", name, mt.itemType, want)
		}
	}
	for _, tc := range []struct {
		rcvr any
		want string
	}{
		{StreamChan{}, "StreamChan.Bad streams items of type chan int, which cannot travel over msgpack (it contains chan int)"},
		{StreamByValue{}, "StreamByValue.Bad takes a gotask.Stream[int], not a pointer to it"},
		{StreamAsArgs{}, "StreamAsArgs.Bad takes *gotask.Stream[int] as its args; a stream comes last"},
		{TooFew{}, "out *gotask.Stream[T] in place of reply *R"},
	} {
		if err := NewServer().Register(tc.rcvr); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Register(%T): %v, want %q", tc.rcvr, err, tc.want)
		}
	}
}

// TestStreamRaceClose: Sends racing with the method's return either arrive
// before the response or fail with ErrStreamClosed; nothing follows the
// response.
func TestStreamRaceClose(t *testing.T) {
	srv, st, _ := newStreamServer(t)
	c := serveStreams(t, srv)
	id := c.open("Streamer.Leak", nil, stream(1<<20))
	out := <-st.leaked
	var wg sync.WaitGroup
	sent := make([]int, 4)
	for g := range sent {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if err := out.Send(g); err != nil {
					if err != ErrStreamClosed {
						t.Errorf("Send: %v", err)
					}
					return
				}
				sent[g]++
			}
		}()
	}
	items, werr := c.collect(id)
	wg.Wait()
	total := 0
	for _, n := range sent {
		total += n
	}
	if werr != nil || len(items) != total {
		t.Fatalf("%d items arrived, %d sent; %+v", len(items), total, werr)
	}
	if early := c.pingPong(); len(early) != 0 {
		t.Fatalf("sent after the response: %+v", early)
	}
}

// TestStreamCloseReleasesWaitingSend: a Send from a goroutine that waits for
// credit when its method returns fails with ErrStreamClosed.
func TestStreamCloseReleasesWaitingSend(t *testing.T) {
	s := newOutStream(nil, 1, context.Background(), 0)
	done := make(chan error)
	go func() { done <- s.wait() }()
	waitState(t, "the Send waits", func() bool { _, _, w := s.state(); return w })
	close(s.done)
	if err := <-done; err != ErrStreamClosed {
		t.Fatalf("%v, want ErrStreamClosed", err)
	}
}
