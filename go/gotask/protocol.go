package gotask

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"

	"github.com/trio-gotask/trio-gotask/go/gotask/internal/scan"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// ProtocolVersion is the version of the wire protocol this package speaks.
const ProtocolVersion = 2

// DefaultMaxFrameSize is the largest frame a server accepts unless told otherwise (64 MiB).
const DefaultMaxFrameSize = 64 << 20

// MinMaxFrameSize is the smallest frame limit a peer may set or announce
// (protocol.md section 1): every error reply fits in it.
const MinMaxFrameSize = 1024

// DefaultMaxInflight is the default bound on calls running at once on one connection.
const DefaultMaxInflight = 1024

// Message types (protocol.md section 2).
const (
	typeRequest      = 0
	typeResponse     = 1
	typeNotification = 2
	typeItem         = 3 // sidecar to client only: a sidecar never accepts one
)

// Error codes of malformed input (protocol.md sections 1 and 2).
const (
	codeTooLarge   = "too_large"
	codeEmptyFrame = "empty_frame"
	codeBadMsgpack = "bad_msgpack"
	codeBadMessage = "bad_message"
	codeTruncated  = "truncated"
)

// protocolError is a framing or message error: it ends the connection it occurred on.
type protocolError struct {
	code   string // one of the code* constants
	detail string
}

func (e *protocolError) Error() string { return e.code + ": " + e.detail }

func protoErr(code, format string, args ...any) error {
	return &protocolError{code: code, detail: fmt.Sprintf(format, args...)}
}

// errorCode returns the protocol error code of err, or "" if err is not a protocol error.
func errorCode(err error) string {
	var pe *protocolError
	if errors.As(err, &pe) {
		return pe.code
	}
	return ""
}

// readFrame reads one frame from r and returns its payload. The length prefix is
// checked against max before anything is allocated. A stream that ends between
// frames gives io.EOF; one that ends inside a frame gives a truncated error.
func readFrame(r io.Reader, max uint32) ([]byte, error) {
	var hdr [4]byte
	if n, err := io.ReadFull(r, hdr[:]); err != nil {
		if n == 0 && err == io.EOF {
			return nil, io.EOF
		}
		if err == io.ErrUnexpectedEOF {
			return nil, protoErr(codeTruncated, "stream ended inside a frame's length prefix")
		}
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 {
		return nil, protoErr(codeEmptyFrame, "frame of length 0")
	}
	if n > max {
		return nil, protoErr(codeTooLarge, "frame of %d bytes exceeds the maximum of %d", n, max)
	}
	return readPayload(r, n)
}

// frameStep is the largest payload read into one allocation of its declared
// size, and the size of the first buffer of a longer one.
const frameStep = 64 << 10

// frameChunk is the size of the pieces a payload longer than frameStep is
// read into before it is assembled.
const frameChunk = 1 << 20

// chunkPool holds frameChunk-byte buffers between frames.
var chunkPool = sync.Pool{New: func() any { b := make([]byte, frameChunk); return &b }}

// readPayload reads a payload of n bytes. One longer than frameStep is read
// first into a frameStep buffer, then into pooled frameChunk pieces, and is
// assembled into one buffer of n bytes only once all of it has arrived: a
// peer that declares a large frame and sends little of it makes us hold about
// what it sent (rounded up to a piece), never what it declared. Assembling
// copies each byte once more; BenchmarkReadFrame and BenchmarkEcho16MiB
// measure it.
func readPayload(r io.Reader, n uint32) ([]byte, error) {
	if n <= frameStep {
		payload := make([]byte, n)
		if k, err := io.ReadFull(r, payload); err != nil {
			return nil, payloadError(err, k, n)
		}
		return payload, nil
	}
	first := make([]byte, frameStep)
	if k, err := io.ReadFull(r, first); err != nil {
		return nil, payloadError(err, k, n)
	}
	got := frameStep
	var chunks []*[]byte
	defer func() {
		for _, c := range chunks {
			chunkPool.Put(c)
		}
	}()
	for got < int(n) {
		c := chunkPool.Get().(*[]byte)
		chunks = append(chunks, c)
		k, err := io.ReadFull(r, (*c)[:min(frameChunk, int(n)-got)])
		got += k
		if err != nil {
			return nil, payloadError(err, got, n)
		}
	}
	payload := make([]byte, n)
	at := copy(payload, first)
	for _, c := range chunks {
		at += copy(payload[at:], *c)
	}
	return payload, nil
}

// payloadError is the error of a payload read that failed after got of its
// n bytes.
func payloadError(err error, got int, n uint32) error {
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		return protoErr(codeTruncated, "stream ended after %d of %d payload bytes", got, n)
	}
	return &partialFrameError{err: err, got: got, n: n}
}

// partialFrameError is a read error, such as a deadline, inside a frame's
// payload: how much of it had arrived, for the log.
type partialFrameError struct {
	err error
	got int
	n   uint32
}

func (e *partialFrameError) Error() string {
	return fmt.Sprintf("%v after %d of %d payload bytes", e.err, e.got, e.n)
}

func (e *partialFrameError) Unwrap() error { return e.err }

// message is one decoded payload. Raw msgpack fields point into the payload.
type message struct {
	typ    int
	msgid  uint32
	method string // request, notification
	params []byte // request, notification: one raw msgpack object
	meta   []byte // request: raw map, or nil when absent or nil

	// timeout from meta, in seconds; valid when hasTimeout.
	timeout    float64
	hasTimeout bool

	// stream says meta opens a stream, with credit its initial credit in bytes.
	stream bool
	credit int64

	// metadata is meta's "metadata" map, raw (parseMetadata decodes it);
	// nil when absent or not a map.
	metadata []byte

	errMap *wireError // response: nil on success
	result []byte     // response: one raw msgpack object
}

// wireError is the error map of a response.
type wireError struct {
	Type    string
	Message string
	Stack   string
}

// parseMessage checks that payload is exactly one msgpack object of one of the
// three message shapes a sidecar receives and returns it decoded.
func parseMessage(payload []byte) (*message, error) {
	end, err := scan.Skip(payload, 0)
	if err != nil {
		return nil, protoErr(codeBadMsgpack, "%v", err)
	}
	if end != len(payload) {
		return nil, protoErr(codeBadMsgpack, "%d bytes left over after the object", len(payload)-end)
	}
	// From here on payload is known to be one well-formed object.
	c := scan.Cursor{B: payload}
	n, ok := c.ArrayLen()
	if !ok {
		return nil, protoErr(codeBadMessage, "message is not an array")
	}
	if n == 0 {
		return nil, protoErr(codeBadMessage, "message is an empty array")
	}
	t, ok := c.Uint()
	if ok && t == typeItem {
		return nil, protoErr(codeBadMessage, "message type 3, an item of a stream: only a sidecar sends items")
	}
	if !ok || t > typeNotification {
		return nil, protoErr(codeBadMessage, "message type is not 0, 1 or 2")
	}
	m := &message{typ: int(t)}
	switch m.typ {
	case typeRequest:
		if n != 4 && n != 5 {
			return nil, protoErr(codeBadMessage, "request has %d elements, want 4 or 5", n)
		}
		if m.msgid, err = readMsgid(&c); err != nil {
			return nil, err
		}
		if m.method, ok = c.Str(); !ok {
			return nil, protoErr(codeBadMessage, "method is not a string")
		}
		m.params = c.Raw()
		if n == 5 {
			if err := m.parseMeta(&c); err != nil {
				return nil, err
			}
		}
	case typeResponse:
		if n != 4 {
			return nil, protoErr(codeBadMessage, "response has %d elements, want 4", n)
		}
		if m.msgid, err = readMsgid(&c); err != nil {
			return nil, err
		}
		if m.errMap, err = parseErrorMap(&c); err != nil {
			return nil, err
		}
		m.result = c.Raw()
	case typeNotification:
		if n != 3 {
			return nil, protoErr(codeBadMessage, "notification has %d elements, want 3", n)
		}
		if m.method, ok = c.Str(); !ok {
			return nil, protoErr(codeBadMessage, "method is not a string")
		}
		m.params = c.Raw()
	}
	return m, nil
}

// readMsgid reads a msgid: an unsigned 32-bit integer.
func readMsgid(c *scan.Cursor) (uint32, error) {
	u, ok := c.Uint()
	if !ok || u > math.MaxUint32 {
		return 0, protoErr(codeBadMessage, "msgid is not an unsigned 32-bit integer")
	}
	return uint32(u), nil
}

func (m *message) parseMeta(c *scan.Cursor) error {
	if c.Nil() {
		return nil
	}
	start := c.P
	n, ok := c.MapLen()
	if !ok {
		return protoErr(codeBadMessage, "meta is neither a map nor nil")
	}
	for i := 0; i < n; i++ {
		key, isStr := c.Str()
		if !isStr {
			c.Raw() // keys other than strings are ignored, like unknown keys
			c.Raw()
			continue
		}
		switch key {
		case "timeout":
			// A timeout that is not a number, or is NaN, is ignored like an unknown key.
			if f, ok := c.Number(); !ok {
				c.Raw()
			} else if !math.IsNaN(f) {
				m.timeout, m.hasTimeout = f, true
			}
		case "stream":
			// A credit that is not an integer 0 <= n < 2^63 is ignored like an unknown key.
			if n, ok := c.Uint(); !ok {
				c.Raw()
			} else if n <= math.MaxInt64 {
				m.credit, m.stream = int64(n), true
			}
		case "metadata":
			// A value that is not a map is ignored like an unknown key.
			at := c.P
			if _, ok := c.MapLen(); ok {
				c.P = at
				m.metadata = c.Raw()
			} else {
				c.Raw()
			}
		default:
			c.Raw()
		}
	}
	m.meta = c.B[start:c.P]
	return nil
}

func parseErrorMap(c *scan.Cursor) (*wireError, error) {
	if c.Nil() {
		return nil, nil
	}
	n, ok := c.MapLen()
	if !ok {
		return nil, protoErr(codeBadMessage, "error is neither a map nor nil")
	}
	var e wireError
	var hasType, hasMessage bool
	for i := 0; i < n; i++ {
		key, isStr := c.Str()
		if !isStr {
			c.Raw()
			c.Raw()
			continue
		}
		var dst *string
		switch key {
		case "type":
			dst, hasType = &e.Type, true
		case "message":
			dst, hasMessage = &e.Message, true
		case "stack":
			dst = &e.Stack
		default:
			c.Raw()
			continue
		}
		s, ok := c.Str()
		if !ok {
			if key == "stack" {
				c.Raw()
				continue
			}
			return nil, protoErr(codeBadMessage, "error %s is not a string", key)
		}
		*dst = s
	}
	if !hasType || !hasMessage {
		return nil, protoErr(codeBadMessage, "error map lacks a type or a message")
	}
	return &e, nil
}

// helloFrameLimit returns the max_frame_size of a $hello's params, raised to
// MinMaxFrameSize; ok is false when it has none.
func helloFrameLimit(params []byte) (limit uint32, ok bool) {
	var hello struct {
		MaxFrameSize *uint64 `msgpack:"max_frame_size"`
	}
	if decodeValue(params, &hello) != nil || hello.MaxFrameSize == nil {
		return 0, false
	}
	return max(uint32(min(*hello.MaxFrameSize, math.MaxUint32)), MinMaxFrameSize), true
}

// helloHostCalls returns the max_host_calls of a client's $hello params,
// capped at maxHostCallsCap: 0 when it has none, or one that is not an
// unsigned integer (the key is then ignored, like an unknown one).
func helloHostCalls(params []byte) int {
	c := scan.Cursor{B: params}
	n, ok := c.MapLen()
	if !ok {
		return 0
	}
	for i := 0; i < n; i++ {
		if key, ok := c.Str(); !ok || key != "max_host_calls" {
			if !ok {
				c.Raw()
			}
			c.Raw()
			continue
		}
		if v, ok := c.Uint(); ok {
			return int(min(v, maxHostCallsCap))
		}
		return 0
	}
	return 0
}

// helloPing reports whether a client's $hello params announce "ping": true,
// that the client answers a $ping. Any other value counts as no.
func helloPing(params []byte) bool {
	c := scan.Cursor{B: params}
	n, ok := c.MapLen()
	if !ok {
		return false
	}
	for i := 0; i < n; i++ {
		if key, ok := c.Str(); !ok || key != "ping" {
			if !ok {
				c.Raw()
			}
			c.Raw()
			continue
		}
		return c.B[c.P] == msgpcode.True
	}
	return false
}

// appendHello encodes the sidecar's first frame on a connection,
// [2, "$hello", {"version", "max_frame_size", "max_inflight", "streams": true,
// "ping": true}], into e.
func (e *encBuf) appendHello(maxFrame uint32, maxInflight int) {
	enc := e.enc
	enc.EncodeArrayLen(3)
	enc.EncodeUint(typeNotification)
	enc.EncodeString("$hello")
	enc.EncodeMapLen(5)
	enc.EncodeString("version")
	enc.EncodeUint(ProtocolVersion)
	enc.EncodeString("max_frame_size")
	enc.EncodeUint(uint64(maxFrame))
	enc.EncodeString("max_inflight")
	enc.EncodeUint(uint64(maxInflight))
	enc.EncodeString("streams")
	enc.EncodeBool(true)
	enc.EncodeString("ping")
	enc.EncodeBool(true)
}

// appendToken encodes [2, method, token] ($ping, $pong) into e.
func (e *encBuf) appendToken(method string, token uint64) {
	enc := e.enc
	enc.EncodeArrayLen(3)
	enc.EncodeUint(typeNotification)
	enc.EncodeString(method)
	enc.EncodeUint(token)
}

// appendNotification encodes [2, method, text] into e.
func (e *encBuf) appendNotification(method, text string) {
	enc := e.enc
	enc.EncodeArrayLen(3)
	enc.EncodeUint(typeNotification)
	enc.EncodeString(method)
	enc.EncodeString(text)
}

// appendGoAway encodes the $goaway notification of a shutdown into e.
func (e *encBuf) appendGoAway() { e.appendNotification("$goaway", "the sidecar is shutting down") }

// appendDrained encodes the $drained notification of a shutdown into e.
func (e *encBuf) appendDrained() {
	e.appendNotification("$drained", "the sidecar answered every call it ran; it runs no other")
}

// appendResponse encodes [1, msgid, error, result] into e.
func (e *encBuf) appendResponse(msgid uint32, werr *wireError, result any) error {
	enc := e.enc
	if err := enc.EncodeArrayLen(4); err != nil {
		return err
	}
	enc.EncodeUint(typeResponse)
	enc.EncodeUint(uint64(msgid))
	if werr == nil {
		enc.EncodeNil()
		if b, ok := result.([]byte); ok {
			// Binary replies are often large: size the buffer once instead of doubling it.
			e.buf.Grow(len(b) + 8)
		}
		return enc.Encode(result)
	}
	n := 2
	if werr.Stack != "" {
		n = 3
	}
	enc.EncodeMapLen(n)
	enc.EncodeString("type")
	enc.EncodeString(werr.Type)
	enc.EncodeString("message")
	enc.EncodeString(werr.Message)
	if werr.Stack != "" {
		enc.EncodeString("stack")
		enc.EncodeString(werr.Stack)
	}
	return enc.EncodeNil()
}
