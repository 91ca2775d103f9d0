package gotask

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
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
	// ErrorLog receives one line per connection closed for a protocol error
	// or turned away before its first request (TLS handshake, Secret).
	// Nil means standard error with the prefix "gotask: ".
	ErrorLog *log.Logger
	// Secret, when not empty, is the shared secret every connection accepted
	// by Serve must present before anything else: its first frame must be the
	// notification [2, "$auth", Secret], within ten seconds. A connection that
	// sends anything else, another secret or nothing in time is told why in a
	// $refused notification and closed, and one line that contains neither
	// secret is logged. ServeConn does not ask for it: its caller vouches for
	// the connection.
	Secret string

	// authTimeout bounds the TLS handshake and the $auth frame of an accepted
	// connection; zero means defaultAuthTimeout. Tests shorten it.
	authTimeout time.Duration

	services sync.Map // name -> *service

	baseCtx    context.Context
	baseCancel context.CancelFunc
	workers    *workers // run the calls; they exit when baseCtx is done

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	shutting  bool          // Shutdown began: new requests get shutting_down
	closed    bool          // Shutdown closed the connections: new ones are refused
	active    int           // calls started and not yet answered, all connections
	idle      chan struct{} // closed when active drops to 0 during Shutdown
}

// NewServer returns a new Server with no services.
func NewServer() *Server {
	s := &Server{
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
	}
	s.baseCtx, s.baseCancel = context.WithCancel(context.Background())
	s.workers = newWorkers(s.baseCtx.Done())
	return s
}

// DefaultServer is the Server used by Register, RegisterName and Run.
var DefaultServer = NewServer()

// Register publishes the methods of rcvr on DefaultServer; see Server.Register.
func Register(rcvr any) error { return DefaultServer.Register(rcvr) }

// RegisterName is like Register but names the service.
func RegisterName(name string, rcvr any) error { return DefaultServer.RegisterName(name, rcvr) }

// Register publishes the exported methods of rcvr of the forms
//
//	func (t *T) Method(args A, reply *R) error
//	func (t *T) Method(ctx context.Context, args A, reply *R) error
//
// under the service name of rcvr's concrete type, to be called as "T.Method".
// As in net/rpc, methods of other shapes are not published; those that return
// an error (and so look meant to be called, like a Close() error helper) are
// logged once, with the reason, through ErrorLog. It is an error if rcvr has
// no suitable method at all, if its type is not exported, or if the name is
// taken.
func (s *Server) Register(rcvr any) error { return s.register(rcvr, "", false) }

// RegisterName is like Register but uses name as the service name. The name
// may contain dots, as in net/rpc: "net.rpc.Arith.Add" calls method Add of the
// service "net.rpc.Arith" (a call's method name is split at its last dot).
func (s *Server) RegisterName(name string, rcvr any) error { return s.register(rcvr, name, true) }

func (s *Server) register(rcvr any, name string, useName bool) error {
	svc, skipped, err := newService(rcvr, name, useName)
	if err != nil {
		return err
	}
	if _, dup := s.services.LoadOrStore(svc.name, svc); dup {
		return fmt.Errorf("gotask.Register: service already defined: %s", svc.name)
	}
	for _, why := range skipped {
		s.logf("Register: not published: %s", why)
	}
	return nil
}

func (s *Server) lookup(name string) (*service, *methodType, error) {
	dot := strings.LastIndexByte(name, '.')
	if dot < 0 {
		return nil, nil, fmt.Errorf("method name %q is not of the form Service.Method", name)
	}
	v, ok := s.services.Load(name[:dot])
	if !ok {
		return nil, nil, fmt.Errorf("no service %q (method %q)", name[:dot], name)
	}
	svc := v.(*service)
	mt := svc.method[name[dot+1:]]
	if mt == nil {
		return nil, nil, fmt.Errorf("service %q has no method %q", svc.name, name[dot+1:])
	}
	return svc, mt, nil
}

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
			// Probably out of file descriptors: back off, like net/http.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.logf("accept: %v; retrying in %v", err, delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		if uc, ok := rwc.(*net.UnixConn); ok {
			// Larger kernel buffers than the default 208 KiB: a large frame crosses in fewer
			// writes and wake-ups. The kernel caps them at net.core.wmem_max/rmem_max.
			uc.SetWriteBuffer(unixBufferSize)
			uc.SetReadBuffer(unixBufferSize)
		}
		go s.serveConn(rwc, true)
	}
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

// serveConn serves one connection; accepted says it came from Serve, so that
// it must first finish its TLS handshake and present the secret, if any.
func (s *Server) serveConn(rwc io.ReadWriteCloser, accepted bool) {
	c := s.newConn(rwc)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		rwc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()

	go c.writeLoop()
	err := c.readLoop(accepted)
	var ae *admitError
	if errors.As(err, &ae) {
		s.logf("refusing connection%s: %v", c.describe(), err)
		if ae.tell {
			c.refuse(ae.reason)
		}
		c.closeRWC()
	} else if errorCode(err) != "" {
		s.logf("closing connection%s: %v", c.describe(), err)
		c.closeRWC()
	}
	c.cancel()
	c.handlers.Wait()
	c.stopWriter()
	<-c.writerDone
	c.closeRWC()
}

// Shutdown shuts the server down gracefully: it closes the listeners, answers
// new requests with shutting_down, and waits for the calls in flight to finish
// until ctx is done, then cancels their contexts. It then flushes and closes
// every connection. It returns ctx.Err() if the calls did not finish in time.
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
	s.mu.Unlock()

	var err error
	if idle != nil {
		select {
		case <-idle:
		case <-ctx.Done():
			err = ctx.Err()
			s.baseCancel()
			// Give the cancelled calls a moment to send their cancelled replies.
			t := time.NewTimer(100 * time.Millisecond)
			select {
			case <-idle:
			case <-t.C:
			}
			t.Stop()
		}
	}

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

// conn is one served connection. One goroutine reads (ServeConn's), one
// writes (writeLoop), and each call runs on a worker goroutine of its own
// (see workers).
type conn struct {
	srv         *Server
	rwc         io.ReadWriteCloser
	maxFrame    uint32 // the largest frame we accept
	maxInflight int

	// replyLimit is the largest frame the client accepts: what its $hello
	// announced, else maxFrame.
	replyLimit atomic.Uint32

	ctx    context.Context // cancelled when the connection ends
	cancel context.CancelFunc

	out        chan *encBuf  // encoded frames for the writer
	quit       chan struct{} // closed to make the writer flush and stop
	quitOnce   sync.Once
	writerDone chan struct{}
	closeOnce  sync.Once

	handlers sync.WaitGroup

	mu       sync.Mutex
	pending  map[uint32]*call
	inflight int // calls running: at most maxInflight
}

type call struct{ cancel context.CancelFunc }

func (s *Server) newConn(rwc io.ReadWriteCloser) *conn {
	maxFrame := s.MaxFrameSize
	if maxFrame == 0 {
		maxFrame = DefaultMaxFrameSize
	}
	maxFrame = max(maxFrame, MinMaxFrameSize)
	inflight := s.MaxInflight
	if inflight <= 0 {
		inflight = DefaultMaxInflight
	}
	c := &conn{
		srv:         s,
		rwc:         rwc,
		maxFrame:    maxFrame,
		maxInflight: inflight,
		out:         make(chan *encBuf, inflight+16),
		quit:        make(chan struct{}),
		writerDone:  make(chan struct{}),
		pending:     make(map[uint32]*call),
	}
	c.replyLimit.Store(maxFrame)
	c.ctx, c.cancel = context.WithCancel(s.baseCtx)
	return c
}

func (c *conn) describe() string {
	if nc, ok := c.rwc.(net.Conn); ok && nc.RemoteAddr() != nil {
		if a := nc.RemoteAddr().String(); a != "" && a != "@" {
			return " from " + a
		}
		return " on " + nc.LocalAddr().String()
	}
	return ""
}

func (c *conn) closeRWC() { c.closeOnce.Do(func() { c.rwc.Close() }) }

func (c *conn) stopWriter() { c.quitOnce.Do(func() { close(c.quit) }) }

// readLoop reads messages until the stream ends (nil), fails, or is malformed
// (a protocol error). A connection accepted by Serve is admitted first.
func (c *conn) readLoop(accepted bool) error {
	br := bufio.NewReaderSize(c.rwc, 64<<10)
	if accepted {
		if err := c.admit(br); err != nil {
			return err
		}
	}
	c.hello()
	for {
		if c.ctx.Err() != nil {
			return nil // the writer failed, or Shutdown gave up: replies cannot be delivered
		}
		payload, err := readFrame(br, c.maxFrame)
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		m, err := parseMessage(payload)
		if err != nil {
			return err
		}
		switch m.typ {
		case typeRequest:
			c.request(m)
		case typeNotification:
			c.notification(m)
		default:
			return protoErr(codeBadMessage, "a sidecar does not accept responses")
		}
	}
}

// defaultAuthTimeout bounds the TLS handshake and the $auth frame (protocol.md
// section 5, Security).
const defaultAuthTimeout = 10 * time.Second

// admitError is why a connection accepted by Serve was turned away before its
// first request. Its text never contains a secret. tell says the reason may be
// sent to the peer in a $refused notification (it speaks our framing).
type admitError struct {
	reason string
	tell   bool
}

func (e *admitError) Error() string { return e.reason }

// admit runs the TLS handshake, if the connection is TLS, and reads the $auth
// frame, if the server has a secret, both within the server's authTimeout.
// Nothing else is read before it returns nil.
func (c *conn) admit(br *bufio.Reader) error {
	secret := c.srv.Secret
	tc, isTLS := c.rwc.(*tls.Conn)
	if !isTLS && secret == "" {
		return nil
	}
	timeout := c.srv.authTimeout
	if timeout <= 0 {
		timeout = defaultAuthTimeout
	}
	nc, _ := c.rwc.(net.Conn)
	if nc != nil {
		nc.SetDeadline(time.Now().Add(timeout))
	}
	if isTLS {
		if err := tc.Handshake(); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return err // we closed it: Shutdown
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return &admitError{fmt.Sprintf("no TLS handshake within %v", timeout), false}
			}
			return &admitError{"TLS handshake failed: " + err.Error(), false}
		}
	}
	if secret != "" {
		if err := c.authenticate(br, secret, timeout); err != nil {
			return err
		}
	}
	if nc != nil {
		nc.SetDeadline(time.Time{})
	}
	return nil
}

// authenticate reads the first frame and checks that it is [2, "$auth", secret].
func (c *conn) authenticate(br *bufio.Reader, secret string, timeout time.Duration) error {
	// A longer frame cannot be $auth: do not let an unauthenticated peer make
	// us allocate up to MaxFrameSize.
	limit := uint32(min(len(secret)+64, int(c.maxFrame)))
	payload, err := readFrame(br, limit)
	switch {
	case err == nil:
	case err == io.EOF:
		return &admitError{"connection closed before authenticating", false}
	case errors.Is(err, net.ErrClosed):
		return err // we closed it: Shutdown
	case errors.Is(err, os.ErrDeadlineExceeded):
		return &admitError{fmt.Sprintf("no $auth frame within %v", timeout), true}
	case errorCode(err) == codeTooLarge:
		return &admitError{"authentication failed: the first frame is too long to be $auth", true}
	default:
		return &admitError{"authentication failed: " + err.Error(), true}
	}
	m, err := parseMessage(payload)
	if err != nil {
		return &admitError{"authentication failed: " + err.Error(), true}
	}
	if m.typ != typeNotification || m.method != "$auth" {
		return &admitError{"authentication failed: the sidecar requires a secret, and the first frame is not an $auth notification", true}
	}
	cur := cursor{b: m.params}
	got, ok := cur.str()
	if !ok {
		return &admitError{"authentication failed: the $auth secret is not a string", true}
	}
	// Hashing first makes the comparison take the same time whatever the
	// lengths; ConstantTimeCompare alone returns early when they differ.
	gotSum, wantSum := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(secret))
	if subtle.ConstantTimeCompare(gotSum[:], wantSum[:]) != 1 {
		return &admitError{"authentication failed: wrong secret", true}
	}
	return nil
}

func (c *conn) notification(m *message) {
	switch m.method {
	case "$cancel":
	case "$hello":
		if limit, ok := helloFrameLimit(m.params); ok {
			c.replyLimit.Store(limit)
		}
		return
	default:
		return // unknown notifications are ignored
	}
	cur := cursor{b: m.params}
	id, ok := cur.uint()
	if !ok || id > 1<<32-1 {
		return
	}
	c.mu.Lock()
	cl := c.pending[uint32(id)]
	c.mu.Unlock()
	if cl != nil {
		cl.cancel()
	}
}

func (c *conn) request(m *message) {
	s := c.srv
	if !s.startCall() {
		c.reply(m.msgid, &wireError{Type: "shutting_down", Message: "the sidecar is shutting down"}, nil, false)
		return
	}
	svc, mt, err := s.lookup(m.method)
	if err != nil {
		c.reply(m.msgid, &wireError{Type: "not_found", Message: err.Error()}, nil, false)
		s.endCall()
		return
	}

	var ctx context.Context
	var cancel context.CancelFunc
	if m.hasTimeout {
		ctx, cancel = context.WithTimeout(c.ctx, timeoutDuration(m.timeout))
	} else {
		ctx, cancel = context.WithCancel(c.ctx)
	}
	cl := &call{cancel: cancel}
	c.mu.Lock()
	if c.inflight >= c.maxInflight {
		// A client keeps to the limit its $hello announced. Refusing, rather
		// than waiting for a slot, keeps this goroutine reading: a $cancel
		// queued behind this request must get through.
		c.mu.Unlock()
		cancel()
		c.reply(m.msgid, &wireError{Type: "busy", Message: fmt.Sprintf(
			"more than %d calls in flight on one connection (the sidecar's -max-inflight, announced in its $hello)", c.maxInflight)}, nil, false)
		s.endCall()
		return
	}
	c.inflight++
	c.pending[m.msgid] = cl
	c.mu.Unlock()
	c.handlers.Add(1)
	s.workers.run(func() {
		result, werr := invoke(ctx, svc, mt, m.params)
		cancel()
		c.mu.Lock()
		if c.pending[m.msgid] == cl {
			delete(c.pending, m.msgid)
		}
		c.mu.Unlock()
		c.reply(m.msgid, werr, result, true)
		c.handlers.Done()
		s.endCall()
	})
}

// timeoutDuration converts meta.timeout seconds to a duration, saturating.
func timeoutDuration(sec float64) time.Duration {
	if sec <= 0 {
		return 0
	}
	const maxSec = float64(1<<63-1) / float64(time.Second)
	if sec >= maxSec/2 { // far enough in the future to be no deadline at all
		return time.Duration(1<<63 - 1)
	}
	return time.Duration(sec * float64(time.Second))
}

// invoke decodes the params, calls the method and returns its reply value or
// the wire error to send instead.
func invoke(ctx context.Context, svc *service, mt *methodType, params []byte) (result any, werr *wireError) {
	var argv reflect.Value
	var target any
	base := mt.argType
	if base.Kind() == reflect.Pointer {
		argv = reflect.New(base.Elem())
		target = argv.Interface()
	} else {
		p := reflect.New(base)
		target = p.Interface()
		argv = p.Elem()
	}
	if err := decodeValue(params, target); err != nil {
		return nil, &wireError{Type: "bad_params", Message: err.Error()}
	}
	replyv := reflect.New(mt.replyType.Elem())
	// As net/rpc does, a map or slice reply starts empty rather than nil, so
	// that (*reply)[k] = v works.
	switch rt := mt.replyType.Elem(); rt.Kind() {
	case reflect.Map:
		replyv.Elem().Set(reflect.MakeMap(rt))
	case reflect.Slice:
		replyv.Elem().Set(reflect.MakeSlice(rt, 0, 0))
	}

	defer func() {
		if r := recover(); r != nil {
			result, werr = nil, &wireError{Type: "panic", Message: fmt.Sprint(r), Stack: panicStack()}
		}
	}()
	var in []reflect.Value
	if mt.withCtx {
		in = []reflect.Value{svc.rcvr, reflect.ValueOf(ctx), argv, replyv}
	} else {
		in = []reflect.Value{svc.rcvr, argv, replyv}
	}
	out := mt.method.Func.Call(in)
	if e, _ := out[0].Interface().(error); e != nil {
		return nil, callError(e)
	}
	return replyv.Elem().Interface(), nil
}

// panicStack returns a few frames of the panicking goroutine, starting at the
// function that panicked and stopping before reflect's call machinery.
func panicStack() string {
	pcs := make([]uintptr, 64)
	n := runtime.Callers(3, pcs)
	frames := runtime.CallersFrames(pcs[:n])
	var b strings.Builder
	started, count := false, 0
	for {
		f, more := frames.Next()
		switch {
		case !started:
			started = f.Function == "runtime.gopanic"
		case strings.HasPrefix(f.Function, "reflect."):
			more = false
		case strings.HasPrefix(f.Function, "runtime."):
		default:
			fmt.Fprintf(&b, "%s\n\t%s:%d\n", f.Function, f.File, f.Line)
			count++
		}
		if !more || count == 5 {
			break
		}
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// reply encodes a response and queues it for the writer. Every request gets
// one: a result that cannot be encoded, or would not fit the client's frame
// limit, is replaced by an error, and an error is shortened until it fits.
// release says the call holds an in-flight slot, which the writer frees as it
// takes the reply: a client may send its next request as soon as the reply
// arrives, and must find room, while a reply stuck behind a client that does
// not read keeps its slot (the server's memory stays bounded).
func (c *conn) reply(msgid uint32, werr *wireError, result any, release bool) {
	e := getEncBuf()
	e.release = release
	limit := int(c.replyLimit.Load())
	if werr == nil {
		if err := encodeResponse(e, msgid, nil, result); err != nil {
			werr = &wireError{Type: "bad_reply", Message: "the reply cannot be encoded: " + err.Error()}
		} else if n := e.buf.Len() - 4; n > limit {
			// The client would refuse the frame and lose every call on the connection with it.
			werr = &wireError{Type: "too_large", Message: fmt.Sprintf("the reply is %d bytes; the client's frame limit is %d (max_frame_size)", n, limit)}
		} else if err := checkReply(responseResult(e.buf.Bytes()[4:])); err != nil {
			werr = &wireError{Type: "bad_reply", Message: "the reply cannot reach Python faithfully: " + err.Error()}
		} else {
			c.send(e)
			return
		}
	}
	appendErrorResponse(e, msgid, *werr, limit)
	c.send(e)
}

// responseResult returns the result of an encoded successful response
// [1, msgid, nil, result].
func responseResult(payload []byte) []byte {
	c := cursor{b: payload}
	c.arrayLen()
	c.uint()
	c.uint()
	c.nil()
	return c.b[c.p:]
}

// send queues an encoded frame for the writer, or drops it if the writer has
// stopped (the connection is gone, and the reply with it).
func (c *conn) send(e *encBuf) {
	select {
	case c.out <- e:
	case <-c.writerDone:
		c.taken(e)
		putEncBuf(e)
	}
}

// taken frees the in-flight slot of a reply the writer took (see reply).
func (c *conn) taken(e *encBuf) {
	if e.release {
		e.release = false
		c.mu.Lock()
		c.inflight--
		c.mu.Unlock()
	}
}

// hello queues the connection's first frame, the $hello announcing its limits.
func (c *conn) hello() {
	e := getEncBuf()
	e.appendHello(c.maxFrame, c.maxInflight)
	e.frame()
	c.send(e)
}

// refuse tells a peer turned away at admission why, in a $refused
// notification, before the connection is closed. Nothing else has been
// written to the connection yet.
func (c *conn) refuse(reason string) {
	e := getEncBuf()
	defer putEncBuf(e)
	e.appendNotification("$refused", reason)
	b, _ := e.frame()
	if nc, ok := c.rwc.(net.Conn); ok {
		nc.SetWriteDeadline(time.Now().Add(time.Second))
	}
	c.rwc.Write(b)
}

// appendErrorResponse encodes [1, msgid, we, nil] into e (replacing what it
// holds) in at most limit bytes, dropping the stack and then shortening the
// message (and, last, the type) as needed. It cannot fail: a limit is at least
// MinMaxFrameSize, far more than an empty error map needs.
func appendErrorResponse(e *encBuf, msgid uint32, we wireError, limit int) {
	for {
		e.buf.Truncate(4)
		e.appendResponse(msgid, &we, nil) // strings and integers only: cannot fail
		e.frame()
		over := e.buf.Len() - 4 - limit
		switch {
		case over <= 0:
			return
		case we.Stack != "":
			we.Stack = ""
		case we.Message != "":
			we.Message = shorten(we.Message, over)
		case we.Type != "":
			we.Type = shorten(we.Type, over)
		default:
			return
		}
	}
}

// shorten returns s at least over bytes shorter, cut at a rune boundary and
// marked as cut, or "" if that leaves nothing.
func shorten(s string, over int) string {
	const mark = " [truncated]"
	keep := len(s) - over - len(mark)
	if keep <= 0 {
		return ""
	}
	for keep > 0 && !utf8.RuneStart(s[keep]) {
		keep--
	}
	return s[:keep] + mark
}

func encodeResponse(e *encBuf, msgid uint32, werr *wireError, result any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	if err := e.appendResponse(msgid, werr, result); err != nil {
		return err
	}
	_, err = e.frame()
	return err
}

// writeFailed ends a connection whose replies can no longer be delivered (the
// peer went away, perhaps without reading them): the calls are cancelled, the
// reader stops starting new ones, and closing the connection wakes it up.
func (c *conn) writeFailed() {
	c.cancel()
	c.closeRWC()
}

// writeLoop writes queued frames through one buffer and flushes only when
// nothing more is queued, so replies finishing together share a write.
func (c *conn) writeLoop() {
	defer close(c.writerDone)
	bw := bufio.NewWriterSize(c.rwc, 64<<10)
	dead := false
	write := func(e *encBuf) {
		c.taken(e)
		if !dead {
			if _, err := bw.Write(e.buf.Bytes()); err != nil {
				c.writeFailed()
				dead = true
			}
		}
		putEncBuf(e)
	}
	flush := func() {
		if !dead && bw.Buffered() > 0 {
			if err := bw.Flush(); err != nil {
				c.writeFailed()
				dead = true
			}
		}
	}
	for {
		select {
		case e := <-c.out:
			write(e)
			if len(c.out) == 0 {
				flush()
			}
		case <-c.quit:
			for {
				select {
				case e := <-c.out:
					write(e)
				default:
					flush()
					return
				}
			}
		}
	}
}
