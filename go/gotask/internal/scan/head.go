// Package scan reads msgpack bytes without decoding them into Go values: the
// header of one object (ReadHead), the end of one object (Skip), and the few
// envelope fields a message needs (Cursor). Everything here is built on
// ReadHead, the one place that knows what each first byte means.
package scan

import "math"

// Kind is the kind of one msgpack object.
type Kind uint8

// The kinds of msgpack objects. Invalid is the reserved byte 0xc1.
const (
	Invalid Kind = iota
	Nil
	Bool
	Int
	Float32
	Float64
	Str
	Bin
	Array
	Map
	Ext
)

// Head is the header of one msgpack object: its kind and what its first bytes
// say. The data of a str, bin or ext follows the header; the items of an array
// or a map follow it too, as objects of their own.
type Head struct {
	Kind Kind
	Code byte // the first byte
	Neg  bool // int: negative
	Ext  int8 // ext: its type
	Size int  // bytes of the header: the code, a length, an ext type, a scalar's value
	N    int  // str, bin, ext: bytes of data; array: items; map: entries
	// V is a scalar's value: an int's (two's complement if Neg), 1 for true,
	// a float's bits as a float64. Int, Uint and Float read it.
	V uint64
}

// Int is the value of an int.
func (h *Head) Int() int64 { return int64(h.V) }

// Uint is the value of an int that is not negative.
func (h *Head) Uint() uint64 { return h.V }

// Float is the value of a float.
func (h *Head) Float() float64 { return math.Float64frombits(h.V) }

// End is the offset just past the object at pos, if it is not an array or a map.
func (h *Head) End(pos int) int { return pos + h.Size + h.N }

// Data is the data of the str, bin or ext at b[pos:].
func (h *Head) Data(b []byte, pos int) []byte { return b[pos+h.Size : h.End(pos)] }

// rule is what a first byte says about the bytes after it.
type rule struct {
	kind    Kind
	mask    uint8 // fix formats: the bits of the code that hold N
	lenSize uint8 // bytes of a length field after the code
	value   uint8 // bytes after the code and any length: a scalar's value, or an ext's type
	data    uint8 // fixext: bytes of data
	size    uint8 // bytes of the header: 1 + lenSize + value
	n       uint8 // with no length field: N, from the code's bits or a fixext's size
	need    uint8 // with no length field: the bytes of the object, or of an array's or map's header
	hasData uint8 // 1 for str, bin and ext, whose N bytes of data follow the header
	signed  bool  // int: the value is two's complement
}

// rules holds the rule of every first byte. A table rather than a switch:
// msgpcode's codes are variables, which a switch compares one by one
// (BenchmarkSkip).
var rules = func() (r [256]rule) {
	set := func(x rule, lo, hi int) {
		for c := lo; c <= hi; c++ {
			r[c] = x
		}
	}
	set(rule{kind: Int}, 0x00, 0x7f)
	set(rule{kind: Map, mask: 0x0f}, 0x80, 0x8f)
	set(rule{kind: Array, mask: 0x0f}, 0x90, 0x9f)
	set(rule{kind: Str, mask: 0x1f}, 0xa0, 0xbf)
	set(rule{kind: Nil}, 0xc0, 0xc0)
	// 0xc1 is reserved: Invalid.
	set(rule{kind: Bool}, 0xc2, 0xc3)
	for i, size := range []uint8{1, 2, 4} {
		c := i
		set(rule{kind: Bin, lenSize: size}, 0xc4+c, 0xc4+c)
		set(rule{kind: Ext, lenSize: size, value: 1}, 0xc7+c, 0xc7+c)
		set(rule{kind: Str, lenSize: size}, 0xd9+c, 0xd9+c)
	}
	set(rule{kind: Float32, value: 4}, 0xca, 0xca)
	set(rule{kind: Float64, value: 8}, 0xcb, 0xcb)
	for i, size := range []uint8{1, 2, 4, 8} {
		set(rule{kind: Int, value: size}, 0xcc+i, 0xcc+i)
		set(rule{kind: Int, value: size, signed: true}, 0xd0+i, 0xd0+i)
	}
	for i, size := range []uint8{1, 2, 4, 8, 16} {
		set(rule{kind: Ext, value: 1, data: size}, 0xd4+i, 0xd4+i)
	}
	set(rule{kind: Array, lenSize: 2}, 0xdc, 0xdc)
	set(rule{kind: Array, lenSize: 4}, 0xdd, 0xdd)
	set(rule{kind: Map, lenSize: 2}, 0xde, 0xde)
	set(rule{kind: Map, lenSize: 4}, 0xdf, 0xdf)
	set(rule{kind: Int, signed: true}, 0xe0, 0xff)
	for c := range r {
		x := &r[c]
		x.size = 1 + x.lenSize + x.value
		if x.kind == Str || x.kind == Bin || x.kind == Ext {
			x.hasData = 1
		}
		x.n = uint8(c)&x.mask + x.data
		x.need = x.size + x.n*x.hasData
	}
	return r
}()

// span reads what every header says: the object's kind, the bytes of its
// header, and its N. It reports false when b ends inside the header (or inside
// a str, bin or ext's data) or at the reserved byte. It returns no Head: a
// Head's copy would cost Skip more than this does (BenchmarkSkip).
func span(b []byte, pos int) (k Kind, size, n int, ok bool) {
	if pos >= len(b) {
		return
	}
	c := b[pos]
	r := &rules[c]
	if r.lenSize > 0 {
		return spanLength(b, pos, r)
	}
	size, n, ok = r.short(len(b) - pos)
	return r.kind, size, n, ok
}

// short is span for an object whose header has no length field, with room
// bytes from its first byte to the end: fixints, fixstrs,
// fixmaps, fixarrays, nil, bools, numbers and fixexts, most objects. Small
// enough to inline, it lets the loops of Skip and ReadHead make no call for them.
func (r *rule) short(room int) (size, n int, ok bool) {
	return int(r.size), int(r.n), r.kind != Invalid && int(r.need) <= room
}

// spanLength is span for an object with a length field.
func spanLength(b []byte, pos int, r *rule) (k Kind, size, n int, ok bool) {
	size = int(r.size)
	if size > len(b)-pos {
		return
	}
	n = int(bigEndian(b[pos+1 : pos+1+int(r.lenSize)]))
	if uint64(n)*uint64(r.hasData) > uint64(len(b)-pos-size) {
		return
	}
	return r.kind, size, n, true
}

// ReadHead reads the header of the object at b[pos:]. It reports false when b
// ends inside it (or inside a str, bin or ext's data) or at the reserved byte.
// It does not look at the items of an array or a map.
func ReadHead(b []byte, pos int) (h Head, ok bool) {
	ok = h.Read(b, pos)
	return h, ok
}

// Read is ReadHead into h, for a loop that reads many: it writes h in place
// rather than returning a copy.
func (h *Head) Read(b []byte, pos int) (ok bool) {
	*h = Head{}
	if pos >= len(b) {
		return false
	}
	c := b[pos]
	r := &rules[c]
	var size, n int
	if r.lenSize == 0 {
		size, n, ok = r.short(len(b) - pos)
	} else {
		_, size, n, ok = spanLength(b, pos, r)
	}
	if !ok {
		return false
	}
	h.Kind, h.Code, h.Size, h.N = r.kind, c, size, n
	if r.value == 0 && r.kind != Int && r.kind != Bool {
		return true // nil, str, bin, array, map: the header says it all
	}
	value := b[pos+size-int(r.value) : pos+size]
	switch r.kind {
	case Ext:
		h.Ext = int8(value[0])
	case Int:
		switch {
		case len(value) == 0: // fixint
			h.V = uint64(int64(int8(c)))
		case r.signed:
			shift := 64 - 8*uint(len(value))
			h.V = uint64(int64(bigEndian(value)<<shift) >> shift)
		default:
			h.V = bigEndian(value)
			return true
		}
		h.Neg = int64(h.V) < 0
	case Bool:
		h.V = uint64(c & 1)
	case Float32:
		h.V = math.Float64bits(float64(math.Float32frombits(uint32(bigEndian(value)))))
	case Float64:
		h.V = bigEndian(value)
	}
	return true
}

// bigEndian reads an unsigned integer from all of b (at most 8 bytes).
func bigEndian(b []byte) uint64 {
	var v uint64
	for _, x := range b {
		v = v<<8 | uint64(x)
	}
	return v
}
