package gotask

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/trio-gotask/trio-gotask/go/gotask/internal/scan"
)

const (
	goodSecret  = "correct-horse-battery-staple"
	wrongSecret = "incorrect-donkey-battery-paperclip"
)

// serveListener serves srv on a new listener of network ("unix" or "tcp") and
// returns its address; the server is shut down when the test ends.
func serveListener(t *testing.T, srv *Server, network string) string {
	t.Helper()
	l := listenT(t, network)
	serveOn(t, srv, l)
	return l.Addr().String()
}

func listenT(t *testing.T, network string) net.Listener {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), "s.sock")
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// serveOn serves srv on l until the test ends.
func serveOn(t *testing.T, srv *Server, l net.Listener) {
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-served
	})
}

// gatedListener hands Serve a connection only when the test lets it (see
// serveGated).
type gatedListener struct {
	net.Listener
	gate      chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
}

func (l *gatedListener) Accept() (net.Conn, error) {
	select {
	case <-l.gate:
		return l.Listener.Accept()
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *gatedListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// serveGated serves srv on a new listener of network, and returns a dial
// that connects, sends first (nil: nothing) and, with halfClose, ends the
// stream, and only then lets the server accept the connection: what a client
// sends first is there before the server's auth deadline starts, so only a
// client that sends nothing, or too little, can be late, however slow the
// machine.
func serveGated(t *testing.T, srv *Server, network string) (dial func(first []byte, halfClose bool) net.Conn) {
	t.Helper()
	l := &gatedListener{Listener: listenT(t, network), gate: make(chan struct{}), closed: make(chan struct{})}
	serveOn(t, srv, l)
	return func(first []byte, halfClose bool) net.Conn {
		t.Helper()
		conn := dialT(t, network, l.Addr().String())
		if first != nil {
			if _, err := conn.Write(first); err != nil {
				t.Fatal(err)
			}
		}
		if halfClose {
			conn.(interface{ CloseWrite() error }).CloseWrite()
		}
		select {
		case l.gate <- struct{}{}:
		case <-time.After(hangGuard):
			t.Fatal("the server does not accept")
		}
		return conn
	}
}

func dialT(t *testing.T, network, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// frameOf returns v encoded as one frame.
func frameOf(t testing.TB, v any) []byte {
	t.Helper()
	payload, err := marshalCompact(v)
	if err != nil {
		t.Fatal(err)
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(payload))), payload...)
}

func authFrame(t testing.TB, secret any) []byte { return frameOf(t, []any{2, "$auth", secret}) }

// authClient returns a test client on conn that authenticated with secret.
func authClient(t *testing.T, conn net.Conn, secret string) *testClient {
	t.Helper()
	if _, err := conn.Write(authFrame(t, secret)); err != nil {
		t.Fatal(err)
	}
	return newTestClient(t, conn)
}

// expectClosed checks that the peer closes conn within d having sent at most
// a $refused notification (whose reason it returns) and nothing else.
func expectClosed(t *testing.T, conn net.Conn, d time.Duration, what string) string {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(d))
	reason := ""
	for {
		payload, err := readFrame(conn, DefaultMaxFrameSize)
		var ne net.Error
		switch {
		case err == nil:
			m, perr := parseMessage(payload)
			cur := scan.Cursor{B: m.params}
			text, isStr := "", false
			if perr == nil {
				text, isStr = cur.Str()
			}
			if perr != nil || m.typ != typeNotification || m.method != "$refused" || !isStr || reason != "" {
				t.Fatalf("%s: the server sent %+v (%v) instead of closing", what, m, perr)
			}
			reason = text
			continue
		case errors.As(err, &ne) && ne.Timeout():
			t.Fatalf("%s: connection not closed within %v", what, d)
		case err == io.EOF || errors.Is(err, syscall.ECONNRESET):
			return reason
		default:
			// A TLS connection ends with an alert, and a half-sent frame with
			// a truncated one: closed all the same.
			return reason
		}
	}
}

// waitLines waits until log holds n lines.
func waitLines(t *testing.T, log func() string, n int, what string) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for strings.Count(log(), "\n") < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: want %d log lines, have:\n%s", what, n, log())
		}
		time.Sleep(2 * time.Millisecond) // polling a log written by another goroutine
	}
}

// badFirstFrames are first frames that must close a connection when the
// server has a secret; halfClose ends the stream after them.
var badFirstFrames = []struct {
	name      string
	data      func(t testing.TB) []byte
	halfClose bool
	reason    string // expected in the log line
}{
	{"wrong secret", func(t testing.TB) []byte { return authFrame(t, wrongSecret) }, false, "wrong secret"},
	{"empty secret", func(t testing.TB) []byte { return authFrame(t, "") }, false, "wrong secret"},
	{"secret prefix", func(t testing.TB) []byte { return authFrame(t, goodSecret[:10]) }, false, "wrong secret"},
	{"secret as bin", func(t testing.TB) []byte { return authFrame(t, []byte(goodSecret)) }, false, "not a string"},
	{"request first", func(t testing.TB) []byte {
		return frameOf(t, []any{0, 1, "Svc.Block", nil, nil})
	}, false, "not an $auth"},
	{"cancel first", func(t testing.TB) []byte { return frameOf(t, []any{2, "$cancel", 1}) }, false, "not an $auth"},
	{"auth as request", func(t testing.TB) []byte {
		return frameOf(t, []any{0, 1, "$auth", goodSecret, nil})
	}, false, "not an $auth"},
	{"garbage", func(t testing.TB) []byte { return []byte("GET / HTTP/1.1\r\n\r\n") }, false, "too long"},
	{"bad msgpack", func(t testing.TB) []byte { return []byte{0, 0, 0, 1, 0xc1} }, false, "bad_msgpack"},
	{"4GiB", func(t testing.TB) []byte { return []byte{0xff, 0xff, 0xff, 0xff} }, false, "too long"},
	{"truncated", func(t testing.TB) []byte { return authFrame(t, goodSecret)[:10] }, true, "truncated"},
	// The secret followed by a pipelined request: the request must not run either.
	{"wrong secret then request", func(t testing.TB) []byte {
		return append(authFrame(t, wrongSecret), frameOf(t, []any{0, 1, "Svc.Block", nil, nil})...)
	}, false, "wrong secret"},
}

func TestServerSecret(t *testing.T) {
	for _, network := range []string{"unix", "tcp"} {
		t.Run(network, func(t *testing.T) {
			svc := newSvc()
			srv, logBuf := newTestServer(t, svc)
			srv.Secret = goodSecret
			srv.HandshakeTimeout = 100 * time.Millisecond
			dial := serveGated(t, srv, network)
			log := func() string { return logBuf.String() }

			good := newTestClient(t, dial(authFrame(t, goodSecret), false))
			if err := good.call("Svc.Teapot", nil, nil); errType(err) != "teapot" {
				t.Fatalf("authenticated call: %v", err)
			}
			// The secret and a request in one write: the request is served.
			conn := dial(append(authFrame(t, goodSecret), frameOf(t, []any{0, 7, "Svc.Teapot", nil, nil})...), false)
			if m := readMessage(t, conn); m.typ != typeResponse || m.msgid != 7 || m.errMap == nil || m.errMap.Type != "teapot" {
				t.Fatalf("pipelined request: %+v", m)
			}

			lines := 0
			for _, bad := range badFirstFrames {
				conn := dial(bad.data(t), bad.halfClose)
				told := expectClosed(t, conn, hangGuard, bad.name)
				if !bad.halfClose && !strings.Contains(told, bad.reason) {
					t.Errorf("%s: the client was told %q, which does not say %q", bad.name, told, bad.reason)
				}
				lines++
				waitLines(t, log, lines, bad.name)
				if last := lastLine(log()); !strings.Contains(last, bad.reason) {
					t.Errorf("%s: log line %q does not say %q", bad.name, last, bad.reason)
				}
				// Counted failures are reported once a minute: have the next logged in full.
				srv.admitLog.flush()
				if err := good.call("Svc.Teapot", nil, nil); errType(err) != "teapot" {
					t.Fatalf("%s: authenticated connection: %v", bad.name, err)
				}
			}

			// A probe (connect, close: a readiness check) is closed without a log line.
			expectClosed(t, dial(nil, true), hangGuard, "probe")
			if err := good.call("Svc.Teapot", nil, nil); errType(err) != "teapot" {
				t.Fatalf("after a probe: %v", err)
			}

			// Silence: closed after the auth timeout, while others are served.
			start := time.Now()
			silent := dial(nil, false)
			if err := good.call("Svc.Teapot", nil, nil); errType(err) != "teapot" {
				t.Fatalf("beside a silent connection: %v", err)
			}
			if told := expectClosed(t, silent, hangGuard, "silent"); !strings.Contains(told, "no $auth frame within") {
				t.Errorf("silent: the client was told %q", told)
			}
			// The deadline started after start: this holds on any machine.
			if d := time.Since(start); d < srv.HandshakeTimeout {
				t.Errorf("silent connection closed after %v, before the %v timeout", d, srv.HandshakeTimeout)
			}
			lines++
			waitLines(t, log, lines, "silent")
			if last := lastLine(log()); !strings.Contains(last, "no $auth frame within") {
				t.Errorf("silent: log line %q", last)
			}
			srv.admitLog.flush()
			// Half a frame, then silence: the deadline covers the whole first frame.
			expectClosed(t, dial(authFrame(t, goodSecret)[:6], false), hangGuard, "half a frame")
			lines++
			waitLines(t, log, lines, "half a frame")

			// The authenticated connection outlived the timeout (it was admitted
			// before the silent one, which the timeout closed): the deadline was lifted.
			if err := good.call("Svc.Teapot", nil, nil); errType(err) != "teapot" {
				t.Fatalf("authenticated connection after the auth timeout: %v", err)
			}
			if n := len(svc.started); n != 0 {
				t.Fatalf("%d requests ran on unauthenticated connections", n)
			}
			s := log()
			if strings.Count(s, "\n") != lines {
				t.Fatalf("want %d log lines, got:\n%s", lines, s)
			}
			for _, secret := range []string{goodSecret, wrongSecret, goodSecret[:10]} {
				if strings.Contains(s, secret) {
					t.Fatalf("the log contains a secret %q:\n%s", secret, s)
				}
			}
		})
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	return lines[len(lines)-1]
}

// readMessage reads one message from conn, skipping the sidecar's $hello,
// failing the test after hangGuard.
func readMessage(t *testing.T, conn net.Conn) *message {
	t.Helper()
	for {
		if m := readAny(t, conn); m.typ != typeNotification || m.method != "$hello" {
			return m
		}
	}
}

// readAny reads one message from conn, failing the test after hangGuard.
func readAny(t *testing.T, conn net.Conn) *message {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(hangGuard))
	defer conn.SetReadDeadline(time.Time{})
	payload, err := readFrame(conn, DefaultMaxFrameSize)
	if err != nil {
		t.Fatal(err)
	}
	m, err := parseMessage(payload)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestServerNoSecret: without a secret nothing is asked, and an $auth
// notification is ignored; the handshake timeout still closes a connection
// that sends nothing, and only such a one.
func TestServerNoSecret(t *testing.T) {
	for _, network := range []string{"unix", "tcp"} {
		t.Run(network, func(t *testing.T) {
			srv, logBuf := newTestServer(t, newSvc())
			srv.HandshakeTimeout = 50 * time.Millisecond
			dial := serveGated(t, srv, network)
			if err := newTestClient(t, dial(authFrame(t, "whatever"), false)).call("Svc.Teapot", nil, nil); errType(err) != "teapot" {
				t.Fatal(err)
			}
			// Sent before the server accepted it, the $hello is there before the deadline starts.
			c := newTestClient(t, dial(frameOf(t, []any{2, "$hello", map[string]any{"version": 2}}), false))
			start := time.Now()
			silent := dial(nil, false)
			if m := readAny(t, silent); m.typ != typeNotification || m.method != "$hello" {
				t.Fatalf("silent connection: first frame %+v, want the $hello", m)
			}
			// Our $hello came first: the client is told nothing more.
			if told := expectClosed(t, silent, hangGuard, "silent"); told != "" {
				t.Errorf("silent: told %q after the $hello", told)
			}
			if d := time.Since(start); d < srv.HandshakeTimeout {
				t.Errorf("silent connection closed after %v, before the %v timeout", d, srv.HandshakeTimeout)
			}
			waitLines(t, logBuf.String, 1, "silent")
			if s := logBuf.String(); !strings.Contains(s, "no $hello or other frame within 50ms (-handshake-timeout)") {
				t.Errorf("log: %q", s)
			}
			// Half a frame is not an opening either.
			half := dial(frameOf(t, []any{0, 1, "Svc.Teapot", nil, nil})[:7], false)
			readAny(t, half) // the $hello
			expectClosed(t, half, hangGuard, "half a frame")
			// Dialled before the silent one: had the timeout not been lifted, it would be closed by now.
			if err := c.call("Svc.Teapot", nil, nil); errType(err) != "teapot" {
				t.Fatalf("the connection that said $hello, after the timeout: %v", err)
			}
		})
	}
}

func TestServeConnIgnoresSecret(t *testing.T) {
	srv, _ := newTestServer(t, newSvc())
	srv.Secret = goodSecret
	c, _ := serve(t, srv) // ServeConn, as for the pipe
	if err := c.call("Svc.Teapot", nil, nil); errType(err) != "teapot" {
		t.Fatal(err)
	}
}

func TestUnixSocketMode(t *testing.T) {
	for _, address := range []string{"", filepath.Join(t.TempDir(), "s.sock")} {
		addr, err := parseAddress(address)
		if err != nil || addr.network != "unix" {
			t.Fatalf("parseAddress(%q) = %+v, %v", address, addr, err)
		}
		l, cleanup, err := listen(addr)
		if err != nil {
			t.Fatalf("listen(%q): %v", address, err)
		}
		path := l.Addr().String()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
			t.Errorf("socket %s has mode %v, want 0600", path, fi.Mode())
		}
		if address == "" {
			if di, err := os.Stat(filepath.Dir(path)); err != nil || di.Mode().Perm() != 0o700 {
				t.Errorf("private directory: %v %v", di.Mode(), err)
			}
		}
		cleanup()
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("socket left behind: %v", err)
		}
	}
}

func TestRunTLSFlags(t *testing.T) {
	certFile, keyFile := writeCert(t)
	base := Options{Standalone: true, MaxInflight: 1, Grace: time.Second}
	for _, tc := range []struct {
		name          string
		edit          func(o *Options)
		want          string
		wantHandshake bool
	}{
		{"cert only", func(o *Options) { o.Address, o.TLSCert = "127.0.0.1:0", certFile }, "go together", false},
		{"key only", func(o *Options) { o.Address, o.TLSKey = "127.0.0.1:0", keyFile }, "go together", false},
		{"unix", func(o *Options) { o.Address, o.TLSCert, o.TLSKey = filepath.Join(t.TempDir(), "s"), certFile, keyFile }, "TCP", false},
		{"default address", func(o *Options) { o.TLSCert, o.TLSKey = certFile, keyFile }, "TCP", false},
		{"pipe", func(o *Options) { o.ListenOnPipe, o.TLSCert, o.TLSKey = true, certFile, keyFile }, "TCP", false},
		{"missing file", func(o *Options) { o.Address, o.TLSCert, o.TLSKey = "127.0.0.1:0", certFile+".nope", keyFile }, "loading", false},
		{"key for cert", func(o *Options) { o.Address, o.TLSCert, o.TLSKey = "127.0.0.1:0", keyFile, keyFile }, "loading", false},
	} {
		o := base
		tc.edit(&o)
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), NewServer(), o, false, strings.NewReader(""), &stdout, &stderr)
		if code != 1 || stdout.Len() != 0 || !strings.Contains(stderr.String(), tc.want) || strings.Count(stderr.String(), "\n") != 1 {
			t.Errorf("%s: exit %d, stdout %q, stderr %q", tc.name, code, stdout.String(), stderr.String())
		}
	}
}

// Big answers with 256 KiB, for the backpressure test.
type Big struct{ calls atomic.Int64 }

func (b *Big) Get(_ any, r *[]byte) error {
	b.calls.Add(1)
	*r = make([]byte, 256<<10)
	return nil
}

// stuckConn is the server's end of a connection whose client never reads:
// its writes block until the connection closes. writing is closed when the
// first one begins.
type stuckConn struct {
	net.Conn // of a net.Pipe whose other end nobody reads
	once     sync.Once
	writing  chan struct{}
}

func (c *stuckConn) Write(p []byte) (int, error) {
	c.once.Do(func() { close(c.writing) })
	return c.Conn.Write(p)
}

// TestServerBackpressure: a client that sends requests and never reads the
// replies makes the server stop reading from it, without holding up other
// connections; closing it frees everything.
func TestServerBackpressure(t *testing.T) {
	srv, _ := newTestServer(t, newSvc())
	big := new(Big)
	if err := srv.Register(big); err != nil {
		t.Fatal(err)
	}
	srv.MaxInflight = 2
	greedy, server := net.Pipe()
	t.Cleanup(func() { greedy.Close() })
	stuck := &stuckConn{Conn: server, writing: make(chan struct{})}
	served := make(chan struct{})
	go func() {
		srv.ServeConn(stuck)
		close(served)
	}()
	// The $hello, which nobody reads: from here on the server's writer takes
	// nothing more, so a reply keeps the slot of its call.
	<-stuck.writing
	srv.mu.Lock()
	var gc *conn
	for c := range srv.conns {
		gc = c
	}
	srv.mu.Unlock()

	// queued waits until the server queued n frames for its writer. No event
	// says so: this polls.
	queued := func(n int, kept <-chan struct{}) {
		t.Helper()
		deadline := time.Now().Add(hangGuard)
		for len(gc.out) < n {
			select {
			case <-kept:
				t.Fatal("the server kept reading two million requests whose replies nobody read")
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d frames queued, want %d; %d calls ran", len(gc.out), n, big.calls.Load())
			}
			time.Sleep(time.Millisecond) // polling the server's state
		}
	}
	// One request at a time: each call's reply keeps its slot, so the request
	// after the MaxInflight-th is answered busy, however fast the calls end.
	for i := 0; i <= srv.MaxInflight; i++ {
		if _, err := greedy.Write(frameOf(t, []any{0, i, "Big.Get", nil, nil})); err != nil {
			t.Fatal(err)
		}
		queued(i+1, nil)
	}
	if n := big.calls.Load(); n != int64(srv.MaxInflight) {
		t.Fatalf("%d calls ran while nobody read, MaxInflight %d", n, srv.MaxInflight)
	}

	var batch []byte
	for i := 0; i < 1000; i++ {
		batch = append(batch, frameOf(t, []any{0, i, "Big.Get", nil, nil})...)
	}
	kept := make(chan struct{}) // closed if the server read two million requests
	go func() {
		for i := 0; i < 2000; i++ {
			if _, err := greedy.Write(batch); err != nil {
				return // closed below
			}
		}
		close(kept)
	}()
	// The server stops reading for good once its queue is full: nothing takes
	// from it any more.
	queued(cap(gc.out), kept)
	c, _ := serve(t, srv)
	if err := c.call("Svc.Teapot", nil, nil); errType(err) != "teapot" {
		t.Fatalf("other connection: %v", err)
	}
	if n := big.calls.Load(); n != int64(srv.MaxInflight) {
		t.Fatalf("%d calls ran while nobody read, MaxInflight %d", n, srv.MaxInflight)
	}
	srv.mu.Lock()
	active := srv.active
	srv.mu.Unlock()
	if active > srv.MaxInflight+1 {
		t.Fatalf("%d calls active, MaxInflight %d", active, srv.MaxInflight)
	}

	greedy.Close()
	select {
	case <-served:
	case <-time.After(hangGuard):
		t.Fatal("the greedy client closed, and its connection is still served")
	}
	deadline := time.Now().Add(hangGuard)
	for {
		srv.mu.Lock()
		active, conns := srv.active, len(srv.conns)
		srv.mu.Unlock()
		if active == 0 && conns == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the greedy client closed: %d calls active, %d connections", active, conns)
		}
		time.Sleep(time.Millisecond) // a call's last step ends after ServeConn returned; no event says when
	}
	// The requests still buffered when it closed were dropped, not run.
	if n := big.calls.Load(); n != int64(srv.MaxInflight) {
		t.Errorf("%d calls ran, %d after the client closed", n, n-int64(srv.MaxInflight))
	}
	if err := c.call("Svc.Teapot", nil, nil); errType(err) != "teapot" {
		t.Fatalf("other connection after: %v", err)
	}
}

// deepRequest returns a request frame for App.Echo whose params are depth
// nested arrays.
func deepRequest(depth int) []byte {
	payload := append([]byte{0x95, 0x00, 0x01, 0xa8}, "App.Echo"...)
	payload = append(payload, bytes.Repeat([]byte{0x91}, depth)...)
	payload = append(payload, 0xc0, 0xc0)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(payload))), payload...)
}

// TestDeepNestingRejected: 100,000 nested arrays are a protocol error, not a
// stack overflow, both in the parser and on a live connection.
func TestDeepNestingRejected(t *testing.T) {
	payload := deepRequest(100000)[4:]
	if _, err := parseMessage(payload); errorCode(err) != codeBadMsgpack || !strings.Contains(err.Error(), "nesting") {
		t.Fatalf("parse: %v", err)
	}
	srv, logBuf := newTestServer(t, newSvc())
	c, done := serve(t, srv)
	go c.writeFrame(payload) // net.Pipe: the write returns once the server read it all
	select {
	case <-done:
	case <-time.After(hangGuard):
		t.Fatal("connection not closed")
	}
	if s := logBuf.String(); strings.Count(s, "\n") != 1 || !strings.Contains(s, "nesting") {
		t.Fatalf("log %q", s)
	}
}

// writeUntilBlocked writes batch up to rounds times and reports whether a write
// ever stalled for longer than wait: the peer stopped reading (backpressure).
func writeUntilBlocked(t *testing.T, conn net.Conn, batch []byte, rounds int, wait time.Duration) bool {
	t.Helper()
	for i := 0; i < rounds; i++ {
		conn.SetWriteDeadline(time.Now().Add(wait))
		if _, err := conn.Write(batch); err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatal(err)
			}
			return true
		}
	}
	return false
}
