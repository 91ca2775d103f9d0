package check

import (
	"encoding"
	"fmt"
	"math"
	"reflect"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/tagparser/v2"
)

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
	timeType  = reflect.TypeOf(time.Time{})
	anyType   = reflect.TypeOf((*any)(nil)).Elem()
	errorType = reflect.TypeOf((*error)(nil)).Elem()

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

func TypeName(t reflect.Type) string {
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
	p := &plan{t: t, name: TypeName(t)}
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
