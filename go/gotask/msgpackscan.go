package gotask

import "math"

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
