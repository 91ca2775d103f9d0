package gotask

import (
	"math"

	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// neverUsed is the one byte msgpack reserves; msgpcode has no name for it.
const neverUsed = 0xc1

// scanRule is how skipObject passes over an object whose first byte is not a
// fix format (fixint, fixmap, fixarray, fixstr) or nil or a bool.
type scanRule struct {
	fixed   uint8 // bytes after the code, when their number is fixed
	lenSize uint8 // bytes of the length field after the code, when there is one
	extra   uint8 // bytes between the length field and the data: ext's type
	per     uint8 // objects each unit of length counts (1 array, 2 map), or 0 for bytes
}

// scanRules holds the scanRule of each such first byte. A table rather than a
// switch: msgpcode's codes are variables, which a switch compares one by one
// (BenchmarkSkipObject).
var scanRules = func() (rules [256]scanRule) {
	set := func(r scanRule, codes ...byte) {
		for _, c := range codes {
			rules[c] = r
		}
	}
	set(scanRule{lenSize: 1}, msgpcode.Bin8, msgpcode.Str8)
	set(scanRule{lenSize: 2}, msgpcode.Bin16, msgpcode.Str16)
	set(scanRule{lenSize: 4}, msgpcode.Bin32, msgpcode.Str32)
	set(scanRule{lenSize: 1, extra: 1}, msgpcode.Ext8)
	set(scanRule{lenSize: 2, extra: 1}, msgpcode.Ext16)
	set(scanRule{lenSize: 4, extra: 1}, msgpcode.Ext32)
	set(scanRule{lenSize: 2, per: 1}, msgpcode.Array16)
	set(scanRule{lenSize: 4, per: 1}, msgpcode.Array32)
	set(scanRule{lenSize: 2, per: 2}, msgpcode.Map16)
	set(scanRule{lenSize: 4, per: 2}, msgpcode.Map32)
	set(scanRule{fixed: 1}, msgpcode.Uint8, msgpcode.Int8)
	set(scanRule{fixed: 2}, msgpcode.Uint16, msgpcode.Int16)
	set(scanRule{fixed: 4}, msgpcode.Uint32, msgpcode.Int32, msgpcode.Float)
	set(scanRule{fixed: 8}, msgpcode.Uint64, msgpcode.Int64, msgpcode.Double)
	set(scanRule{fixed: 1 + 1}, msgpcode.FixExt1) // the ext type, then the data
	set(scanRule{fixed: 1 + 2}, msgpcode.FixExt2)
	set(scanRule{fixed: 1 + 4}, msgpcode.FixExt4)
	set(scanRule{fixed: 1 + 8}, msgpcode.FixExt8)
	set(scanRule{fixed: 1 + 16}, msgpcode.FixExt16)
	return rules
}()

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
		case msgpcode.IsFixedNum(c) || c == msgpcode.Nil || c == msgpcode.False || c == msgpcode.True:
		case msgpcode.IsFixedMap(c):
			children = 2 * uint64(c&msgpcode.FixedMapMask)
		case msgpcode.IsFixedArray(c):
			children = uint64(c & msgpcode.FixedArrayMask)
		case msgpcode.IsFixedString(c):
			skip = uint64(c & msgpcode.FixedStrMask)
		case c == neverUsed:
			return 0, protoErr(codeBadMsgpack, "reserved byte 0xc1 at offset %d", pos-1)
		default:
			r := scanRules[c]
			skip = uint64(r.fixed)
			if sz := int(r.lenSize); sz > 0 {
				if len(b)-pos < sz {
					return 0, protoErr(codeBadMsgpack, "object ends early")
				}
				var n uint64
				for _, x := range b[pos : pos+sz] {
					n = n<<8 | uint64(x)
				}
				pos += sz
				if r.per == 0 {
					skip = n + uint64(r.extra)
				} else {
					children = uint64(r.per) * n
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
	if c.b[c.p] == msgpcode.Nil {
		c.p++
		return true
	}
	return false
}

func (c *cursor) arrayLen() (int, bool) {
	switch x := c.b[c.p]; {
	case msgpcode.IsFixedArray(x):
		c.p++
		return int(x & msgpcode.FixedArrayMask), true
	case x == msgpcode.Array16:
		c.p++
		return int(c.be(2)), true
	case x == msgpcode.Array32:
		c.p++
		return int(c.be(4)), true
	}
	return 0, false
}

func (c *cursor) mapLen() (int, bool) {
	switch x := c.b[c.p]; {
	case msgpcode.IsFixedMap(x):
		c.p++
		return int(x & msgpcode.FixedMapMask), true
	case x == msgpcode.Map16:
		c.p++
		return int(c.be(2)), true
	case x == msgpcode.Map32:
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
	case msgpcode.IsFixedString(x):
		c.p++
		n = int(x & msgpcode.FixedStrMask)
	case x == msgpcode.Str8:
		c.p++
		n = int(c.be(1))
	case x == msgpcode.Str16:
		c.p++
		n = int(c.be(2))
	case x == msgpcode.Str32:
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
	case x <= msgpcode.PosFixedNumHigh:
		c.p++
		return uint64(x), false, true
	case x >= msgpcode.NegFixedNumLow:
		c.p++
		return 0, true, true
	case x >= msgpcode.Uint8 && x <= msgpcode.Uint64:
		c.p++
		return c.be(1 << (x - msgpcode.Uint8)), false, true
	case x >= msgpcode.Int8 && x <= msgpcode.Int64:
		c.p++
		n := 1 << (x - msgpcode.Int8)
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
	case msgpcode.Float:
		c.p++
		return float64(math.Float32frombits(uint32(c.be(4)))), true
	case msgpcode.Double:
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
