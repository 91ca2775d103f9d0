package gotask

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"sync/atomic"
	"time"

	"github.com/trio-gotask/trio-gotask/go/gotask/internal/check"
)

// ErrNoHost is returned by CallHost when no connection takes host calls: the
// client announced no max_host_calls in its $hello (the Python client
// announces it once a handler is registered), or no client is connected. To
// fix it, register the handler in the Python client before the call.
var ErrNoHost = errors.New("gotask: no connection takes host calls: the client announced no max_host_calls in its $hello (the Python client does unless max_host_calls=0), or none is connected")

// ErrHostGone is wrapped by the error CallHost returns when the connection
// closed before the reply came: errors.Is(err, ErrHostGone) reports it. The
// call may or may not have run in the client.
var ErrHostGone = errors.New("gotask: the connection to the client closed before it answered (the client is shutting down, or its connection broke)")

// HostError is the error a host call's handler answered with: the client's
// handler raised (Type "error", Message "ExceptionType: text"), no handler has
// that name ("not_found"), or the client could not run or answer it
// ("cancelled", "deadline_exceeded", "busy", "shutting_down", "too_large",
// "bad_reply"; protocol.md section 2 lists them).
type HostError struct {
	Method  string // the method called, as passed to CallHost
	Type    string // the error map's type
	Message string // the error map's message
	Stack   string // the last lines of the Python traceback, when the handler raised; else ""
}

// Error reads like "Py.Upper: ValueError: bad", and names the type when it is
// not "error": "Py.Nope: not_found: no handler named Py.Nope".
func (e *HostError) Error() string {
	if e.Type == "error" || e.Type == "" {
		return e.Method + ": " + e.Message
	}
	return e.Method + ": " + e.Type + ": " + e.Message
}

// hostGoneError is why a host call got no reply: its connection closed.
type hostGoneError struct {
	method string
	why    error
}

func (e *hostGoneError) Error() string {
	return fmt.Sprintf("gotask: host call %s: the connection to the client closed before its reply (%v)", e.method, e.why)
}

func (e *hostGoneError) Unwrap() []error { return []error{ErrHostGone, e.why} }

// errClientClosed is why the host calls of a connection the client closed failed.
var errClientClosed = errors.New("the client closed the connection")

// maxHostCallsCap bounds the max_host_calls a connection keeps to: far beyond
// any real client, and small enough that the msgid space (2^32) always has a
// free msgid.
const maxHostCallsCap = math.MaxInt32

// hostCall is a host call sent and not yet answered.
type hostCall struct {
	done chan hostResult // buffered: its one result, sent under conn.hmu
	// abandoned says the caller gave up (and sent $cancel): the msgid stays
	// reserved until the late reply comes, which is then dropped.
	abandoned bool
}

// hostResult is a host call's response, or why none will come.
type hostResult struct {
	m   *message
	err error
}

// connKey is the context key of the connection a call came in on.
type connKey struct{}

// runServer is the server RunWith serves. It is the one global the package
// keeps: the package-level CallHost, and a HostLogHandler made without a
// Server, reach the client through it (hostServer).
var runServer atomic.Pointer[Server]

// hostServer is the server whose clients the package-level CallHost and a
// HostLogHandler without a Server call: the one RunWith serves, else
// DefaultServer (a program that serves with Serve or ServeConn instead uses
// Server.CallHost, and HostLogOptions.Server set to its own).
func hostServer() *Server {
	if s := runServer.Load(); s != nil {
		return s
	}
	return DefaultServer
}

// CallHost calls method, a handler registered in the client (the Python
// program), with arg, and stores its result in reply, a non-nil pointer
// decoded by the same rules as a method's argument (or nil to drop it). It
// returns a *HostError when the handler answered with an error, ErrNoHost
// when the client takes no host calls, an error wrapping ErrHostGone when the
// connection closed first, and ctx.Err() as soon as ctx is done: the client's
// handler is then cancelled. A deadline of ctx becomes the handler's deadline.
// Once ctx is done (or its deadline has passed), CallHost returns ctx.Err(),
// whatever answer crossed it: the client's deadline_exceeded or cancelled,
// which it sends when it notices the same deadline first, or even a result,
// which is then not stored in reply.
//
// Called from a method with the context the method received (or one derived
// from it), the call goes over the connection the method's call came in on,
// so nested calls (Go calls Python, which calls Go, which calls Python) stay
// on one connection. With any other context, such as context.Background() in
// a goroutine of its own, it goes over the least busy connection of the
// server that RunWith (or Run) serves, DefaultServer if none, that takes host
// calls. At most max_host_calls calls, as the client announced, are in flight
// on a connection; the others wait, and give up when ctx is done.
//
// The HostInterceptors of the server whose connection it uses (with a
// method's context), else of that server, run around the call, and the
// request carries the metadata they set.
//
// Do not keep a method's context for later: it is cancelled when the method
// returns. CallHost is safe for concurrent use.
func CallHost(ctx context.Context, method string, arg, reply any) error {
	if c, ok := ctx.Value(connKey{}).(*conn); ok {
		return c.srv.CallHost(ctx, method, arg, reply)
	}
	return hostServer().CallHost(ctx, method, arg, reply)
}

// CallHost is the package's CallHost for the clients of s: with the context
// of one of its methods, over that method's connection, otherwise over the
// least busy connection of s that takes host calls. The HostInterceptors of
// s run around it.
func (s *Server) CallHost(ctx context.Context, method string, arg, reply any) error {
	s.composeOnce.Do(s.composeChains)
	if s.hostChain == nil {
		return s.callHost(ctx, method, arg, reply, nil)
	}
	info := &HostCallInfo{Method: method, Metadata: Metadata{}}
	return s.hostChain(ctx, info, func(ctx context.Context) error {
		return s.callHost(ctx, method, arg, reply, info.Metadata)
	})
}

// callHost is CallHost past the host interceptors, md the request's metadata.
func (s *Server) callHost(ctx context.Context, method string, arg, reply any, md Metadata) error {
	if c, ok := ctx.Value(connKey{}).(*conn); ok && c.srv == s {
		return c.callHost(ctx, method, arg, reply, md)
	}
	c := s.hostConn()
	if c == nil {
		if err := checkHostReply(reply); err != nil {
			return err
		}
		return ErrNoHost
	}
	return c.callHost(ctx, method, arg, reply, md)
}

// hostConn returns the open connection that takes host calls with the fewest
// in flight, or nil.
func (s *Server) hostConn() *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	var best *conn
	bestLoad := 0
	for c := range s.conns {
		c.hmu.Lock()
		ok := c.hostSlots != nil && c.hostErr == nil
		load := len(c.hostSlots)
		c.hmu.Unlock()
		if ok && (best == nil || load < bestLoad) {
			best, bestLoad = c, load
		}
	}
	return best
}

func checkHostReply(reply any) error {
	if reply == nil {
		return nil
	}
	if v := reflect.ValueOf(reply); v.Kind() != reflect.Pointer || v.IsNil() {
		return fmt.Errorf("gotask: CallHost: reply must be a non-nil pointer (or nil to drop the result), not %T", reply)
	}
	return nil
}

// takeHostCalls records the max_host_calls of the client's $hello: only the
// first $hello that announces some counts.
func (c *conn) takeHostCalls(n int) {
	c.hmu.Lock()
	if c.hostSlots == nil && c.hostErr == nil {
		c.hostSlots = make(chan struct{}, n)
	}
	c.hmu.Unlock()
}

// callHost sends a host call on c, with the metadata md, and waits for its
// reply.
func (c *conn) callHost(ctx context.Context, method string, arg, reply any, md Metadata) error {
	if err := checkHostReply(reply); err != nil {
		return err
	}
	c.hmu.Lock()
	slots, gone := c.hostSlots, c.hostErr
	c.hmu.Unlock()
	if gone != nil {
		return &hostGoneError{method, gone}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if slots == nil {
		return ErrNoHost
	}
	select {
	case slots <- struct{}{}:
	case <-ctx.Done():
		return c.doneErr(ctx, method)
	case <-c.hostDone:
		return c.hostGone(method)
	}

	hc := &hostCall{done: make(chan hostResult, 1)}
	c.hmu.Lock()
	if c.hostErr != nil {
		c.hmu.Unlock()
		<-slots
		return c.hostGone(method)
	}
	id := c.hostNext
	for c.hostCalls[id] != nil {
		id++
	}
	c.hostNext = id + 1
	c.hostCalls[id] = hc
	c.hmu.Unlock()

	// unsent gives up a call whose request was not sent.
	unsent := func() {
		c.hmu.Lock()
		if c.hostCalls[id] == hc {
			delete(c.hostCalls, id)
			<-slots
		}
		c.hmu.Unlock()
	}
	e := getEncBuf()
	if err := c.encodeHostRequest(e, id, method, arg, md, ctx); err != nil {
		putEncBuf(e)
		unsent()
		return err
	}
	select {
	case c.out <- e:
	case <-ctx.Done():
		putEncBuf(e)
		unsent()
		return c.doneErr(ctx, method)
	case <-c.hostDone:
		putEncBuf(e)
		return c.hostGone(method)
	}

	select {
	case r := <-hc.done:
		return answered(ctx, method, r, reply)
	case <-ctx.Done():
	}
	c.hmu.Lock()
	if c.hostCalls[id] != hc {
		// The reply (or the connection's end) came as ctx ended.
		c.hmu.Unlock()
		return answered(ctx, method, <-hc.done, reply)
	}
	hc.abandoned = true
	c.hmu.Unlock()
	c.sendCancel(id)
	return ctx.Err()
}

// encodeHostRequest encodes the frame [0, msgid, method, arg, meta] into e,
// meta holding the time left before ctx's deadline and the metadata md, and
// checks that the client can take it.
func (c *conn) encodeHostRequest(e *encBuf, msgid uint32, method string, arg any, md Metadata, ctx context.Context) error {
	timeout, hasTimeout := 0.0, false
	if d, ok := ctx.Deadline(); ok {
		timeout, hasTimeout = time.Until(d).Seconds(), true
	}
	start, end, err := encodeRequest(e, msgid, method, arg, timeout, hasTimeout, md)
	if err != nil {
		return fmt.Errorf("gotask: host call %s: the argument cannot be encoded: %w", method, err)
	}
	if err := check.Reply(e.buf.Bytes()[start:end]); err != nil {
		return fmt.Errorf("gotask: host call %s: the argument cannot reach Python faithfully: %w", method, err)
	}
	if n, limit := e.buf.Len()-4, int(c.replyLimit.Load()); n > limit {
		return fmt.Errorf("gotask: host call %s: the request is %d bytes; the client's frame limit is %d (the max_frame_size of its $hello)", method, n, limit)
	}
	return nil
}

// encodeRequest encodes and frames [0, msgid, method, arg, meta] in e, meta
// holding "timeout": timeout when hasTimeout and "metadata": md, its keys
// sorted, when md is not empty, or nil when neither. It returns where arg
// lies in e.buf.
func encodeRequest(e *encBuf, msgid uint32, method string, arg any, timeout float64, hasTimeout bool, md Metadata) (start, end int, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	enc := e.enc
	enc.EncodeArrayLen(5)
	enc.EncodeUint(typeRequest)
	enc.EncodeUint(uint64(msgid))
	enc.EncodeString(method)
	start = e.buf.Len()
	if err := enc.Encode(arg); err != nil {
		return 0, 0, err
	}
	end = e.buf.Len()
	entries := 0
	if hasTimeout {
		entries++
	}
	if len(md) > 0 {
		entries++
	}
	if entries == 0 {
		enc.EncodeNil()
	} else {
		enc.EncodeMapLen(entries)
	}
	if hasTimeout {
		enc.EncodeString("timeout")
		enc.EncodeFloat64(timeout)
	}
	if n := len(md); n > 0 {
		enc.EncodeString("metadata")
		enc.EncodeMapLen(n)
		keys := make([]string, 0, n)
		for k := range md {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			enc.EncodeString(k)
			enc.EncodeString(md[k])
		}
	}
	_, err = e.frame()
	return start, end, err
}

// sendCancel queues [2, "$cancel", msgid] after the request it cancels.
func (c *conn) sendCancel(msgid uint32) {
	e := getEncBuf()
	enc := e.enc
	enc.EncodeArrayLen(3)
	enc.EncodeUint(typeNotification)
	enc.EncodeString("$cancel")
	enc.EncodeUint(uint64(msgid))
	c.sendNow(c.out, e)
}

// answered is CallHost's error for a host call that got its result r. Once
// ctx is done, ctx.Err() wins over an answer that crossed its end (the
// client's own deadline_exceeded, most often, as both sides keep the same
// deadline), and reply is left alone: CallHost promises ctx.Err(). A deadline
// the clock has passed counts even before ctx's timer fired: it is due, and
// is waited for. The connection's end still wins (see doneErr).
func answered(ctx context.Context, method string, r hostResult, reply any) error {
	if r.err == nil {
		if err := ctx.Err(); err != nil {
			return err
		}
		if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
			<-ctx.Done()
			return ctx.Err()
		}
	}
	return hostReply(method, r, reply)
}

// hostReply turns a host call's result into CallHost's error, decoding the
// reply into reply.
func hostReply(method string, r hostResult, reply any) error {
	if r.err != nil {
		return &hostGoneError{method, r.err}
	}
	if we := r.m.errMap; we != nil {
		return &HostError{Method: method, Type: we.Type, Message: we.Message, Stack: we.Stack}
	}
	if reply == nil {
		return nil
	}
	if err := decodeValue(r.m.result, reply); err != nil {
		return fmt.Errorf("gotask: host call %s: the reply: %w", method, err)
	}
	return nil
}

// doneErr is the error of a host call whose ctx is done before it was sent:
// ctx.Err(), unless the connection ended too. A method's context ends with
// its connection, and the connection's end is the news then.
func (c *conn) doneErr(ctx context.Context, method string) error {
	select {
	case <-c.hostDone:
		return c.hostGone(method)
	default:
		return ctx.Err()
	}
}

func (c *conn) hostGone(method string) error {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	return &hostGoneError{method, c.hostErr}
}

// hostResponse routes a response from the client to its host call without
// waiting for anything. A response to no host call in flight is malformed.
func (c *conn) hostResponse(m *message) error {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	hc := c.hostCalls[m.msgid]
	if hc == nil {
		if c.hostSlots == nil {
			return protoErr(codeBadMessage, "a response, but the client takes no host calls (no max_host_calls in its $hello)")
		}
		return protoErr(codeBadMessage, "a response to msgid %d, which is no host call in flight", m.msgid)
	}
	delete(c.hostCalls, m.msgid)
	<-c.hostSlots
	if !hc.abandoned {
		hc.done <- hostResult{m: m}
	}
	return nil
}

// endHostCalls fails the host calls of a connection that ended, and those
// that would start on it, with why (nil: the client closed it).
func (c *conn) endHostCalls(why error) {
	if why == nil {
		why = errClientClosed
	}
	c.hmu.Lock()
	defer c.hmu.Unlock()
	if c.hostErr != nil {
		return
	}
	c.hostErr = why
	for id, hc := range c.hostCalls {
		delete(c.hostCalls, id)
		<-c.hostSlots
		if !hc.abandoned {
			hc.done <- hostResult{err: why}
		}
	}
	close(c.hostDone)
}
