package gotask

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
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

// maxNesting bounds how deeply arrays and maps may nest in one payload, so that
// hostile input cannot exhaust the stack of a recursive decoder.
const maxNesting = 10000

// Message types (protocol.md section 2).
const (
	typeRequest      = 0
	typeResponse     = 1
	typeNotification = 2
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
	payload := make([]byte, n)
	if got, err := io.ReadFull(r, payload); err != nil {
		if err == io.ErrUnexpectedEOF || err == io.EOF {
			return nil, protoErr(codeTruncated, "stream ended after %d of %d payload bytes", got, n)
		}
		return nil, err
	}
	return payload, nil
}

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
// three message shapes and returns it decoded.
func parseMessage(payload []byte) (*message, error) {
	end, err := skipObject(payload, 0)
	if err != nil {
		return nil, err
	}
	if end != len(payload) {
		return nil, protoErr(codeBadMsgpack, "%d bytes left over after the object", len(payload)-end)
	}
	// From here on payload is known to be one well-formed object.
	c := cursor{b: payload}
	n, ok := c.arrayLen()
	if !ok {
		return nil, protoErr(codeBadMessage, "message is not an array")
	}
	if n == 0 {
		return nil, protoErr(codeBadMessage, "message is an empty array")
	}
	t, ok := c.uint()
	if !ok || t > typeNotification {
		return nil, protoErr(codeBadMessage, "message type is not 0, 1 or 2")
	}
	m := &message{typ: int(t)}
	switch m.typ {
	case typeRequest:
		if n != 4 && n != 5 {
			return nil, protoErr(codeBadMessage, "request has %d elements, want 4 or 5", n)
		}
		if m.msgid, err = c.msgid(); err != nil {
			return nil, err
		}
		if m.method, ok = c.str(); !ok {
			return nil, protoErr(codeBadMessage, "method is not a string")
		}
		m.params = c.raw()
		if n == 5 {
			if err := m.parseMeta(&c); err != nil {
				return nil, err
			}
		}
	case typeResponse:
		if n != 4 {
			return nil, protoErr(codeBadMessage, "response has %d elements, want 4", n)
		}
		if m.msgid, err = c.msgid(); err != nil {
			return nil, err
		}
		if m.errMap, err = parseErrorMap(&c); err != nil {
			return nil, err
		}
		m.result = c.raw()
	case typeNotification:
		if n != 3 {
			return nil, protoErr(codeBadMessage, "notification has %d elements, want 3", n)
		}
		if m.method, ok = c.str(); !ok {
			return nil, protoErr(codeBadMessage, "method is not a string")
		}
		m.params = c.raw()
	}
	return m, nil
}

func (m *message) parseMeta(c *cursor) error {
	if c.nil() {
		return nil
	}
	start := c.p
	n, ok := c.mapLen()
	if !ok {
		return protoErr(codeBadMessage, "meta is neither a map nor nil")
	}
	for i := 0; i < n; i++ {
		key, isStr := c.str()
		if !isStr {
			c.raw() // keys other than strings are ignored, like unknown keys
			c.raw()
			continue
		}
		if key != "timeout" {
			c.raw()
			continue
		}
		// A timeout that is not a number, or is NaN, is ignored like an unknown key.
		if f, ok := c.number(); !ok {
			c.raw()
		} else if !math.IsNaN(f) {
			m.timeout, m.hasTimeout = f, true
		}
	}
	m.meta = c.b[start:c.p]
	return nil
}

func parseErrorMap(c *cursor) (*wireError, error) {
	if c.nil() {
		return nil, nil
	}
	n, ok := c.mapLen()
	if !ok {
		return nil, protoErr(codeBadMessage, "error is neither a map nor nil")
	}
	var e wireError
	var hasType, hasMessage bool
	for i := 0; i < n; i++ {
		key, isStr := c.str()
		if !isStr {
			c.raw()
			c.raw()
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
			c.raw()
			continue
		}
		s, ok := c.str()
		if !ok {
			if key == "stack" {
				c.raw()
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

// skipObject checks that b[pos:] starts with one well-formed msgpack object and
// returns the offset just past it. It is iterative, so nesting cannot blow the
// stack, and it rejects nesting deeper than maxNesting.
func skipObject(b []byte, pos int) (int, error) {
	// stack holds, for each open container, how many objects it still expects.
	var stackBuf [16]int
	stack := append(stackBuf[:0], 1)
	for len(stack) > 0 {
		top := len(stack) - 1
		if stack[top] == 0 {
			stack = stack[:top]
			continue
		}
		stack[top]--
		if pos >= len(b) {
			return 0, protoErr(codeBadMsgpack, "object ends early")
		}
		c := b[pos]
		pos++
		var children, skip uint64
		switch {
		case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
		case c <= 0x8f:
			children = 2 * uint64(c&0x0f)
		case c <= 0x9f:
			children = uint64(c & 0x0f)
		case c <= 0xbf:
			skip = uint64(c & 0x1f)
		case c == 0xc1:
			return 0, protoErr(codeBadMsgpack, "reserved byte 0xc1 at offset %d", pos-1)
		default:
			var sz int // size of the length field that follows
			var extra uint64
			switch c {
			case 0xc4, 0xd9:
				sz = 1
			case 0xc5, 0xda:
				sz = 2
			case 0xc6, 0xdb:
				sz = 4
			case 0xc7:
				sz, extra = 1, 1
			case 0xc8:
				sz, extra = 2, 1
			case 0xc9:
				sz, extra = 4, 1
			case 0xca:
				skip = 4
			case 0xcb:
				skip = 8
			case 0xcc, 0xd0:
				skip = 1
			case 0xcd, 0xd1:
				skip = 2
			case 0xce, 0xd2:
				skip = 4
			case 0xcf, 0xd3:
				skip = 8
			case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8:
				skip = 1 + 1<<(c-0xd4)
			case 0xdc, 0xde:
				sz = 2
			case 0xdd, 0xdf:
				sz = 4
			}
			if sz > 0 {
				if len(b)-pos < sz {
					return 0, protoErr(codeBadMsgpack, "object ends early")
				}
				var n uint64
				for _, x := range b[pos : pos+sz] {
					n = n<<8 | uint64(x)
				}
				pos += sz
				switch c {
				case 0xdc, 0xdd:
					children = n
				case 0xde, 0xdf:
					children = 2 * n
				default:
					skip = n + extra
				}
			}
		}
		if skip > uint64(len(b)-pos) {
			return 0, protoErr(codeBadMsgpack, "object ends early")
		}
		pos += int(skip)
		if children > 0 {
			// Every child takes at least one byte.
			if children > uint64(len(b)-pos) {
				return 0, protoErr(codeBadMsgpack, "container of %d objects ends early", children)
			}
			if len(stack) > maxNesting {
				return 0, protoErr(codeBadMsgpack, "nesting deeper than %d", maxNesting)
			}
			stack = append(stack, int(children))
		}
	}
	return pos, nil
}

// cursor reads the envelope of a payload already checked by skipObject, so it
// need not check bounds beyond what the format promises.
type cursor struct {
	b []byte
	p int
}

func (c *cursor) be(n int) uint64 {
	var v uint64
	for _, x := range c.b[c.p : c.p+n] {
		v = v<<8 | uint64(x)
	}
	c.p += n
	return v
}

// raw returns the next object as a sub-slice and moves past it.
func (c *cursor) raw() []byte {
	start := c.p
	end, err := skipObject(c.b, c.p)
	if err != nil { // cannot happen on a validated payload
		panic(err)
	}
	c.p = end
	return c.b[start:end]
}

func (c *cursor) nil() bool {
	if c.b[c.p] == 0xc0 {
		c.p++
		return true
	}
	return false
}

func (c *cursor) arrayLen() (int, bool) {
	switch x := c.b[c.p]; {
	case x >= 0x90 && x <= 0x9f:
		c.p++
		return int(x & 0x0f), true
	case x == 0xdc:
		c.p++
		return int(c.be(2)), true
	case x == 0xdd:
		c.p++
		return int(c.be(4)), true
	}
	return 0, false
}

func (c *cursor) mapLen() (int, bool) {
	switch x := c.b[c.p]; {
	case x >= 0x80 && x <= 0x8f:
		c.p++
		return int(x & 0x0f), true
	case x == 0xde:
		c.p++
		return int(c.be(2)), true
	case x == 0xdf:
		c.p++
		return int(c.be(4)), true
	}
	return 0, false
}

// str reads a string; if the next object is not a string it is left unread.
func (c *cursor) str() (string, bool) {
	x := c.b[c.p]
	var n int
	switch {
	case x >= 0xa0 && x <= 0xbf:
		c.p++
		n = int(x & 0x1f)
	case x == 0xd9:
		c.p++
		n = int(c.be(1))
	case x == 0xda:
		c.p++
		n = int(c.be(2))
	case x == 0xdb:
		c.p++
		n = int(c.be(4))
	default:
		return "", false
	}
	s := string(c.b[c.p : c.p+n])
	c.p += n
	return s, true
}

// integer reads an integer of any encoding. neg reports a negative value, whose
// magnitude is then not returned. ok is false (and nothing is read) for non-integers.
func (c *cursor) integer() (u uint64, neg, ok bool) {
	x := c.b[c.p]
	switch {
	case x <= 0x7f:
		c.p++
		return uint64(x), false, true
	case x >= 0xe0:
		c.p++
		return 0, true, true
	case x >= 0xcc && x <= 0xcf:
		c.p++
		return c.be(1 << (x - 0xcc)), false, true
	case x >= 0xd0 && x <= 0xd3:
		c.p++
		n := 1 << (x - 0xd0)
		v := c.be(n)
		shift := 64 - 8*uint(n)
		s := int64(v<<shift) >> shift // sign-extend
		if s < 0 {
			return 0, true, true
		}
		return uint64(s), false, true
	}
	return 0, false, false
}

// uint reads a non-negative integer; anything else is not ok.
func (c *cursor) uint() (uint64, bool) {
	u, neg, ok := c.integer()
	return u, ok && !neg
}

func (c *cursor) msgid() (uint32, error) {
	u, ok := c.uint()
	if !ok || u > math.MaxUint32 {
		return 0, protoErr(codeBadMessage, "msgid is not an unsigned 32-bit integer")
	}
	return uint32(u), nil
}

// number reads an integer or a float as a float64; if the next object is
// neither it is left unread.
func (c *cursor) number() (float64, bool) {
	x := c.b[c.p]
	switch x {
	case 0xca:
		c.p++
		return float64(math.Float32frombits(uint32(c.be(4)))), true
	case 0xcb:
		c.p++
		return math.Float64frombits(c.be(8)), true
	}
	u, neg, ok := c.integer()
	if !ok {
		return 0, false
	}
	if neg {
		return -1, true
	}
	return float64(u), true
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

// appendHello encodes the sidecar's first frame on a connection,
// [2, "$hello", {"version", "max_frame_size", "max_inflight"}], into e.
func (e *encBuf) appendHello(maxFrame uint32, maxInflight int) {
	enc := e.enc
	enc.EncodeArrayLen(3)
	enc.EncodeUint(typeNotification)
	enc.EncodeString("$hello")
	enc.EncodeMapLen(3)
	enc.EncodeString("version")
	enc.EncodeUint(ProtocolVersion)
	enc.EncodeString("max_frame_size")
	enc.EncodeUint(uint64(maxFrame))
	enc.EncodeString("max_inflight")
	enc.EncodeUint(uint64(maxInflight))
}

// appendNotification encodes [2, method, text] into e.
func (e *encBuf) appendNotification(method, text string) {
	enc := e.enc
	enc.EncodeArrayLen(3)
	enc.EncodeUint(typeNotification)
	enc.EncodeString(method)
	enc.EncodeString(text)
}
