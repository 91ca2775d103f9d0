package gotask

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("gotask: server closed")

// Server serves registered services over any number of connections.
// Create one with NewServer; set its fields before serving.
type Server struct {
	// MaxFrameSize is the largest frame accepted, in bytes; a longer frame
	// closes its connection. Zero means DefaultMaxFrameSize; a value below
	// MinMaxFrameSize counts as MinMaxFrameSize. Each connection announces it
	// in its $hello, and replies never exceed the limit the client announces
	// in its own (or MaxFrameSize, if it announces none).
	MaxFrameSize uint32
	// MaxInflight bounds the calls running at once on one connection. Each
	// connection announces it in its $hello, and a client keeps to it; a
	// request beyond it is answered at once with a "busy" error, so the
	// server never stops reading and a $cancel always gets through. Zero
	// means DefaultMaxInflight.
	MaxInflight int
	// MaxCalls, when above zero, bounds the calls in flight over all
	// connections: running, or answered with a reply not yet taken by the
	// connection's writer (a client that does not read keeps its calls'
	// slots). A request beyond it is answered at once with a "busy" error.
	// With MaxFrameSize it bounds the memory calls hold, whatever the number
	// of connections (docs/remote-sidecars.md, "Limits and worst-case
	// memory"). Zero means no bound but MaxInflight per connection.
	MaxCalls int
	// ErrorLog receives one line per connection closed for a protocol error,
	// one per method and type when a method's error claims a type only the
	// runtime sends (see "Errors, cancellation and deadlines" in the package
	// documentation), and the admission log: the first connection turned
	// away before its opening was complete (TLS handshake, Secret,
	// HandshakeTimeout, MaxConns) or Accept error of each kind in full, and
	// then, once a minute while they go on, how many more there were. Nil
	// means standard error with the prefix "gotask: ".
	ErrorLog *log.Logger
	// Secret, when not empty, is the shared secret every connection accepted
	// by Serve must present before anything else: its first frame must be the
	// notification [2, "$auth", Secret], within HandshakeTimeout. A
	// connection that sends anything else, another secret or nothing in time
	// is told why in a $refused notification and closed, and logged (see
	// ErrorLog) without either secret. ServeConn does not ask for it: its
	// caller vouches for the connection.
	Secret string
	// HandshakeTimeout bounds the opening of every connection accepted by
	// Serve: its TLS handshake (from a tls.NewListener), its $auth frame (with
	// a Secret) and the client's first frame after these (its $hello, or its
	// first request if it sends none) must all arrive within it, or the
	// connection is closed. Zero means DefaultHandshakeTimeout. ServeConn
	// does not apply it.
	HandshakeTimeout time.Duration
	// MaxConns bounds the connections accepted by Serve, over all its
	// listeners, that are open at once. A connection accepted past it is
	// turned away at once, without reading from it: a plain one is told why in
	// a $refused notification, a TLS one is closed before its handshake. Zero
	// or less means DefaultMaxConns(), derived from the descriptor limit.
	// ServeConn's connections do not count.
	MaxConns int
	// FrameTimeout bounds how long a frame may take to arrive once its first
	// byte has, on a connection that is a net.Conn; a frame late beyond it
	// closes the connection (one line is logged) and cancels its calls.
	// Between frames there is no deadline. Zero means DefaultFrameTimeout;
	// a negative value means none.
	FrameTimeout time.Duration
	// WriteTimeout bounds how long a write to a client that is a net.Conn
	// may make no progress: a client that reads nothing of a pending frame
	// for this long is closed (one line is logged) and its calls cancelled.
	// It is applied per chunk of at most 1 MiB, so a slow client that reads
	// keeps its connection whatever the frame's size. Zero means
	// DefaultWriteTimeout; a negative value means none.
	WriteTimeout time.Duration
	// Interceptors wrap every call, the first outermost (see Interceptor).
	// They are read once, when the server serves its first connection or
	// makes its first host call: set them before.
	Interceptors []Interceptor
	// HostInterceptors wrap every host call made through the server, the
	// first outermost (see HostInterceptor). They are read with
	// Interceptors.
	HostInterceptors []HostInterceptor

	// replyQueueLimit is the number of bytes of frames waiting for the
	// writer above which the reader stops reading; zero means
	// defaultReplyQueueLimit. Tests shorten it.
	replyQueueLimit int64
	// linger bounds how long Shutdown, once the calls are done, waits for the
	// clients to close the connections it sent $goaway on; zero means
	// defaultLinger. Tests shorten it.
	linger time.Duration
	// replyWait bounds how long Shutdown, once ctx is done and it has
	// cancelled the calls still running, waits for their replies; zero means
	// defaultReplyWait. Tests lengthen it.
	replyWait time.Duration

	admitLog admitLog     // admission failures, logged in brief
	calls    atomic.Int64 // calls holding a slot, all connections, for MaxCalls

	services sync.Map // name -> *service
	claims   sync.Map // methodClaim -> struct{}: the refused ones logged (refusedClaim)
	hooks    hookList // lifecycle hooks, which RunWith runs (hooks.go)

	composeOnce sync.Once       // composeChains
	chain       Interceptor     // Interceptors composed; nil: none
	hostChain   HostInterceptor // HostInterceptors composed; nil: none

	baseCtx    context.Context
	baseCancel context.CancelFunc
	workers    *workers // run the calls; they exit when baseCtx is done

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	accepted  int           // connections from Serve open, for MaxConns
	shutting  bool          // Shutdown began: new requests get shutting_down
	closed    bool          // Shutdown closed the connections: new ones are refused
	active    int           // calls started and not yet answered, all connections
	idle      chan struct{} // closed when active drops to 0 during Shutdown
	noConns   chan struct{} // closed when the last connection ends during Shutdown
}

// defaultLinger is how long Shutdown waits for clients to close their
// connections after the calls are done. A client that knows $goaway closes a
// connection as soon as its calls on it are answered, so this is time for a
// round trip, not for work.
const defaultLinger = time.Second

// defaultReplyWait is how long Shutdown gives the calls it cancelled to send
// their cancelled replies.
const defaultReplyWait = 100 * time.Millisecond

// NewServer returns a new Server with no services.
func NewServer() *Server {
	s := &Server{
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
	}
	s.baseCtx, s.baseCancel = context.WithCancel(context.Background())
	s.workers = newWorkers(s.baseCtx.Done())
	s.admitLog.logf = s.logf
	return s
}

// DefaultServer is the Server used by Register, RegisterName and Run.
var DefaultServer = NewServer()

func (s *Server) logf(format string, args ...any) {
	if s.ErrorLog != nil {
		s.ErrorLog.Printf(format, args...)
		return
	}
	stderrLog.Printf(format, args...)
}

var stderrLog = log.New(os.Stderr, "gotask: ", log.LstdFlags)

// unixBufferSize is the kernel send and receive buffer size asked for each
// accepted Unix socket connection.
const unixBufferSize = 1 << 20

// Serve accepts connections on l and serves each in its own goroutine. It
// returns ErrServerClosed after Shutdown, or the listener's error.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.shutting {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	limit := s.maxConns()
	var delay time.Duration
	for {
		rwc, err := l.Accept()
		if err != nil {
			if s.isShutting() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of descriptors (EMFILE, ENFILE) or another passing error:
			// back off and retry, as net/http does, but whatever the error
			// (net/http returns on one its net.Error does not call temporary).
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.admitLog.fail(admitAccept, nil, fmt.Sprintf("accept: %v; retrying in %v", err, delay), err.Error())
			time.Sleep(delay)
			continue
		}
		delay = 0
		if !s.takeConn(limit) {
			s.refuseAtLimit(rwc, limit)
			continue
		}
		if uc, ok := rwc.(*net.UnixConn); ok {
			// Larger kernel buffers than the default 208 KiB: a large frame crosses in fewer
			// writes and wake-ups. The kernel caps them at net.core.wmem_max/rmem_max.
			uc.SetWriteBuffer(unixBufferSize)
			uc.SetReadBuffer(unixBufferSize)
		}
		go s.serveConn(rwc, true)
	}
}

// DefaultMaxConns is the MaxConns of a Server that sets none: three quarters
// of the process's descriptor limit (the soft RLIMIT_NOFILE, which Go raises
// to the hard limit at start), leaving a quarter for the listeners, the log
// and what the methods open; at least 1, and 10000 where there is no limit to
// read.
func DefaultMaxConns() int {
	n := descriptorLimit()
	if n == 0 {
		return 10000
	}
	n = min(n, 1<<30) // RLIM_INFINITY, on systems that allow it
	return int(max(n-n/4, 1))
}

func (s *Server) maxConns() int {
	if s.MaxConns > 0 {
		return s.MaxConns
	}
	return DefaultMaxConns()
}

// takeConn counts a connection from Serve, or reports false at limit.
func (s *Server) takeConn(limit int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.accepted >= limit {
		return false
	}
	s.accepted++
	return true
}

func (s *Server) isShutting() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shutting
}

// ServeConn serves one connection and blocks until it is done: the peer closed
// it, a protocol error closed it, or Shutdown did. When the peer stops sending,
// the contexts of its calls still running are cancelled; ServeConn returns once
// they have returned. It closes rwc. It does not ask for Secret.
func (s *Server) ServeConn(rwc io.ReadWriteCloser) { s.serveConn(rwc, false) }

// takeSlot counts a call against MaxCalls, or reports false at the bound.
func (s *Server) takeSlot() bool {
	if n := s.calls.Add(1); s.MaxCalls > 0 && n > int64(s.MaxCalls) {
		s.calls.Add(-1)
		return false
	}
	return true
}

func (s *Server) releaseSlots(n int) { s.calls.Add(-int64(n)) }

// Shutdown shuts the server down gracefully: it closes the listeners, sends
// $goaway on every connection (a client that knows it sends no more calls
// there, and closes the connection once its calls are answered), answers new
// requests with shutting_down, and waits for the calls in flight to finish
// until ctx is done, then cancels their contexts. Once every call is
// answered it sends $drained on every connection: a request the client has
// no answer for was never run, and the client may send it elsewhere. It then
// waits, for a second at most and not beyond ctx, for the clients to close
// their connections, answering shutting_down meanwhile; then it flushes and
// closes every connection still open. It returns ctx.Err() if the calls did
// not finish in time.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutting = true
	for l := range s.listeners {
		l.Close()
	}
	if s.active > 0 && s.idle == nil {
		s.idle = make(chan struct{})
	}
	idle := s.idle
	if len(s.conns) > 0 && s.noConns == nil {
		s.noConns = make(chan struct{})
	}
	noConns := s.noConns
	for c := range s.conns {
		c.goAway()
	}
	s.mu.Unlock()

	var err error
	if idle != nil {
		select {
		case <-idle:
		case <-ctx.Done():
			err = ctx.Err()
			s.baseCancel()
			// Give the cancelled calls a moment to send their cancelled replies.
			wait := s.replyWait
			if wait == 0 {
				wait = defaultReplyWait
			}
			t := time.NewTimer(wait)
			select {
			case <-idle:
			case <-t.C:
			}
			t.Stop()
		}
	}

	// Every call is answered (unless the grace ran out with some still running):
	// say so, so that a client may send what it has unanswered elsewhere.
	s.mu.Lock()
	if s.active == 0 {
		for c := range s.conns {
			c.drained()
		}
	}
	s.mu.Unlock()

	if noConns != nil && ctx.Err() == nil {
		linger := s.linger
		if linger == 0 {
			linger = defaultLinger
		}
		t := time.NewTimer(linger)
		select {
		case <-noConns:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}

	s.admitLog.flush()
	s.mu.Lock()
	s.closed = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.stopWriter()
	}
	flushDeadline := time.NewTimer(time.Second)
	defer flushDeadline.Stop()
	for _, c := range conns {
		select {
		case <-c.writerDone:
		case <-flushDeadline.C:
		}
		c.closeRWC()
	}
	s.baseCancel()
	return err
}

// startCall counts a new call, or reports false once Shutdown began.
func (s *Server) startCall() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutting {
		return false
	}
	s.active++
	return true
}

func (s *Server) endCall() {
	s.mu.Lock()
	s.active--
	if s.active == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
	s.mu.Unlock()
}
