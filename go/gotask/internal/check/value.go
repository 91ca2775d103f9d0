package check

import (
	"fmt"
	"reflect"
	"sort"

	"github.com/vmihailenco/tagparser/v2"
)

// Unencodable finds in v a value msgpack cannot carry (a channel, a function,
// a complex number, an unsafe pointer) and returns where, as a path from the
// top of v such as .items[2].done, and its type. It returns "" and nil when
// there is none, or when the value in the way encodes itself (its own
// EncodeMsgpack or MarshalMsgpack, whose error is its own). It is for the
// message of an encoding that failed, so it goes depth first, map keys in
// order, and passes each pointer and map once.
func Unencodable(v any) (path string, t reflect.Type) {
	w := unencodableWalk{seen: map[uintptr]bool{}}
	return w.find(reflect.ValueOf(v))
}

type unencodableWalk struct{ seen map[uintptr]bool }

func (w *unencodableWalk) find(v reflect.Value) (string, reflect.Type) {
	if !v.IsValid() {
		return "", nil
	}
	t := v.Type()
	if t != timeType && implementsAny(t, encoderIfaces) {
		return "", nil
	}
	switch t.Kind() {
	case reflect.Chan, reflect.Func, reflect.Complex64, reflect.Complex128, reflect.UnsafePointer:
		return "", t // found: the path is built on the way back
	case reflect.Interface:
		if v.IsNil() {
			return "", nil
		}
		return w.find(v.Elem())
	case reflect.Pointer:
		if v.IsNil() || w.seen[v.Pointer()] {
			return "", nil
		}
		w.seen[v.Pointer()] = true
		return w.find(v.Elem())
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return "", nil
		}
		for i := 0; i < v.Len(); i++ {
			if p, bad := w.find(v.Index(i)); bad != nil {
				return indexSegment(i) + p, bad
			}
		}
	case reflect.Map:
		if v.IsNil() || w.seen[v.Pointer()] {
			return "", nil // a map that holds itself, through an interface, is walked once
		}
		w.seen[v.Pointer()] = true
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
		for _, k := range keys {
			if p, bad := w.find(k); bad != nil {
				return "[key " + fmt.Sprint(k) + "]" + p, bad
			}
			if p, bad := w.find(v.MapIndex(k)); bad != nil {
				return mapKeySegment(k) + p, bad
			}
		}
	case reflect.Struct:
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := tagparser.Parse(f.Tag.Get("msgpack"))
			if tag.Name == "-" || !f.IsExported() && !f.Anonymous {
				continue
			}
			name := tag.Name
			if name == "" {
				name = f.Name
			}
			if p, bad := w.find(v.Field(i)); bad != nil {
				return nameSegment(name) + p, bad
			}
		}
	}
	return "", nil
}

// mapKeySegment is the path segment of a map's value under key k.
func mapKeySegment(k reflect.Value) string {
	for k.Kind() == reflect.Interface && !k.IsNil() {
		k = k.Elem()
	}
	if k.Kind() == reflect.String {
		return nameSegment(k.String())
	}
	return "[" + fmt.Sprint(k.Interface()) + "]"
}
