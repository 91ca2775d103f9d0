package gotask

import (
	"fmt"
	"unicode/utf8"

	"github.com/trio-gotask/trio-gotask/go/gotask/internal/check"
	"github.com/trio-gotask/trio-gotask/go/gotask/internal/scan"
)

// reply encodes a response and queues it for the writer on out (a stream's
// goes on items instead: see request).
func (c *conn) reply(msgid uint32, werr *wireError, result any, release bool) {
	c.send(c.out, c.response(msgid, werr, result, release))
}

// response encodes and frames a response. Every request gets one: a result
// that cannot be encoded, or would not fit the client's frame limit, is
// replaced by an error, and an error is shortened until it fits. release
// says the call holds an in-flight slot, which the writer frees as it takes
// the reply: a client may send its next request as soon as the reply
// arrives, and must find room, while a reply stuck behind a client that does
// not read keeps its slot (the server's memory stays bounded).
func (c *conn) response(msgid uint32, werr *wireError, result any, release bool) *encBuf {
	e := getEncBuf()
	e.release = release
	limit := int(c.replyLimit.Load())
	if werr == nil {
		if err := encodeResponse(e, msgid, nil, result); err != nil {
			werr = &wireError{Type: "bad_reply", Message: "the reply cannot be encoded: " + unencodableMessage("reply", result, err)}
		} else if n := e.buf.Len() - 4; n > limit {
			// The client would refuse the frame and lose every call on the connection with it.
			werr = &wireError{Type: "too_large", Message: fmt.Sprintf("the reply is %d bytes; the client's frame limit is %d (max_frame_size)", n, limit)}
		} else if err := check.Reply(responseResult(e.buf.Bytes()[4:])); err != nil {
			werr = &wireError{Type: "bad_reply", Message: "the reply cannot reach Python faithfully: " + err.Error()}
		} else {
			return e
		}
	}
	appendErrorResponse(e, msgid, *werr, limit)
	return e
}

// unencodableMessage says what in v, named name, msgpack could not encode,
// and where, such as "reply.items[2].done is a chan int, which msgpack cannot
// carry"; err's text when nothing in the value is to blame (a type's own
// encoder failed).
func unencodableMessage(name string, v any, err error) string {
	if path, t := check.Unencodable(v); t != nil {
		return fmt.Sprintf("%s%s is a %s, which msgpack cannot carry", name, path, t)
	}
	return err.Error()
}

// responseResult returns the result of an encoded successful response
// [1, msgid, nil, result].
func responseResult(payload []byte) []byte {
	c := scan.Cursor{B: payload}
	c.ArrayLen()
	c.Uint()
	c.Uint()
	c.Nil()
	return c.B[c.P:]
}

// sendNow frames e and queues it on q, c.out or c.items, without waiting for
// room in it: a goroutine waits instead, so the caller (a reader, Shutdown)
// never blocks on a slow client.
func (c *conn) sendNow(q chan *encBuf, e *encBuf) {
	e.frame()
	c.queued.Add(int64(e.buf.Len()))
	select {
	case q <- e:
	default:
		go c.enqueue(q, e)
	}
}

// send queues an encoded frame on q, c.out or c.items, or drops it if the
// writer has stopped (the connection is gone, and the reply with it).
func (c *conn) send(q chan *encBuf, e *encBuf) {
	c.queued.Add(int64(e.buf.Len()))
	c.enqueue(q, e)
}

// enqueue is send for a frame already counted in queued.
func (c *conn) enqueue(q chan *encBuf, e *encBuf) {
	select {
	case q <- e:
	case <-c.writerDone:
		c.dequeued(e.buf.Len())
		c.taken(e)
		putEncBuf(e)
	}
}

// taken frees the in-flight slot of a reply the writer took (see reply), and
// tells the stream of an item that the item left the queue.
func (c *conn) taken(e *encBuf) {
	if e.stream != nil {
		e.stream.left(e.buf.Len())
		e.stream = nil
	}
	if e.release {
		e.release = false
		c.mu.Lock()
		c.inflight--
		if !c.returned {
			c.srv.releaseSlots(1)
		}
		c.mu.Unlock()
	}
}

// returnSlots gives the server back the slots of the connection's calls
// whose replies were never taken (left in the queue when the writer ended).
// Replies taken after it free no server slot.
func (c *conn) returnSlots() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.returned {
		c.returned = true
		c.srv.releaseSlots(c.inflight)
	}
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
