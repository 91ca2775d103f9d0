package gotask

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// vkind is the kind of one msgpack object, as the checkers see it.
type vkind uint8

const (
	vNil vkind = iota
	vBool
	vInt
	vFloat32
	vFloat64
	vStr
	vBin
	vArray
	vMap
	vExt
)

// head is the header of one msgpack object: its kind and what its first
// bytes say. Strings, bins and ext data follow the header; the items of an
// array or a map follow it too, as objects of their own.
type head struct {
	kind vkind
	code byte   // the first byte
	size int    // bytes of the header: code, length, ext type, and a scalar's value
	n    int    // str, bin, ext: bytes of data; array: items; map: entries
	neg  bool   // int: negative, with the value in i; otherwise the value is in u
	u    uint64 // int (not negative), bool (1 for true)
	i    int64  // int (negative)
	f    float64
	ext  int8
}

// end is the offset just past an object that is not an array or a map.
func (h *head) end(pos int) int { return pos + h.size + h.n }

// readHead reads the header of the object at b[pos:]. It reports false when b
// ends inside it (or inside a str, bin or ext's data) or at the reserved byte.
func readHead(b []byte, pos int) (h head, ok bool) {
	if pos >= len(b) {
		return h, false
	}
	c := b[pos]
	h.code = c
	rest := b[pos+1:]
	be := func(n int) (uint64, bool) { return bigEndian(rest, n) }
	var v uint64
	switch {
	case c <= msgpcode.PosFixedNumHigh:
		h.kind, h.size, h.u = vInt, 1, uint64(c)
		return h, true
	case c >= msgpcode.NegFixedNumLow:
		h.kind, h.size, h.neg, h.i = vInt, 1, true, int64(int8(c))
		return h, true
	case c <= msgpcode.FixedMapHigh:
		h.kind, h.size, h.n = vMap, 1, int(c&msgpcode.FixedMapMask)
		return h, true
	case c <= msgpcode.FixedArrayHigh:
		h.kind, h.size, h.n = vArray, 1, int(c&msgpcode.FixedArrayMask)
		return h, true
	case c <= msgpcode.FixedStrHigh:
		h.kind, h.size, h.n = vStr, 1, int(c&msgpcode.FixedStrMask)
	case c == msgpcode.Nil:
		h.kind, h.size = vNil, 1
		return h, true
	case c == msgpcode.False, c == msgpcode.True:
		h.kind, h.size, h.u = vBool, 1, uint64(c&1)
		return h, true
	case c >= msgpcode.Bin8 && c <= msgpcode.Bin32:
		sz := 1 << (c - msgpcode.Bin8)
		if v, ok = be(sz); !ok {
			return h, false
		}
		h.kind, h.size, h.n = vBin, 1+sz, int(v)
	case c >= msgpcode.Ext8 && c <= msgpcode.Ext32:
		sz := 1 << (c - msgpcode.Ext8)
		if v, ok = be(sz); !ok || len(rest) < sz+1 {
			return h, false
		}
		h.kind, h.size, h.n, h.ext = vExt, 2+sz, int(v), int8(rest[sz])
	case c == msgpcode.Float:
		if v, ok = be(4); !ok {
			return h, false
		}
		h.kind, h.size, h.f = vFloat32, 5, float64(math.Float32frombits(uint32(v)))
		return h, true
	case c == msgpcode.Double:
		if v, ok = be(8); !ok {
			return h, false
		}
		h.kind, h.size, h.f = vFloat64, 9, math.Float64frombits(v)
		return h, true
	case c >= msgpcode.Uint8 && c <= msgpcode.Uint64:
		sz := 1 << (c - msgpcode.Uint8)
		if v, ok = be(sz); !ok {
			return h, false
		}
		h.kind, h.size, h.u = vInt, 1+sz, v
		return h, true
	case c >= msgpcode.Int8 && c <= msgpcode.Int64:
		sz := 1 << (c - msgpcode.Int8)
		if v, ok = be(sz); !ok {
			return h, false
		}
		shift := 64 - 8*uint(sz)
		s := int64(v<<shift) >> shift
		h.kind, h.size = vInt, 1+sz
		if s < 0 {
			h.neg, h.i = true, s
		} else {
			h.u = uint64(s)
		}
		return h, true
	case c >= msgpcode.FixExt1 && c <= msgpcode.FixExt16:
		if len(rest) < 1 {
			return h, false
		}
		h.kind, h.size, h.n, h.ext = vExt, 2, 1<<(c-msgpcode.FixExt1), int8(rest[0])
	case c >= msgpcode.Str8 && c <= msgpcode.Str32:
		sz := 1 << (c - msgpcode.Str8)
		if v, ok = be(sz); !ok {
			return h, false
		}
		h.kind, h.size, h.n = vStr, 1+sz, int(v)
	case c == msgpcode.Array16, c == msgpcode.Array32:
		sz := 2 << (c - msgpcode.Array16)
		if v, ok = be(sz); !ok {
			return h, false
		}
		h.kind, h.size, h.n = vArray, 1+sz, int(v)
		return h, true
	case c == msgpcode.Map16, c == msgpcode.Map32:
		sz := 2 << (c - msgpcode.Map16)
		if v, ok = be(sz); !ok {
			return h, false
		}
		h.kind, h.size, h.n = vMap, 1+sz, int(v)
		return h, true
	default: // neverUsed
		return h, false
	}
	// str, bin, ext: their data must be there too.
	if uint64(h.n) > uint64(len(b)-pos-h.size) {
		return h, false
	}
	return h, true
}

// bigEndian reads an unsigned integer from the first n bytes of b, if b has them.
func bigEndian(b []byte, n int) (uint64, bool) {
	if len(b) < n {
		return 0, false
	}
	var v uint64
	for _, x := range b[:n] {
		v = v<<8 | uint64(x)
	}
	return v, true
}

// Timestamps a Python datetime can hold: years 1 to 9999, UTC.
const (
	minPySeconds = -62135596800 // 0001-01-01T00:00:00Z
	maxPySeconds = 253402300799 // 9999-12-31T23:59:59Z
)

// timestampExt is the extension type of a msgpack timestamp.
const timestampExt = -1

// timestamp decodes the data of a timestamp extension. It reports
// false for a length other than 4, 8 or 12 bytes, or nanoseconds past 10^9-1.
func timestamp(data []byte) (sec int64, nsec uint32, ok bool) {
	switch len(data) {
	case 4:
		return int64(binary.BigEndian.Uint32(data)), 0, true
	case 8:
		v := binary.BigEndian.Uint64(data)
		sec, nsec = int64(v&(1<<34-1)), uint32(v>>34)
	case 12:
		nsec, sec = binary.BigEndian.Uint32(data), int64(binary.BigEndian.Uint64(data[4:]))
	default:
		return 0, 0, false
	}
	return sec, nsec, nsec < 1e9
}

// describe says what the object at b[pos:] with header h is, for a message:
// its msgpack type and, where short, its value.
func describe(b []byte, pos int, h *head) string {
	switch h.kind {
	case vNil:
		return "nil"
	case vBool:
		return fmt.Sprintf("bool %t", h.u == 1)
	case vInt:
		if h.neg {
			return "int " + strconv.FormatInt(h.i, 10)
		}
		return "int " + strconv.FormatUint(h.u, 10)
	case vFloat32:
		return "float " + strconv.FormatFloat(h.f, 'g', -1, 32)
	case vFloat64:
		return "float " + strconv.FormatFloat(h.f, 'g', -1, 64)
	case vStr:
		if h.n <= 32 {
			return "str " + strconv.Quote(string(b[pos+h.size:h.end(pos)]))
		}
		return fmt.Sprintf("str (%d bytes)", h.n)
	case vBin:
		return fmt.Sprintf("bin (%s)", plural(h.n, "byte"))
	case vArray:
		return fmt.Sprintf("array (%s)", plural(h.n, "item"))
	case vMap:
		return fmt.Sprintf("map (%s)", plural(h.n, "entry"))
	}
	data := b[pos+h.size : h.end(pos)]
	if h.ext == timestampExt {
		if sec, nsec, ok := timestamp(data); ok {
			return "timestamp " + time.Unix(sec, int64(nsec)).UTC().Format(time.RFC3339Nano)
		}
		return fmt.Sprintf("malformed timestamp (%s)", plural(len(data), "byte"))
	}
	return fmt.Sprintf("ext %d (%s)", h.ext, plural(len(data), "byte"))
}

// withArticle puts "a" or "an" before a description.
func withArticle(s string) string {
	if s != "" && strings.ContainsRune("aeiou", rune(s[0])) {
		return "an " + s
	}
	return "a " + s
}

func plural(n int, what string) string {
	switch {
	case n == 1:
		return "1 " + what
	case what == "entry":
		return strconv.Itoa(n) + " entries"
	}
	return strconv.Itoa(n) + " " + what + "s"
}

// keySegment is the path segment of the value under the map key at b[pos:]:
// .name for a key that reads as an identifier, ["a b"] for another string,
// [5] for an integer, and the key's description in brackets otherwise.
func keySegment(b []byte, pos int) string {
	h, ok := readHead(b, pos)
	if !ok {
		return "[?]"
	}
	switch h.kind {
	case vStr:
		return nameSegment(string(b[pos+h.size : h.end(pos)]))
	case vInt:
		if h.neg {
			return "[" + strconv.FormatInt(h.i, 10) + "]"
		}
		return "[" + strconv.FormatUint(h.u, 10) + "]"
	}
	return "[" + describe(b, pos, &h) + "]"
}

// nameSegment is the path segment of the value under the string key name.
func nameSegment(name string) string {
	if isIdent(name) {
		return "." + name
	}
	return "[" + strconv.Quote(name) + "]"
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// pathError is a value the checkers refuse: what is wrong, and where, as a
// path from the top of the value such as [3].when or tags[2].
type pathError struct {
	rev []string // the path's segments, innermost first
	msg string
}

func (e *pathError) Error() string {
	if len(e.rev) == 0 {
		return e.msg
	}
	const ends = 16 // a longer path shows this many segments at each end
	var buf []byte
	for i := len(e.rev) - 1; i >= 0; i-- {
		s := e.rev[i]
		if len(buf) == 0 && s[0] == '.' {
			s = s[1:]
		}
		if i == len(e.rev)-1-ends && i >= ends {
			buf = append(buf, "..."...)
			i = ends
			continue
		}
		buf = append(buf, s...)
	}
	buf = append(buf, ": "...)
	buf = append(buf, e.msg...)
	return string(buf)
}

// in adds the segment of the value the error is in, one level up.
func (e *pathError) in(seg string) *pathError {
	e.rev = append(e.rev, seg)
	return e
}

func indexSegment(i int) string { return "[" + strconv.Itoa(i) + "]" }

func refuse(format string, args ...any) *pathError {
	return &pathError{msg: fmt.Sprintf(format, args...)}
}

func malformed() *pathError { return &pathError{msg: "malformed msgpack"} }
