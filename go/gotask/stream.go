package gotask

// This file holds streams (protocol.md section 2, Streams): the Stream a
// stream method sends its items with, the credit the client grants, and the
// bound on a stream's items waiting for the writer.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sync"

	"github.com/trio-gotask/trio-gotask/go/gotask/internal/check"
	"github.com/trio-gotask/trio-gotask/go/gotask/internal/scan"
)

// ErrStreamClosed is returned by Send once the stream's method has returned
// (and by Send on a Stream the runtime did not make): the stream's response
// follows its items, so nothing can be sent after it. A goroutine that sends
// for a method must finish before the method returns.
var ErrStreamClosed = errors.New("gotask: Send on a stream whose method has returned")

// streamQueueLimit is how many bytes of one stream's items may wait for the
// writer (beyond it, Send waits). Replies do not wait behind them (they go
// before items; see writeLoop): it bounds the memory a stream holds beyond
// what is being written, whatever its credit, and keeps streams sharing a
// connection taking turns in the items queue.
const streamQueueLimit = 128 << 10

// Stream carries the items of a stream method to the client, which receives
// them, in order, before the method's response. A stream method takes it as
// its last parameter:
//
//	func (t *T) Method(ctx context.Context, args A, out *gotask.Stream[Item]) error
//	func (t *T) Method(args A, out *gotask.Stream[Item]) error
//
// The runtime makes it for each call; it is valid until the method returns.
// The stream ends when the method returns: with no error when it returns nil,
// otherwise with its error, which the client raises after the items sent
// before it.
type Stream[T any] struct {
	s *outStream
}

// Send sends item to the client. It encodes item at once, so item may be
// changed (a buffer reused) as soon as Send returns.
//
// Send blocks while the client has no room for more items (it grants credit
// as it consumes them; protocol.md section 2, Streams), and while much of this
// stream's output still waits to be written. It returns:
//
//   - nil once the item is queued for the client;
//   - an *ItemError when the item cannot be sent: msgpack cannot encode it,
//     the Python client could not represent it faithfully (as for a reply: a
//     time outside years 1-9999, a map key that is an array or a struct,
//     nesting deeper than 1023 levels), or it is larger than the client's
//     frame limit. Nothing is sent and the stream goes on; a method that
//     returns the error ends the stream with a "bad_reply" or "too_large"
//     error;
//   - the error of the call's context (context.Canceled or
//     context.DeadlineExceeded) as soon as it ends: the client cancelled the
//     stream, its timeout passed, the connection closed, or the sidecar's
//     shutdown stopped waiting. The item is not sent;
//   - ErrStreamClosed after the method has returned.
//
// Send takes no context: the stream belongs to one call and ends with the
// call's context, as a gRPC ServerStream does. Send is safe for concurrent
// use: items go out in the order the Sends took turns in.
func (st *Stream[T]) Send(item T) error {
	if st == nil || st.s == nil {
		return ErrStreamClosed // not made by the runtime
	}
	return st.s.send(item)
}

func (st *Stream[T]) bindStream(s *outStream) { st.s = s }

func (*Stream[T]) streamItem() reflect.Type { return reflect.TypeOf((*T)(nil)).Elem() }

// streamer is implemented by *Stream[T] alone: a method whose last parameter
// implements it is a stream method.
type streamer interface {
	bindStream(*outStream)
	streamItem() reflect.Type
}

var typeOfStreamer = reflect.TypeOf((*streamer)(nil)).Elem()

// ItemError is why Send did not send an item: it cannot be encoded, the
// Python client could not represent it, or it is larger than the client's
// frame limit. Only Send makes one. A method whose error wraps an ItemError
// ends its stream with an error of type "bad_reply" or "too_large" (which a
// method's own error cannot claim), with the error's text.
type ItemError struct {
	typ string // the response's error type: bad_reply or too_large
	msg string
}

// Error says what was wrong with which item (counting from 0), and where in
// it, such as "item 3 cannot reach Python faithfully: [2].when: time
// 12000-01-01T00:00:00Z is outside years 1-9999".
func (e *ItemError) Error() string { return e.msg }

// outStream is the runtime's side of a running stream.
type outStream struct {
	c     *conn
	msgid uint32
	ctx   context.Context // the call's

	// sendMu is held by a Send from its checks until its item is queued, so
	// that items keep the order of their Sends and none follows the response.
	sendMu sync.Mutex
	sent   int // items queued; guarded by sendMu

	mu      sync.Mutex // guards the fields below
	credit  int64      // bytes the client takes: below zero by at most one frame
	queued  int        // bytes of items queued for the writer and not taken yet
	waiting bool       // a Send waits for credit or for the writer (tests read it)

	wake chan struct{} // buffered 1: credit came, or items left the queue
	done chan struct{} // closed when the method returned
}

func newOutStream(c *conn, msgid uint32, ctx context.Context, credit int64) *outStream {
	return &outStream{c: c, msgid: msgid, ctx: ctx, credit: credit, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

func (s *outStream) send(item any) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	select {
	case <-s.done:
		return ErrStreamClosed
	default:
	}
	if err := s.ctx.Err(); err != nil {
		return err
	}
	e := getEncBuf()
	if err := s.encode(e, item); err != nil {
		putEncBuf(e)
		return err
	}
	if err := s.wait(); err != nil {
		putEncBuf(e)
		return err
	}
	if err := s.ctx.Err(); err != nil {
		putEncBuf(e)
		return err
	}
	size := e.buf.Len()
	s.mu.Lock()
	s.credit -= int64(size - 4)
	s.queued += size
	s.mu.Unlock()
	e.stream = s
	c := s.c
	c.queued.Add(int64(size))
	select {
	case c.items <- e: // after the stream's earlier items, and before its response
		s.sent++
		return nil
	case <-s.ctx.Done():
	case <-c.writerDone: // Shutdown stopped the writer; the call's context ends next
	}
	c.dequeued(size)
	c.taken(e)
	s.mu.Lock()
	s.credit += int64(size - 4)
	s.mu.Unlock()
	putEncBuf(e)
	if err := s.ctx.Err(); err != nil {
		return err
	}
	return context.Canceled
}

// encode encodes the frame [3, msgid, item] into e, or returns the
// *ItemError that says why the client cannot have it.
func (s *outStream) encode(e *encBuf, item any) error {
	limit := int(s.c.replyLimit.Load())
	start, err := encodeItem(e, s.msgid, item)
	if err != nil {
		return &ItemError{typ: "bad_reply", msg: fmt.Sprintf("item %d cannot be encoded: %s", s.sent, unencodableMessage("item", item, err))}
	}
	if n := e.buf.Len() - 4; n > limit {
		return &ItemError{typ: "too_large", msg: fmt.Sprintf("item %d is %d bytes; the client's frame limit is %d (max_frame_size)", s.sent, n, limit)}
	}
	if err := check.Reply(e.buf.Bytes()[start:]); err != nil {
		return &ItemError{typ: "bad_reply", msg: fmt.Sprintf("item %d cannot reach Python faithfully: %v", s.sent, err)}
	}
	return nil
}

// wait returns once the stream may queue an item: its credit is positive,
// and at most streamQueueLimit bytes of its items wait for the writer.
func (s *outStream) wait() error {
	defer func() {
		s.mu.Lock()
		s.waiting = false
		s.mu.Unlock()
	}()
	for {
		s.mu.Lock()
		ready := s.credit > 0 && s.queued <= streamQueueLimit
		s.waiting = !ready
		s.mu.Unlock()
		if ready {
			return nil
		}
		select {
		case <-s.wake:
		case <-s.ctx.Done():
			return s.ctx.Err()
		case <-s.done:
			return ErrStreamClosed
		}
	}
}

func (s *outStream) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// left records that n bytes of the stream's items left the writer's queue.
func (s *outStream) left(n int) {
	s.mu.Lock()
	s.queued -= n
	s.mu.Unlock()
	s.signal()
}

// addCredit adds the n bytes of a $credit, 1 <= n < 2^63, saturating.
func (s *outStream) addCredit(n int64) {
	s.mu.Lock()
	if s.credit > math.MaxInt64-n {
		s.credit = math.MaxInt64
	} else {
		s.credit += n
	}
	s.mu.Unlock()
	s.signal()
}

// close ends the stream once its method has returned: Send returns
// ErrStreamClosed from now on, and a Send under way has queued its item (or
// given up) when close returns, so the response follows every item.
func (s *outStream) close() {
	close(s.done)
	s.sendMu.Lock() // waits for a Send under way
	s.sendMu.Unlock()
}

// credit acts on a $credit notification: it adds its credit to its stream.
// One of another shape, or for a msgid that is no running stream (it may
// cross the stream's end), is ignored.
func (c *conn) credit(params []byte) {
	id, n, ok := parseCredit(params)
	if !ok {
		return
	}
	c.mu.Lock()
	cl := c.pending[id]
	c.mu.Unlock()
	if cl != nil && cl.stream != nil {
		cl.stream.addCredit(n)
	}
}

// parseCredit reads the params of a $credit, [msgid, n] with 1 <= n < 2^63.
func parseCredit(params []byte) (msgid uint32, n int64, ok bool) {
	cur := scan.Cursor{B: params}
	if k, ok := cur.ArrayLen(); !ok || k != 2 {
		return 0, 0, false
	}
	id, ok := cur.Uint()
	if !ok || id > math.MaxUint32 {
		return 0, 0, false
	}
	u, ok := cur.Uint()
	if !ok || u < 1 || u > math.MaxInt64 {
		return 0, 0, false
	}
	return uint32(id), int64(u), true
}

// streamMismatch says why a request cannot run when it opens a stream to a
// method that returns one reply, or calls a stream method; "" when it can.
func streamMismatch(m *message, mt *methodType) string {
	switch {
	case m.stream && mt.itemType == nil:
		return m.method + " returns one reply: call it with GoTask.call, not GoTask.stream"
	case !m.stream && mt.itemType != nil:
		return m.method + " is a stream method: open it with GoTask.stream, not GoTask.call"
	}
	return ""
}

// encodeItem encodes and frames [3, msgid, item] in e, and returns where
// item starts in e.buf.
func encodeItem(e *encBuf, msgid uint32, item any) (start int, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	enc := e.enc
	enc.EncodeArrayLen(3)
	enc.EncodeUint(typeItem)
	enc.EncodeUint(uint64(msgid))
	start = e.buf.Len()
	if b, ok := item.([]byte); ok {
		e.buf.Grow(len(b) + 8)
	}
	if err := enc.Encode(item); err != nil {
		return 0, err
	}
	_, err = e.frame()
	return start, err
}
