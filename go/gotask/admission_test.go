package gotask

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestServerMaxConns: past MaxConns a connection is told why and closed, the
// ones admitted are unaffected, and a new one gets in once one closes.
func TestServerMaxConns(t *testing.T) {
	for _, network := range []string{"unix", "tcp"} {
		t.Run(network, func(t *testing.T) {
			srv, logBuf := newTestServer(t, newSvc())
			srv.MaxConns = 2
			addr := serveListener(t, srv, network)
			first := newTestClient(t, dialT(t, network, addr))
			second := dialT(t, network, addr)
			if m := readAny(t, second); m.method != "$hello" {
				t.Fatalf("second connection: %+v", m)
			}
			for i := range 3 {
				over := dialT(t, network, addr)
				told := expectClosed(t, over, hangGuard, "over the limit")
				if !strings.Contains(told, "too many connections") || !strings.Contains(told, "-max-conns limit of 2") {
					t.Fatalf("over the limit %d: told %q", i, told)
				}
			}
			if err := first.call("Svc.Teapot", nil, nil); errType(err) != "teapot" {
				t.Fatalf("an admitted connection: %v", err)
			}
			waitLines(t, logBuf.String, 1, "refused")
			if s := logBuf.String(); strings.Count(s, "\n") != 1 || !strings.Contains(s, "-max-conns") {
				t.Fatalf("log: %q", s)
			}
			// A slot frees when a connection closes: the server learns it when
			// it reads EOF, so retry until then.
			second.Close()
			deadline := time.Now().Add(hangGuard)
			for {
				c := dialT(t, network, addr)
				m := readAny(t, c)
				if m.method == "$hello" {
					if err := newTestClient(t, c).call("Svc.Teapot", nil, nil); errType(err) != "teapot" {
						t.Fatalf("after a slot freed: %v", err)
					}
					break
				}
				c.Close()
				if time.Now().After(deadline) {
					t.Fatal("no slot freed after a connection closed")
				}
			}
		})
	}
}

// TestServerMaxConnsTLS: a TLS connection past the limit is closed before its
// handshake, which costs the server as much as the client.
func TestServerMaxConnsTLS(t *testing.T) {
	cert, err := tls.LoadX509KeyPair(writeCert(t))
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := newTestServer(t, newSvc())
	srv.MaxConns = 1
	l := tls.NewListener(listenT(t, "tcp"), &tls.Config{Certificates: []tls.Certificate{cert}})
	serveOn(t, srv, l)
	cfg := &tls.Config{InsecureSkipVerify: true}
	first, err := tls.Dial("tcp", l.Addr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if err := newTestClient(t, first).call("Svc.Teapot", nil, nil); errType(err) != "teapot" {
		t.Fatal(err)
	}
	if c, err := tls.Dial("tcp", l.Addr().String(), cfg); err == nil {
		c.Close()
		t.Fatal("a TLS handshake past the limit succeeded")
	}
}

// flakyListener fails its first n Accepts with err.
type flakyListener struct {
	net.Listener
	mu  sync.Mutex
	n   int
	err error
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if l.n > 0 {
		l.n--
		l.mu.Unlock()
		return nil, l.err
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

// TestServeSurvivesAcceptErrors: out of descriptors, Serve backs off and
// retries, whatever the error's kind, logging the first in full and counting
// the rest.
func TestServeSurvivesAcceptErrors(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE} {
		t.Run(errno.Error(), func(t *testing.T) {
			srv, logBuf := newTestServer(t, newSvc())
			l := &flakyListener{Listener: listenT(t, "unix"), n: 5, err: &net.OpError{Op: "accept", Net: "unix", Err: os.NewSyscallError("accept4", errno)}}
			serveOn(t, srv, l)
			if err := newTestClient(t, dialT(t, "unix", l.Addr().String())).call("Svc.Teapot", nil, nil); errType(err) != "teapot" {
				t.Fatalf("after %v: %v", errno, err)
			}
			srv.admitLog.flush()
			s := logBuf.String()
			if strings.Count(s, "\n") != 2 || !strings.Contains(s, errno.Error()) || !strings.Contains(s, "4 more accept errors") {
				t.Fatalf("log:\n%s", s)
			}
		})
	}
}

// TestAdmitLog: the first failure of a kind is logged in full, the next are
// counted and reported once per interval, and a quiet kind starts over.
func TestAdmitLog(t *testing.T) {
	var buf syncBuffer
	logger := log.New(&buf, "", 0)
	l := admitLog{logf: logger.Printf, interval: 20 * time.Millisecond}
	a1 := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 1}
	a2 := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 2), Port: 2}
	l.fail(admitAuth, a1, "refusing connection from 10.0.0.1:1: wrong secret", "wrong secret")
	for i := range 6 {
		addr := a1
		if i%2 == 1 {
			addr = &net.TCPAddr{IP: a2.IP, Port: 1000 + i} // the port does not count
		}
		l.fail(admitAuth, addr, "line", fmt.Sprintf("reason %d", i))
	}
	l.fail(admitTimeout, a1, "refusing connection from 10.0.0.1:1: no $hello", "no $hello")
	waitLines(t, buf.String, 3, "the report")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if !strings.HasPrefix(lines[0], "refusing connection from 10.0.0.1:1: wrong secret (more like it are counted, and reported every 20ms)") {
		t.Errorf("first line %q", lines[0])
	}
	if !strings.HasPrefix(lines[1], "refusing connection from 10.0.0.1:1: no $hello") {
		t.Errorf("second line %q", lines[1])
	}
	if !strings.HasPrefix(lines[2], "6 more failed authentications from 2 addresses in the last") || !strings.HasSuffix(lines[2], "(the last: reason 5)") {
		t.Errorf("report %q", lines[2])
	}
	// Quiet for an interval, the kind logs its next failure in full again.
	deadline := time.Now().Add(hangGuard)
	for {
		l.mu.Lock()
		quiet := l.counts[admitAuth] == nil && l.timer == nil
		l.mu.Unlock()
		if quiet {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the admission log never went quiet")
		}
		time.Sleep(5 * time.Millisecond) // polling a timer's goroutine
	}
	l.fail(admitAuth, a1, "wrong secret again", "wrong secret")
	if last := lastLine(buf.String()); !strings.HasPrefix(last, "wrong secret again") {
		t.Errorf("after a quiet interval: %q", last)
	}
	l.flush()
	if n := strings.Count(buf.String(), "\n"); n != 4 {
		t.Errorf("%d lines after a flush with nothing counted:\n%s", n, buf.String())
	}
}

// FuzzAdmission feeds what a stranger may send first to a server with a
// secret: unless the bytes start with the right $auth frame, no method runs,
// and whatever they are, the connection ends (the handshake timeout is short)
// without taking the server down.
func FuzzAdmission(f *testing.F) {
	for _, bad := range badFirstFrames {
		f.Add(bad.data(f))
	}
	f.Add(append(authFrame(f, goodSecret), frameOf(f, []any{0, 1, "Svc.Teapot", nil, nil})...))
	f.Add(authFrame(f, goodSecret)[:9])
	f.Add([]byte{})
	srv := NewServer()
	srv.ErrorLog = log.New(new(syncBuffer), "", 0)
	svc := newSvc()
	if err := srv.Register(svc); err != nil {
		f.Fatal(err)
	}
	srv.Secret = goodSecret
	srv.HandshakeTimeout = 10 * time.Millisecond
	good := authFrame(f, goodSecret)
	f.Fuzz(func(t *testing.T, data []byte) {
		client, server := net.Pipe()
		defer client.Close()
		if !srv.takeConn(1 << 30) {
			t.Fatal("no slot")
		}
		done := make(chan struct{})
		go func() {
			srv.serveConn(server, true)
			close(done)
		}()
		go func() {
			client.Write(data)
		}()
		// Read until the server closes the connection, or answers. An
		// authenticated connection may stay open: do not wait long on it.
		authenticated := bytes.HasPrefix(data, good)
		wait := hangGuard
		if authenticated {
			wait = 100 * time.Millisecond
		}
		client.SetReadDeadline(time.Now().Add(wait))
		for {
			payload, err := readFrame(client, DefaultMaxFrameSize)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					if !authenticated {
						t.Fatalf("connection still open after %v", hangGuard)
					}
				}
				break
			}
			m, err := parseMessage(payload)
			if err != nil {
				t.Fatalf("the server sent a bad message: %v", err)
			}
			if m.typ == typeResponse && !authenticated {
				t.Fatalf("a method answered without the secret: %+v", m)
			}
			if m.typ == typeResponse {
				break // authenticated, and answered: fine
			}
		}
		client.Close()
		select {
		case <-done:
		case <-time.After(hangGuard):
			t.Fatal("serveConn did not return after the client closed")
		}
	})
}

// TestServerMaxCalls: the calls in flight over all connections are bounded:
// past MaxCalls a request is answered busy, whichever connection it comes
// on; a slot frees when its reply is taken, or its connection ends.
func TestServerMaxCalls(t *testing.T) {
	svc := newSvc()
	srv, _ := newTestServer(t, svc)
	srv.MaxCalls = 3
	addr := serveListener(t, srv, "unix")
	a := newTestClient(t, dialT(t, "unix", addr))
	b := newTestClient(t, dialT(t, "unix", addr))
	gone := dialT(t, "unix", addr)
	id, blocked := a.start("Svc.Block", nil, nil)
	_, _ = a.start("Svc.Block", nil, nil)
	if _, err := gone.Write(frameOf(t, []any{0, 1, "Svc.Block", nil, nil})); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		<-svc.started
	}
	err := b.call("Svc.Teapot", nil, nil)
	if errType(err) != "busy" || !strings.Contains(err.Error(), "-max-calls") {
		t.Fatalf("a call past -max-calls: %v", err)
	}
	if err := a.cancel(id); err != nil {
		t.Fatal(err)
	}
	if err := a.wait(blocked, nil); errType(err) != "cancelled" {
		t.Fatal(err)
	}
	if err := b.call("Svc.Teapot", nil, nil); errType(err) != "teapot" {
		t.Fatalf("after a call finished: %v", err)
	}
	// A connection that ends returns its slots, its call's reply unsent.
	gone.Close()
	deadline := time.Now().Add(hangGuard)
	for {
		calls := srv.calls.Load()
		if calls == 1 { // a's other Block
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d slots taken, want 1", calls)
		}
		time.Sleep(2 * time.Millisecond) // polling the server's count
	}
	svc.release <- struct{}{}
}
