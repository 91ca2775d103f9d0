package gotask

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// hangGuard bounds a wait that only a hang can reach: how long a test waits
// for something that must happen before it fails, never what it expects.
const hangGuard = time.Minute

// testClient is a minimal client speaking the wire protocol, for the tests:
// one reader goroutine matches responses to calls by msgid (net/rpc style).
type testClient struct {
	t   testing.TB
	rwc io.ReadWriteCloser

	wmu sync.Mutex // serializes whole-frame writes

	mu      sync.Mutex
	nextID  uint32
	pending map[uint32]chan *message
	err     error         // why the reader stopped
	done    chan struct{} // closed when the reader stops
	hello   chan *message // the sidecar's $hello, once it arrives
	goaway  chan struct{} // closed when the sidecar's $goaway arrives
	drained chan struct{} // closed when the sidecar's $drained arrives

	// inbox, when not nil, receives the sidecar's requests (host calls) and
	// notifications other than $hello; otherwise they end the reader.
	inbox chan *message
}

// remoteError is an error reply.
type remoteError struct{ wireError }

func (e *remoteError) Error() string { return e.Type + ": " + e.Message }

func newTestClient(t testing.TB, rwc io.ReadWriteCloser) *testClient {
	return startTestClient(t, rwc, nil)
}

// startTestClient starts a test client whose inbox (may be nil) receives
// what the sidecar sends besides responses and its $hello.
func startTestClient(t testing.TB, rwc io.ReadWriteCloser, inbox chan *message) *testClient {
	c := &testClient{t: t, rwc: rwc, pending: map[uint32]chan *message{}, done: make(chan struct{}), hello: make(chan *message, 1), goaway: make(chan struct{}), drained: make(chan struct{}), inbox: inbox}
	go c.readLoop()
	t.Cleanup(func() { c.rwc.Close() })
	return c
}

func (c *testClient) readLoop() {
	var err error
	for {
		var payload []byte
		payload, err = readWholeFrame(c.rwc)
		if err != nil {
			break
		}
		var m *message
		if m, err = parseMessage(payload); err != nil {
			break
		}
		if m.typ == typeNotification && m.method == "$hello" {
			select {
			case c.hello <- m:
			default:
				err = errors.New("client got a second $hello")
			}
			if err != nil {
				break
			}
			continue
		}
		if m.typ == typeNotification && (m.method == "$goaway" || m.method == "$drained") {
			ch := c.goaway
			if m.method == "$drained" {
				ch = c.drained
			}
			if isClosed(ch) {
				err = fmt.Errorf("client got a second %s", m.method)
				break
			}
			close(ch)
			continue
		}
		if c.inbox != nil && m.typ != typeResponse {
			c.inbox <- m
			continue
		}
		if m.typ != typeResponse {
			err = fmt.Errorf("client got message type %d", m.typ)
			break
		}
		c.mu.Lock()
		ch := c.pending[m.msgid]
		delete(c.pending, m.msgid)
		c.mu.Unlock()
		if ch != nil {
			ch <- m
		}
	}
	c.mu.Lock()
	c.err = err
	for id, ch := range c.pending {
		close(ch)
		delete(c.pending, id)
	}
	c.mu.Unlock()
	close(c.done)
}

func (c *testClient) writeFrame(payload []byte) error {
	frame := make([]byte, 4+len(payload))
	binary.BigEndian.PutUint32(frame, uint32(len(payload)))
	copy(frame[4:], payload)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.rwc.Write(frame)
	return err
}

func marshalCompact(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	err := enc.Encode(v)
	return buf.Bytes(), err
}

// start sends a request and returns its msgid and the channel its response
// arrives on (closed if the connection ends first).
func (c *testClient) start(method string, params any, meta map[string]any) (uint32, <-chan *message) {
	ch := make(chan *message, 1)
	c.mu.Lock()
	if c.err != nil || isClosed(c.done) {
		c.mu.Unlock()
		close(ch)
		return 0, ch
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.mu.Unlock()
	var metaV any
	if meta != nil {
		metaV = meta
	}
	payload, err := marshalCompact([]any{0, id, method, params, metaV})
	if err != nil {
		c.t.Errorf("encode request: %v", err)
	}
	if err := c.writeFrame(payload); err != nil {
		c.mu.Lock()
		if c.pending[id] == ch {
			delete(c.pending, id)
			close(ch)
		}
		c.mu.Unlock()
	}
	return id, ch
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (c *testClient) cancel(id uint32) error {
	payload, err := marshalCompact([]any{2, "$cancel", id})
	if err != nil {
		return err
	}
	return c.writeFrame(payload)
}

// wait waits for a response and decodes its result into reply (if not nil).
func (c *testClient) wait(ch <-chan *message, reply any) error {
	select {
	case m, ok := <-ch:
		if !ok {
			c.mu.Lock()
			defer c.mu.Unlock()
			return fmt.Errorf("connection closed: %v", c.err)
		}
		if m.errMap != nil {
			return &remoteError{*m.errMap}
		}
		if reply != nil {
			return decodeValue(m.result, reply)
		}
		return nil
	case <-time.After(hangGuard):
		return errors.New("timed out waiting for a response")
	}
}

func (c *testClient) callMeta(method string, params any, meta map[string]any, reply any) error {
	_, ch := c.start(method, params, meta)
	return c.wait(ch, reply)
}

func (c *testClient) call(method string, params, reply any) error {
	return c.callMeta(method, params, nil, reply)
}

// errType returns the wire error type of err, or "" if it is not an error reply.
func errType(err error) string {
	var re *remoteError
	if errors.As(err, &re) {
		return re.Type
	}
	return ""
}

// readWholeFrame reads a frame into one buffer of its declared size, as a
// trusting client may (the sidecar's readFrame grows its buffer as bytes
// arrive): the benchmarks then measure the sidecar's side alone.
func readWholeFrame(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	p := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	_, err := io.ReadFull(r, p)
	return p, err
}
