package gotask

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

// heldReader returns data, then blocks in Read until release is closed (and
// then fails); blocked is closed when it blocks.
type heldReader struct {
	data    []byte
	blocked chan struct{}
	release chan struct{}
}

var errReleased = errors.New("released")

func (r *heldReader) Read(p []byte) (int, error) {
	if len(r.data) > 0 {
		n := copy(p, r.data)
		r.data = r.data[n:]
		return n, nil
	}
	close(r.blocked)
	<-r.release
	return 0, errReleased
}

// TestReadFrameAllocatesWhatArrived: a header declaring 64 MiB followed by ten
// bytes allocates about a step, not 64 MiB, while it waits for the rest.
func TestReadFrameAllocatesWhatArrived(t *testing.T) {
	const declared = 64 << 20
	r := &heldReader{
		data:    append(binary.BigEndian.AppendUint32(nil, declared), make([]byte, 10)...),
		blocked: make(chan struct{}),
		release: make(chan struct{}),
	}
	var before, during runtime.MemStats
	runtime.ReadMemStats(&before)
	done := make(chan error, 1)
	go func() {
		_, err := readFrame(r, declared)
		done <- err
	}()
	select {
	case <-r.blocked:
	case <-time.After(hangGuard):
		t.Fatal("readFrame never waited for the rest of the frame")
	}
	runtime.ReadMemStats(&during)
	close(r.release)
	if err := <-done; !errors.Is(err, errReleased) {
		t.Fatalf("readFrame: %v", err)
	}
	// Other tests running in parallel allocate too: a bound well below the
	// declared size, far above the step, tells the two apart.
	if got := during.TotalAlloc - before.TotalAlloc; got > declared/8 {
		t.Fatalf("%d bytes allocated for 10 bytes received (declared %d)", got, declared)
	}
}

// TestReadFrameSizes: payloads around the step sizes arrive whole, and a
// stream that ends inside one says how much arrived.
func TestReadFrameSizes(t *testing.T) {
	for _, n := range []int{1, frameStep - 1, frameStep, frameStep + 1, 2*frameStep + 7, 1 << 20, 3<<20 + 5} {
		payload := make([]byte, n)
		for i := range payload {
			payload[i] = byte(i * 7)
		}
		frame := append(binary.BigEndian.AppendUint32(nil, uint32(n)), payload...)
		got, err := readFrame(&choppyReader{frame[:4], frame[4:]}, DefaultMaxFrameSize)
		if err != nil || string(got) != string(payload) {
			t.Fatalf("%d bytes: %v, got %d bytes", n, err, len(got))
		}
		if _, err := readFrame(&choppyReader{frame[:4], frame[4 : 4+n-1]}, DefaultMaxFrameSize); errorCode(err) != codeTruncated {
			t.Fatalf("%d bytes, one missing: %v", n, err)
		}
	}
}

// choppyReader returns its header, then its body in reads of varied sizes.
type choppyReader struct{ hdr, body []byte }

func (r *choppyReader) Read(p []byte) (int, error) {
	if len(r.hdr) > 0 {
		n := copy(p, r.hdr)
		r.hdr = r.hdr[n:]
		return n, nil
	}
	if len(r.body) == 0 {
		return 0, io.EOF
	}
	k := min(len(p), len(r.body), 1+len(r.body)%50000)
	n := copy(p, r.body[:k])
	r.body = r.body[n:]
	return n, nil
}

// Watch is a service whose call Wait runs until its context is cancelled,
// and says so.
type Watch struct {
	started   chan struct{}
	cancelled chan struct{}
}

func newWatch() *Watch {
	return &Watch{started: make(chan struct{}, 1), cancelled: make(chan struct{}, 1)}
}

func (w *Watch) Wait(ctx context.Context, _ any, _ *any) error {
	w.started <- struct{}{}
	<-ctx.Done()
	w.cancelled <- struct{}{}
	return ctx.Err()
}

func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(hangGuard):
		t.Fatal(what)
	}
}

// slowServer returns a server with Svc and Watch registered and short frame
// and write timeouts.
func slowServer(t *testing.T) (*Server, *syncBuffer, *Watch) {
	srv, logBuf := newTestServer(t, newSvc())
	w := newWatch()
	if err := srv.Register(w); err != nil {
		t.Fatal(err)
	}
	srv.FrameTimeout = 100 * time.Millisecond
	srv.WriteTimeout = 100 * time.Millisecond
	return srv, logBuf, w
}

// TestSlowFrameTimeout: a client that sends a frame's header declaring 64 MiB
// and ten bytes of it, then nothing, is closed once the frame timeout passes,
// its calls cancelled and one line logged; a client idle between frames for
// longer is not.
func TestSlowFrameTimeout(t *testing.T) {
	for _, network := range []string{"unix", "tcp"} {
		t.Run(network, func(t *testing.T) {
			srv, logBuf, w := slowServer(t)
			addr := serveListener(t, srv, network)
			idle := newTestClient(t, dialT(t, network, addr))
			if err := idle.call("Svc.Teapot", nil, nil); errType(err) != "teapot" {
				t.Fatalf("idle client: %v", err)
			}
			conn := dialT(t, network, addr)
			slow := newTestClient(t, conn)
			_, waiting := slow.start("Watch.Wait", nil, nil)
			waitFor(t, w.started, "the call did not start")
			partial := append(binary.BigEndian.AppendUint32(nil, 64<<20), make([]byte, 10)...)
			if _, err := conn.Write(partial); err != nil {
				t.Fatal(err)
			}
			waitFor(t, w.cancelled, "the stalled connection's call was not cancelled")
			if err := slow.wait(waiting, nil); err == nil || errType(err) != "" {
				t.Fatalf("the stalled connection's call: %v", err)
			}
			waitLines(t, logBuf.String, 1, "the stalled frame")
			if s := logBuf.String(); strings.Count(s, "\n") != 1 || !strings.Contains(s, "-frame-timeout") || !strings.Contains(s, "10 of 67108864") {
				t.Fatalf("log %q", s)
			}
			// The idle client waited longer than the frame timeout between frames.
			if err := idle.call("Svc.Teapot", nil, nil); errType(err) != "teapot" {
				t.Fatalf("idle client after: %v", err)
			}
		})
	}
}

// TestSlowTimeoutDefaults: zero timeouts mean the defaults, negative ones
// none, and a connection that is not a net.Conn (a pipe) has none.
func TestSlowTimeoutDefaults(t *testing.T) {
	srv, _, _ := slowServer(t)
	a, _ := net.Pipe()
	srv.FrameTimeout = -1
	if c := srv.newConn(a); c.frameTimeout != 0 || c.writeTimeout != 100*time.Millisecond {
		t.Fatalf("timeouts %v, %v", c.frameTimeout, c.writeTimeout)
	}
	srv.FrameTimeout, srv.WriteTimeout = 0, 0
	if c := srv.newConn(a); c.frameTimeout != DefaultFrameTimeout || c.writeTimeout != DefaultWriteTimeout {
		t.Fatalf("timeouts %v, %v", c.frameTimeout, c.writeTimeout)
	}
	if c := srv.newConn(pipeConn{}); c.frameTimeout != 0 || c.writeTimeout != 0 {
		t.Fatalf("a pipe has timeouts %v, %v", c.frameTimeout, c.writeTimeout)
	}
}

// TestSlowWriteTimeout: a client that makes calls with large replies and
// never reads is closed once a write makes no progress for the write
// timeout, its other calls cancelled and one line logged; other connections
// go on.
func TestSlowWriteTimeout(t *testing.T) {
	for _, network := range []string{"unix", "tcp"} {
		t.Run(network, func(t *testing.T) {
			srv, logBuf, w := slowServer(t)
			addr := serveListener(t, srv, network)
			other := newTestClient(t, dialT(t, network, addr))
			conn := dialT(t, network, addr)
			if _, err := conn.Write(frameOf(t, []any{0, 1, "Watch.Wait", nil, nil})); err != nil {
				t.Fatal(err)
			}
			waitFor(t, w.started, "the call did not start")
			// 16 MiB is more than any socket buffer takes: the writer blocks
			// inside it. The client reads nothing, not even the $hello.
			if _, err := conn.Write(frameOf(t, []any{0, 2, "Svc.Blob", 16 << 20, nil})); err != nil {
				t.Fatal(err)
			}
			waitFor(t, w.cancelled, "the non-reading connection's call was not cancelled")
			waitLines(t, logBuf.String, 1, "the stalled reader")
			if s := logBuf.String(); strings.Count(s, "\n") != 1 || !strings.Contains(s, "-write-timeout") {
				t.Fatalf("log %q", s)
			}
			conn.SetReadDeadline(time.Now().Add(hangGuard))
			if _, err := io.Copy(io.Discard, conn); err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
				t.Fatalf("reading what was sent before the close: %v", err)
			}
			if err := other.call("Svc.Teapot", nil, nil); errType(err) != "teapot" {
				t.Fatalf("other client: %v", err)
			}
		})
	}
}

// TestSlowReaderPauses: while more than the reply queue limit waits for the
// writer, the server reads no new request; once the client reads, it does.
func TestSlowReaderPauses(t *testing.T) {
	srv, _, _ := slowServer(t)
	srv.WriteTimeout = -1
	srv.replyQueueLimit = 100 << 10
	greedy, server := net.Pipe()
	t.Cleanup(func() { greedy.Close() })
	stuck := &stuckConn{Conn: server, writing: make(chan struct{})}
	served := make(chan struct{})
	go func() {
		srv.ServeConn(stuck)
		close(served)
	}()
	// The writer is now blocked on the $hello, which nobody reads.
	waitFor(t, stuck.writing, "no $hello")
	srv.mu.Lock()
	var gc *conn
	for c := range srv.conns {
		gc = c
	}
	srv.mu.Unlock()
	queued := func(n int) {
		t.Helper()
		deadline := time.Now().Add(hangGuard)
		for len(gc.out) < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d replies queued, want %d", len(gc.out), n)
			}
			time.Sleep(time.Millisecond) // polling the server's state; no event says when a reply is queued
		}
	}
	for i := 1; i <= 2; i++ {
		if _, err := greedy.Write(frameOf(t, []any{0, i, "Svc.Blob", 64 << 10, nil})); err != nil {
			t.Fatal(err)
		}
		queued(i)
	}
	// The reader may have been waiting for the next frame before the second
	// reply was queued: it reads that one, and stops before the next. A
	// net.Pipe write returns only once the reader took it: one that times
	// out was not read.
	sent := 2
	for {
		greedy.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		n, err := greedy.Write(frameOf(t, []any{0, sent + 1, "Svc.Blob", 10, nil}))
		if err != nil {
			if n != 0 {
				t.Fatalf("%d bytes of a request read, then %v", n, err)
			}
			break
		}
		sent++
		if sent > 3 {
			t.Fatalf("the server read request %d with %d bytes of replies queued", sent, gc.queued.Load())
		}
	}
	greedy.SetWriteDeadline(time.Time{})
	c := newTestClient(t, greedy) // reads the $hello and the replies
	c.mu.Lock()
	c.nextID = uint32(sent)
	c.mu.Unlock()
	if err := c.call("Svc.Blob", 10, nil); err != nil {
		t.Fatalf("after the client read: %v", err)
	}
	greedy.Close()
	waitFor(t, served, "the connection is still served")
}
