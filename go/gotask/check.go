package gotask

import (
	"encoding"
	"encoding/binary"
	"fmt"
	"math"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
	"github.com/vmihailenco/tagparser/v2"
)

// The argument checker walks the msgpack bytes of an argument alongside the Go
// type they are for, before the msgpack library decodes them, and refuses with
// a readable message what the protocol refuses (protocol.md section 3):
// integers that do not fit, floats into integers, str into []byte and bin into
// string, maps none of whose keys is a field of the struct, lists of the wrong
// length for an array, anything but a timestamp for a time.Time. Where the
// library would get an accepted value wrong (refuse a float 64 for a float32,
// read a uint64 above 2^63-1 as negative for a float, panic on nil for a
// time.Time) it rewrites those few bytes, in a copy. Where the type decodes
// itself, it steps aside.
//
// It mirrors the library's own decoders (vmihailenco/msgpack v5.4.1,
// decode_value.go and types.go): what it accepts, the library decodes
// (FuzzCheckThenDecode), and what the library encodes from a Go value, it
// accepts for that type (TestCheckRoundTripsRandomValues).

// planOp is what the checker does with a value of one Go type.
type planOp uint8

const (
	opOpaque      planOp = iota // the type decodes itself: the library decides
	opUnsupported               // the library cannot decode into the type at all: refuse
	opAny                       // an empty interface: anything, with map keys Go can hash
	opIface                     // an interface with methods: what the library decodes must implement it
	opPtr
	opBool
	opInt
	opFloat32
	opFloat64
	opString
	opBytes     // a slice of bytes
	opByteArray // an array of bytes
	opSlice
	opArray
	opMap
	opStruct
	opTime
)

// plan is how the checker treats one Go type.
type plan struct {
	t      reflect.Type
	name   string // t, for messages
	op     planOp
	elem   *plan  // ptr, slice, array: the element; map: the value
	key    *plan  // map
	n      int    // array, byte array: the length
	lo     int64  // int: the least value
	hi     uint64 // int: the greatest value
	fields *structFields
	why    string // unsupported, or a struct without fields: why the library cannot decode it
}

// structFields are the fields of a struct as the library matches them.
type structFields struct {
	byName map[string]*plan // every name a map key may use, aliases and embedded structs' names included
	list   []*plan          // what a struct sent as an array fills, in order
	names  []string         // the names of list
}

var (
	timeType = reflect.TypeOf(time.Time{})
	anyType  = reflect.TypeOf((*any)(nil)).Elem()

	// What the library hands a value to instead of decoding it itself, in its order.
	decoderIfaces = []reflect.Type{
		reflect.TypeOf((*msgpack.CustomDecoder)(nil)).Elem(),
		reflect.TypeOf((*msgpack.Unmarshaler)(nil)).Elem(),
		reflect.TypeOf((*encoding.BinaryUnmarshaler)(nil)).Elem(),
		reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem(),
	}
	encoderIfaces = []reflect.Type{
		reflect.TypeOf((*msgpack.CustomEncoder)(nil)).Elem(),
		reflect.TypeOf((*msgpack.Marshaler)(nil)).Elem(),
		reflect.TypeOf((*encoding.BinaryMarshaler)(nil)).Elem(),
		reflect.TypeOf((*encoding.TextMarshaler)(nil)).Elem(),
	}

	// opaquePlan is for a struct field the library decodes its own way (the intern option).
	opaquePlan = &plan{op: opOpaque, name: "?"}
)

func typeName(t reflect.Type) string {
	if t == anyType {
		return "any"
	}
	return t.String()
}

// implementsAny reports whether t or, for a type that is not a pointer, *t
// implements one of ifaces: the library then uses that method (_getDecoder,
// _getEncoder).
func implementsAny(t reflect.Type, ifaces []reflect.Type) bool {
	for _, i := range ifaces {
		if t.Implements(i) || t.Kind() != reflect.Pointer && reflect.PointerTo(t).Implements(i) {
			return true
		}
	}
	return false
}

// plans caches the plan of every type checked so far.
var plans sync.Map // reflect.Type -> *plan

func planFor(t reflect.Type) *plan {
	if p, ok := plans.Load(t); ok {
		return p.(*plan)
	}
	b := planBuilder{seen: make(map[reflect.Type]*plan)}
	p := b.plan(t)
	for t, q := range b.seen {
		plans.LoadOrStore(t, q)
	}
	return p
}

// planBuilder builds the plans of a type and the types inside it; seen holds
// those begun, so that a recursive type gets a cyclic plan.
type planBuilder struct{ seen map[reflect.Type]*plan }

func (b *planBuilder) plan(t reflect.Type) *plan {
	if p := b.seen[t]; p != nil {
		return p
	}
	if p, ok := plans.Load(t); ok {
		return p.(*plan)
	}
	p := &plan{t: t, name: typeName(t)}
	b.seen[t] = p
	switch {
	case t == timeType: // registered with the library as the timestamp extension
		p.op = opTime
	case t.Kind() == reflect.Pointer && t.Elem() == timeType:
		p.op, p.elem = opPtr, b.plan(timeType)
	case implementsAny(t, decoderIfaces):
		p.op = opOpaque
	default:
		b.byKind(p)
	}
	return p
}

func (b *planBuilder) byKind(p *plan) {
	t := p.t
	switch k := t.Kind(); k {
	case reflect.Bool:
		p.op = opBool
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		bits := t.Bits()
		p.op, p.lo, p.hi = opInt, -1<<(bits-1), 1<<(bits-1)-1
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		p.op, p.hi = opInt, math.MaxUint64>>(64-t.Bits())
	case reflect.Float32:
		p.op = opFloat32
	case reflect.Float64:
		p.op = opFloat64
	case reflect.String:
		p.op = opString
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			p.op = opBytes
		} else {
			p.op, p.elem = opSlice, b.plan(t.Elem())
		}
	case reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			p.op, p.n = opByteArray, t.Len()
		} else {
			p.op, p.elem, p.n = opArray, b.plan(t.Elem()), t.Len()
		}
	case reflect.Map:
		p.op, p.key, p.elem = opMap, b.plan(t.Key()), b.plan(t.Elem())
	case reflect.Struct:
		p.op = opStruct
		b.structFields(p)
	case reflect.Interface:
		if t.NumMethod() == 0 {
			p.op = opAny
		} else {
			p.op = opIface
		}
	case reflect.Pointer:
		p.op, p.elem = opPtr, b.plan(t.Elem())
		// A pointer type that leads back to itself makes the library's
		// getDecoder recurse until the stack overflows, whatever the value.
		for q := p.elem; q != nil && (q.op == opPtr || q.op == opUnsupported); q = q.elem {
			if q == p || q.op == opUnsupported {
				p.op, p.why = opUnsupported, fmt.Sprintf("the msgpack library cannot decode %s: it is a pointer to itself", p.name)
				break
			}
		}
	default: // uintptr, and what Register refuses already
		p.op, p.why = opUnsupported, fmt.Sprintf("the msgpack library cannot decode %s", p.name)
	}
}

func (b *planBuilder) structFields(p *plan) {
	fs, why := libraryFields(p.t, map[reflect.Type]bool{})
	if why != "" {
		p.why = fmt.Sprintf("the msgpack library cannot decode %s: %s", p.name, why)
		return
	}
	sf := &structFields{byName: make(map[string]*plan, len(fs.byName))}
	for name, f := range fs.byName {
		sf.byName[name] = b.fieldPlan(f)
	}
	for _, f := range fs.list {
		sf.list = append(sf.list, b.fieldPlan(f))
		sf.names = append(sf.names, f.name)
	}
	p.fields = sf
}

func (b *planBuilder) fieldPlan(f libField) *plan {
	if f.intern {
		return opaquePlan
	}
	return b.plan(f.typ)
}

// libField is a struct field as the library's getFields (types.go) sees it.
type libField struct {
	name   string
	typ    reflect.Type
	intern bool
}

type libFields struct {
	byName map[string]libField
	list   []libField
}

func (fs *libFields) add(f libField) {
	fs.byName[f.name] = f
	fs.list = append(fs.list, f)
}

// libraryFields computes the fields of struct type t exactly as the library's
// getFields does: msgpack tags, "-", the alias, inline, noinline and intern
// options, embedded structs inlined unless a name clashes or they decode
// themselves. why is set where the library would panic or recurse forever.
func libraryFields(t reflect.Type, busy map[reflect.Type]bool) (fs *libFields, why string) {
	if busy[t] {
		return nil, "it embeds itself"
	}
	busy[t] = true
	defer delete(busy, t)
	fs = &libFields{byName: make(map[string]libField, t.NumField())}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := tagparser.Parse(f.Tag.Get("msgpack"))
		if tag.Name == "-" {
			continue
		}
		if f.PkgPath != "" && !f.Anonymous {
			continue
		}
		field := libField{name: tag.Name, typ: f.Type, intern: tag.HasOption("intern")}
		if field.intern && f.Type.Kind() != reflect.String && f.Type.Kind() != reflect.Interface {
			return nil, fmt.Sprintf("field %s has the intern option but is not a string or an interface", f.Name)
		}
		if field.name == "" {
			field.name = f.Name
		}
		if f.Anonymous && !tag.HasOption("noinline") {
			inline := tag.HasOption("inline")
			if inline {
				if f.Type.Kind() != reflect.Struct {
					return nil, fmt.Sprintf("field %s has the inline option but is not a struct", f.Name)
				}
				sub, why := libraryFields(f.Type, busy)
				if why != "" {
					return nil, why
				}
				for _, sf := range sub.list {
					if _, shadowed := fs.byName[sf.name]; !shadowed {
						fs.add(sf)
					}
				}
			} else if inline, why = inlineEmbedded(fs, f.Type, busy); why != "" {
				return nil, why
			}
			if inline {
				fs.byName[field.name] = field
				continue
			}
		}
		fs.add(field)
		if alias, ok := tag.Options["alias"]; ok {
			fs.byName[alias] = field
		}
	}
	return fs, ""
}

// inlineEmbedded mirrors the library's shouldInline: an embedded struct, or
// pointer to one, that the library encodes and decodes as a plain struct has
// its fields added to fs, unless one of their names is taken already.
func inlineEmbedded(fs *libFields, t reflect.Type, busy map[reflect.Type]bool) (bool, string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t == timeType || implementsAny(t, decoderIfaces) || implementsAny(t, encoderIfaces) {
		return false, ""
	}
	sub, why := libraryFields(t, busy)
	if why != "" {
		return false, why
	}
	for _, sf := range sub.list {
		if _, shadowed := fs.byName[sf.name]; shadowed {
			return false, ""
		}
	}
	for _, sf := range sub.list {
		fs.add(sf)
	}
	return true, ""
}

// checker checks one argument. Rewrites go to out: b[:done] has been copied
// there, edited.
type checker struct {
	b     []byte
	out   []byte
	done  int
	depth int
}

// checkArg checks data, one msgpack object, for decoding into t, and returns
// the bytes for the library to decode: data itself, or an edited copy.
func checkArg(data []byte, t reflect.Type) ([]byte, error) {
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
// many nested arrays and maps as maxNesting, and an empty one inside.
func (c *checker) enter() *pathError {
	if c.depth++; c.depth > maxNesting+1 {
		return refuse("arrays and maps nest deeper than %d levels", maxNesting)
	}
	return nil
}

// check checks the object at b[pos:] for decoding into p's type and returns
// the offset just past it.
func (c *checker) check(p *plan, pos int) (int, *pathError) {
	b := c.b
	h, ok := readHead(b, pos)
	if !ok {
		return 0, malformed()
	}
	if h.kind == vNil {
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
		end, err := skipObject(b, pos)
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
		if h.kind == vBool {
			return pos + 1, nil
		}
	case opInt:
		if h.kind != vInt {
			break
		}
		if h.neg && h.i < p.lo || !h.neg && h.u > p.hi {
			return 0, refuse("expected an integer from %d to %d for %s, got %s", p.lo, p.hi, p.name, describe(b, pos, &h))
		}
		return h.end(pos), nil
	case opFloat32:
		switch h.kind {
		case vFloat32:
			return h.end(pos), nil
		case vFloat64:
			f := float32(h.f)
			if math.IsInf(float64(f), 0) && !math.IsInf(h.f, 0) {
				return 0, refuse("expected a number from %g to %g for %s, got %s", -math.MaxFloat32, math.MaxFloat32, p.name, describe(b, pos, &h))
			}
			c.rewriteFloat32(pos, h.end(pos), f) // the library refuses a float 64 here
			return h.end(pos), nil
		case vInt:
			if !h.neg && h.u > math.MaxInt64 {
				c.rewriteFloat32(pos, h.end(pos), float32(h.u)) // the library would read it as negative
			}
			return h.end(pos), nil
		}
	case opFloat64:
		switch h.kind {
		case vFloat32, vFloat64:
			return h.end(pos), nil
		case vInt:
			if !h.neg && h.u > math.MaxInt64 {
				var w [9]byte
				w[0] = msgpcode.Double
				binary.BigEndian.PutUint64(w[1:], math.Float64bits(float64(h.u)))
				c.rewrite(pos, h.end(pos), w[:]) // the library would read it as negative
			}
			return h.end(pos), nil
		}
	case opString:
		if h.kind == vStr {
			return h.end(pos), nil
		}
	case opBytes:
		if h.kind == vBin {
			return h.end(pos), nil
		}
	case opByteArray:
		if h.kind == vBin && h.n == p.n {
			return h.end(pos), nil
		}
	case opTime:
		if h.kind == vExt && h.ext == timestampExt {
			if _, _, ok := timestamp(b[pos+h.size : h.end(pos)]); !ok {
				return 0, refuse("expected a valid timestamp for %s, got %s", p.name, describe(b, pos, &h))
			}
			return h.end(pos), nil
		}
	case opSlice:
		if h.kind == vArray {
			return c.list(p.elem, pos, &h)
		}
	case opArray:
		if h.kind == vArray && h.n == p.n {
			return c.list(p.elem, pos, &h)
		}
	case opMap:
		if h.kind == vMap {
			return c.mapEntries(p, pos, &h)
		}
	case opStruct:
		switch {
		case p.fields == nil && (h.kind == vMap || h.kind == vArray):
			return 0, refuse("%s", p.why)
		case h.kind == vMap:
			return c.structMap(p, pos, &h)
		case h.kind == vArray && (h.n == 0 || h.n == len(p.fields.list)):
			return c.structList(p, pos, &h)
		}
	}
	return 0, refuse("expected %s for %s, got %s", expected(p, &h), p.name, describe(b, pos, &h))
}

// expected says what a value of p's type is sent as.
func expected(p *plan, h *head) string {
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
		if h.kind == vArray {
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
func (c *checker) list(elem *plan, pos int, h *head) (int, *pathError) {
	if err := c.enter(); err != nil {
		return 0, err
	}
	pos += h.size
	for i := 0; i < h.n; i++ {
		end, err := c.check(elem, pos)
		if err != nil {
			return 0, err.in(indexSegment(i))
		}
		pos = end
	}
	c.depth--
	return pos, nil
}

func (c *checker) mapEntries(p *plan, pos int, h *head) (int, *pathError) {
	if err := c.enter(); err != nil {
		return 0, err
	}
	pos += h.size
	for i := 0; i < h.n; i++ {
		keyPos := pos
		if p.key.op == opAny { // the library would panic storing the key
			if kh, ok := readHead(c.b, pos); ok && (kh.kind == vArray || kh.kind == vMap || kh.kind == vBin) {
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
func (c *checker) structMap(p *plan, pos int, h *head) (int, *pathError) {
	if err := c.enter(); err != nil {
		return 0, err
	}
	b, start := c.b, pos
	pos += h.size
	matched := false
	for i := 0; i < h.n; i++ {
		kh, ok := readHead(b, pos)
		if !ok {
			return 0, malformed()
		}
		var name []byte // nil is the name "" to the library
		switch kh.kind {
		case vStr:
			name = b[pos+kh.size : kh.end(pos)]
		case vNil:
		default:
			return 0, refuse("expected a string for a field name of %s, got %s", p.name, describe(b, pos, &kh))
		}
		pos = kh.end(pos)
		f := p.fields.byName[string(name)]
		if f == nil {
			end, err := skipObject(b, pos)
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
	if h.n > 0 && !matched {
		return 0, noFieldMatched(p, b, start, h)
	}
	c.depth--
	return pos, nil
}

// structList checks an array for a struct: the library fills the fields in
// order from a list of exactly as many items, and leaves the zero value for
// an empty one.
func (c *checker) structList(p *plan, pos int, h *head) (int, *pathError) {
	if err := c.enter(); err != nil {
		return 0, err
	}
	pos += h.size
	for i := 0; i < h.n; i++ {
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
func noFieldMatched(p *plan, b []byte, pos int, h *head) *pathError {
	const most = 8
	var keys []string
	pos += h.size
	for i := 0; i < h.n && i < most; i++ {
		kh, _ := readHead(b, pos)
		keys = append(keys, fieldName(string(b[pos+kh.size:kh.end(pos)])))
		pos, _ = skipObject(b, kh.end(pos))
	}
	if h.n > most {
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
	if h.n == 1 {
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
func (c *checker) iface(p *plan, pos int, h *head) (int, *pathError) {
	var dyn reflect.Type
	switch h.kind {
	case vBool:
		dyn = reflect.TypeOf(false)
	case vInt:
		dyn = intType(h.code)
	case vFloat32:
		dyn = reflect.TypeOf(float32(0))
	case vFloat64:
		dyn = reflect.TypeOf(float64(0))
	case vStr:
		if p.t == typeOfError {
			return h.end(pos), nil
		}
		dyn = reflect.TypeOf("")
	case vBin:
		dyn = reflect.TypeOf([]byte(nil))
	case vArray:
		dyn = reflect.TypeOf([]any(nil))
	case vMap:
		dyn = reflect.TypeOf(map[string]any(nil))
	case vExt:
		if h.ext != -1 { // another extension: the library decides
			return h.end(pos), nil
		}
		if _, _, ok := timestamp(c.b[pos+h.size : h.end(pos)]); !ok {
			return 0, refuse("expected a valid timestamp for %s, got %s", p.name, describe(c.b, pos, h))
		}
		dyn = timeType
	}
	if dyn.Implements(p.t) {
		return h.end(pos), nil
	}
	return 0, refuse("expected a value implementing %s, got %s (decoded as %s, which does not)", p.name, describe(c.b, pos, h), typeName(dyn))
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
