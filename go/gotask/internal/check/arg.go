package check

import (
	"encoding/binary"
	"fmt"
	"math"
	"reflect"
	"strings"
	"time"

	"github.com/trio-gotask/trio-gotask/go/gotask/internal/scan"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// checker checks one argument. Rewrites go to out: b[:done] has been copied
// there, edited.
type checker struct {
	b     []byte
	out   []byte
	done  int
	depth int
}

// Arg checks data, one msgpack object, for decoding into t, and returns
// the bytes for the library to decode: data itself, or an edited copy.
func Arg(data []byte, t reflect.Type) ([]byte, error) {
	c := checker{b: data}
	if _, err := c.check(planFor(t), 0); err != nil {
		return nil, err
	}
	if c.out == nil {
		return data, nil
	}
	return append(c.out, data[c.done:]...), nil
}

// rewrite replaces b[pos:end] with the bytes of with.
func (c *checker) rewrite(pos, end int, with []byte) {
	if c.out == nil {
		c.out = make([]byte, 0, len(c.b)+16)
	}
	c.out = append(c.out, c.b[c.done:pos]...)
	c.out = append(c.out, with...)
	c.done = end
}

// zeroTimestamp is time.Time{} as a 12-byte timestamp: the library panics
// decoding nil into a time.Time, so nil is rewritten into this.
var zeroTimestamp = func() []byte {
	// ext 8 of 12 bytes and type -1 (0xff), then 0 nanoseconds and the seconds.
	b := []byte{msgpcode.Ext8, 12, 0xff, 0, 0, 0, 0}
	return binary.BigEndian.AppendUint64(b, uint64(time.Time{}.Unix()))
}()

// enter notes one more level of nesting. The checker recurses once per
// level, plus once per pointer between levels (a fixed number per type), so
// this bound is its recursion's. It is the frame decoder's (skipObject): as
// many nested arrays and maps as scan.MaxNesting, and an empty one inside.
func (c *checker) enter() *pathError {
	if c.depth++; c.depth > scan.MaxNesting+1 {
		return refuse("arrays and maps nest deeper than %d levels", scan.MaxNesting)
	}
	return nil
}

// check checks the object at b[pos:] for decoding into p's type and returns
// the offset just past it.
func (c *checker) check(p *plan, pos int) (int, *pathError) {
	b := c.b
	var h scan.Head
	if !h.Read(b, pos) {
		return 0, malformed()
	}
	if h.Kind == scan.Nil {
		switch p.op {
		case opUnsupported:
			return 0, refuse("%s", p.why)
		case opTime:
			c.rewrite(pos, pos+1, zeroTimestamp)
		}
		return pos + 1, nil // the zero value
	}
	switch p.op {
	case opOpaque:
		end, err := scan.Skip(b, pos)
		if err != nil {
			return 0, malformed()
		}
		return end, nil
	case opUnsupported:
		return 0, refuse("%s", p.why)
	case opAny:
		return walkValue(b, pos, argRules, p.name)
	case opIface:
		return c.iface(p, pos, &h)
	case opPtr:
		return c.check(p.elem, pos)
	case opBool:
		if h.Kind == scan.Bool {
			return pos + 1, nil
		}
	case opInt:
		if h.Kind != scan.Int {
			break
		}
		if h.Neg && h.Int() < p.lo || !h.Neg && h.Uint() > p.hi {
			return 0, refuse("expected an integer from %d to %d for %s, got %s", p.lo, p.hi, p.name, describe(b, pos, &h))
		}
		return h.End(pos), nil
	case opFloat32:
		switch h.Kind {
		case scan.Float32:
			return h.End(pos), nil
		case scan.Float64:
			f := float32(h.Float())
			if math.IsInf(float64(f), 0) && !math.IsInf(h.Float(), 0) {
				return 0, refuse("expected a number from %g to %g for %s, got %s", -math.MaxFloat32, math.MaxFloat32, p.name, describe(b, pos, &h))
			}
			c.rewriteFloat32(pos, h.End(pos), f) // the library refuses a float 64 here
			return h.End(pos), nil
		case scan.Int:
			if !h.Neg && h.Uint() > math.MaxInt64 {
				c.rewriteFloat32(pos, h.End(pos), float32(h.Uint())) // the library would read it as negative
			}
			return h.End(pos), nil
		}
	case opFloat64:
		switch h.Kind {
		case scan.Float32, scan.Float64:
			return h.End(pos), nil
		case scan.Int:
			if !h.Neg && h.Uint() > math.MaxInt64 {
				var w [9]byte
				w[0] = msgpcode.Double
				binary.BigEndian.PutUint64(w[1:], math.Float64bits(float64(h.Uint())))
				c.rewrite(pos, h.End(pos), w[:]) // the library would read it as negative
			}
			return h.End(pos), nil
		}
	case opString:
		if h.Kind == scan.Str {
			return h.End(pos), nil
		}
	case opBytes:
		if h.Kind == scan.Bin {
			return h.End(pos), nil
		}
	case opByteArray:
		if h.Kind == scan.Bin && h.N == p.n {
			return h.End(pos), nil
		}
	case opTime:
		if h.Kind == scan.Ext && h.Ext == timestampExt {
			if _, _, ok := timestamp(h.Data(b, pos)); !ok {
				return 0, refuse("expected a valid timestamp for %s, got %s", p.name, describe(b, pos, &h))
			}
			return h.End(pos), nil
		}
	case opSlice:
		if h.Kind == scan.Array {
			return c.list(p.elem, pos, &h)
		}
	case opArray:
		if h.Kind == scan.Array && h.N == p.n {
			return c.list(p.elem, pos, &h)
		}
	case opMap:
		if h.Kind == scan.Map {
			return c.mapEntries(p, pos, &h)
		}
	case opStruct:
		switch {
		case p.fields == nil && (h.Kind == scan.Map || h.Kind == scan.Array):
			return 0, refuse("%s", p.why)
		case h.Kind == scan.Map:
			return c.structMap(p, pos, &h)
		case h.Kind == scan.Array && (h.N == 0 || h.N == len(p.fields.list)):
			return c.structList(p, pos, &h)
		}
	}
	return 0, refuse("expected %s for %s, got %s", expected(p, &h), p.name, describe(b, pos, &h))
}

// expected says what a value of p's type is sent as.
func expected(p *plan, h *scan.Head) string {
	switch p.op {
	case opBool:
		return "a bool"
	case opInt:
		return "an integer"
	case opFloat32, opFloat64:
		return "a number"
	case opString:
		return "a string"
	case opBytes:
		return "bytes"
	case opByteArray:
		return plural(p.n, "byte")
	case opSlice:
		return "a list"
	case opArray:
		return "a list of " + plural(p.n, "item")
	case opMap:
		return "a map"
	case opStruct:
		if h.Kind == scan.Array {
			return "a map, or a list of " + plural(len(p.fields.list), "item") + ","
		}
		return "a map"
	case opTime:
		return "a timestamp"
	}
	return "something else"
}

func (c *checker) rewriteFloat32(pos, end int, f float32) {
	var w [5]byte
	w[0] = msgpcode.Float
	binary.BigEndian.PutUint32(w[1:], math.Float32bits(f))
	c.rewrite(pos, end, w[:])
}

// list checks the items of an array for a slice or an array of elem.
func (c *checker) list(elem *plan, pos int, h *scan.Head) (int, *pathError) {
	if err := c.enter(); err != nil {
		return 0, err
	}
	pos += h.Size
	for i := 0; i < h.N; i++ {
		end, err := c.check(elem, pos)
		if err != nil {
			return 0, err.in(indexSegment(i))
		}
		pos = end
	}
	c.depth--
	return pos, nil
}

func (c *checker) mapEntries(p *plan, pos int, h *scan.Head) (int, *pathError) {
	if err := c.enter(); err != nil {
		return 0, err
	}
	pos += h.Size
	for i := 0; i < h.N; i++ {
		keyPos := pos
		if p.key.op == opAny { // the library would panic storing the key
			if kh, ok := scan.ReadHead(c.b, pos); ok && (kh.Kind == scan.Array || kh.Kind == scan.Map || kh.Kind == scan.Bin) {
				return 0, refuse("expected a map key Go can hash for %s, got %s", p.key.name, describe(c.b, pos, &kh))
			}
		}
		end, err := c.check(p.key, pos)
		if err != nil {
			return 0, &pathError{msg: "map key: " + err.Error()}
		}
		if pos, err = c.check(p.elem, end); err != nil {
			return 0, err.in(keySegment(c.b, keyPos))
		}
	}
	c.depth--
	return pos, nil
}

// structMap checks a map for a struct: each key that names a field gets the
// field's rules; the others are skipped, unless none of them names a field.
func (c *checker) structMap(p *plan, pos int, h *scan.Head) (int, *pathError) {
	if err := c.enter(); err != nil {
		return 0, err
	}
	b, start := c.b, pos
	pos += h.Size
	matched := false
	for i := 0; i < h.N; i++ {
		var kh scan.Head
		if !kh.Read(b, pos) {
			return 0, malformed()
		}
		var name []byte // nil is the name "" to the library
		switch kh.Kind {
		case scan.Str:
			name = kh.Data(b, pos)
		case scan.Nil:
		default:
			return 0, refuse("expected a string for a field name of %s, got %s", p.name, describe(b, pos, &kh))
		}
		pos = kh.End(pos)
		f := p.fields.byName[string(name)]
		if f == nil {
			end, err := scan.Skip(b, pos)
			if err != nil {
				return 0, malformed()
			}
			pos = end
			continue
		}
		matched = true
		end, err := c.check(f, pos)
		if err != nil {
			return 0, err.in(nameSegment(string(name)))
		}
		pos = end
	}
	if h.N > 0 && !matched {
		return 0, noFieldMatched(p, b, start, h)
	}
	c.depth--
	return pos, nil
}

// structList checks an array for a struct: the library fills the fields in
// order from a list of exactly as many items, and leaves the zero value for
// an empty one.
func (c *checker) structList(p *plan, pos int, h *scan.Head) (int, *pathError) {
	if err := c.enter(); err != nil {
		return 0, err
	}
	pos += h.Size
	for i := 0; i < h.N; i++ {
		end, err := c.check(p.fields.list[i], pos)
		if err != nil {
			return 0, err.in(indexSegment(i))
		}
		pos = end
	}
	c.depth--
	return pos, nil
}

// noFieldMatched is the error for a map of which no key names a field of the
// struct: like encoding/gob, a value of another type sent by mistake is
// refused rather than decoded as the zero value.
func noFieldMatched(p *plan, b []byte, pos int, h *scan.Head) *pathError {
	const most = 8
	var keys []string
	pos += h.Size
	for i := 0; i < h.N && i < most; i++ {
		kh, _ := scan.ReadHead(b, pos)
		keys = append(keys, fieldName(string(kh.Data(b, pos))))
		pos, _ = scan.Skip(b, kh.End(pos))
	}
	if h.N > most {
		keys = append(keys, "...")
	}
	fields := make([]string, len(p.fields.names))
	for i, n := range p.fields.names {
		fields[i] = fieldName(n)
	}
	list := strings.Join(fields, ", ")
	if list == "" {
		list = "none"
	}
	word := "keys"
	if h.N == 1 {
		word = "key"
	}
	return refuse("cannot use a map with %s %s as type %s: none of them is a field of it (fields: %s)", word, strings.Join(keys, ", "), p.name, list)
}

// fieldName shows a field name or map key: as it is if it reads as an
// identifier, quoted otherwise.
func fieldName(s string) string {
	if isIdent(s) {
		return s
	}
	return fmt.Sprintf("%q", s)
}

// iface checks a value for an interface type with methods: the library
// decodes it as for any and stores it only if that implements the interface
// (or, for error, makes an error of a string); otherwise it would panic.
func (c *checker) iface(p *plan, pos int, h *scan.Head) (int, *pathError) {
	var dyn reflect.Type
	switch h.Kind {
	case scan.Bool:
		dyn = reflect.TypeOf(false)
	case scan.Int:
		dyn = intType(h.Code)
	case scan.Float32:
		dyn = reflect.TypeOf(float32(0))
	case scan.Float64:
		dyn = reflect.TypeOf(float64(0))
	case scan.Str:
		if p.t == errorType {
			return h.End(pos), nil
		}
		dyn = reflect.TypeOf("")
	case scan.Bin:
		dyn = reflect.TypeOf([]byte(nil))
	case scan.Array:
		dyn = reflect.TypeOf([]any(nil))
	case scan.Map:
		dyn = reflect.TypeOf(map[string]any(nil))
	case scan.Ext:
		if h.Ext != -1 { // another extension: the library decides
			return h.End(pos), nil
		}
		if _, _, ok := timestamp(h.Data(c.b, pos)); !ok {
			return 0, refuse("expected a valid timestamp for %s, got %s", p.name, describe(c.b, pos, h))
		}
		dyn = timeType
	}
	if dyn.Implements(p.t) {
		return h.End(pos), nil
	}
	return 0, refuse("expected a value implementing %s, got %s (decoded as %s, which does not)", p.name, describe(c.b, pos, h), TypeName(dyn))
}

// intType is the Go type the library decodes an integer into for any.
func intType(code byte) reflect.Type {
	switch code {
	case msgpcode.Uint8:
		return reflect.TypeOf(uint8(0))
	case msgpcode.Uint16:
		return reflect.TypeOf(uint16(0))
	case msgpcode.Uint32:
		return reflect.TypeOf(uint32(0))
	case msgpcode.Uint64:
		return reflect.TypeOf(uint64(0))
	case msgpcode.Int16:
		return reflect.TypeOf(int16(0))
	case msgpcode.Int32:
		return reflect.TypeOf(int32(0))
	case msgpcode.Int64:
		return reflect.TypeOf(int64(0))
	}
	return reflect.TypeOf(int8(0)) // fixint, int 8
}
