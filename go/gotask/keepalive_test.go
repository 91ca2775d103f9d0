package gotask

import (
	"context"
	"math"
	"net"
	"testing"
	"time"

	"github.com/trio-gotask/trio-gotask/go/gotask/internal/scan"
)

// sendPing sends [2, "$ping", token], the token given as raw msgpack.
func (c *testClient) sendPing(token []byte) {
	c.t.Helper()
	payload := append([]byte{0x93, typeNotification, 0xa5, '$', 'p', 'i', 'n', 'g'}, token...)
	if err := c.writeFrame(payload); err != nil {
		c.t.Fatal(err)
	}
}

// wantPong waits for the sidecar's next message and checks that it is
// [2, "$pong", token].
func (c *testClient) wantPong(token uint64) {
	c.t.Helper()
	m := c.next()
	cur := scan.Cursor{B: m.params}
	if got, ok := cur.Uint(); m.typ != typeNotification || m.method != "$pong" || !ok || got != token {
		c.t.Fatalf("got %+v (params %x), want [2, \"$pong\", %d]", m, m.params, token)
	}
}

// serveInbox serves srv on an in-memory connection, and returns a client
// whose inbox gets the sidecar's notifications, and a channel closed when
// ServeConn returns.
func serveInbox(t *testing.T, srv *Server) (*testClient, chan struct{}) {
	a, b := net.Pipe()
	done := make(chan struct{})
	go func() {
		srv.ServeConn(b)
		close(done)
	}()
	return startTestClient(t, a, make(chan *message, 64)), done
}

// TestServerPing: the sidecar announces "ping" in its $hello and answers each
// $ping with a $pong of the same token at once: while every -max-inflight
// slot is held by a call that does not return, and while the server shuts
// down. A $ping whose token is not a non-negative integer is ignored.
func TestServerPing(t *testing.T) {
	svc := newSvc()
	srv, logBuf := newTestServer(t, svc)
	srv.MaxInflight = 2
	srv.replyWait = time.Minute // the cancelled calls' replies are sent, however slow the machine
	c, done := serveInbox(t, srv)
	c.sendHello(map[string]any{"max_frame_size": DefaultMaxFrameSize, "ping": true})
	if hello := <-c.hello; !helloPing(hello.params) {
		t.Fatalf("the sidecar's $hello %x does not announce ping", hello.params)
	}

	_, ch1 := c.start("Svc.Block", nil, nil)
	_, ch2 := c.start("Svc.Block", nil, nil)
	<-svc.started
	<-svc.started
	for _, tc := range []struct {
		raw   []byte
		token uint64
	}{
		{[]byte{0x00}, 0},
		{[]byte{0x07}, 7},
		{[]byte{0xcf, 0, 0, 0, 0, 0, 0, 0, 7}, 7}, // a uint 64 holding 7: answered in the shortest form
		{[]byte{0xd3, 0, 0, 0, 0, 0, 0, 1, 0}, 256},
		{[]byte{0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, math.MaxUint64},
	} {
		c.sendPing(tc.raw)
		c.wantPong(tc.token)
	}
	// Not a token: no $pong, and the connection goes on (the next $pong is the
	// next valid ping's).
	for _, raw := range [][]byte{{0xff}, {0xc0}, {0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0}, {0xa1, '7'}, {0x91, 0x07}, {0x81, 0xa1, 't', 0x07}} {
		c.sendPing(raw)
	}
	c.sendPing([]byte{0x08})
	c.wantPong(8)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(ctx) }()
	<-c.goaway
	c.sendPing([]byte{0x09})
	c.wantPong(9)
	cancel()
	for _, ch := range []<-chan *message{ch1, ch2} {
		if err := c.wait(ch, nil); errType(err) != "cancelled" {
			t.Errorf("a blocked call: %v, want cancelled", err)
		}
	}
	<-shut
	<-done
	if logBuf.String() != "" {
		t.Errorf("logged %q", logBuf.String())
	}
}

// TestServerRecordsClientPing: the sidecar records whether the client's $hello
// announced that it answers pings (true, exactly).
func TestServerRecordsClientPing(t *testing.T) {
	for _, tc := range []struct {
		hello map[string]any
		want  bool
	}{
		{map[string]any{"max_frame_size": 1 << 20, "ping": true}, true},
		{map[string]any{"max_frame_size": 1 << 20, "max_host_calls": 2, "ping": true}, true},
		{map[string]any{"ping": true, "max_frame_size": 1 << 20}, true},
		{map[string]any{"max_frame_size": 1 << 20}, false},
		{map[string]any{"max_frame_size": 1 << 20, "ping": false}, false},
		{map[string]any{"max_frame_size": 1 << 20, "ping": 1}, false},
		{map[string]any{"max_frame_size": 1 << 20, "ping": "true"}, false},
	} {
		srv, _, _ := newHostServer(t)
		c, _ := serveHost(t, srv, tc.hello) // returns once the $hello was read
		srv.mu.Lock()
		var got []bool
		for sc := range srv.conns {
			got = append(got, sc.clientPings.Load())
		}
		srv.mu.Unlock()
		if len(got) != 1 || got[0] != tc.want {
			t.Errorf("%v: recorded %v, want %v", tc.hello, got, tc.want)
		}
		c.rwc.Close()
	}
}
