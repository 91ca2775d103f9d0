package gotask

import (
	"bytes"
	"context"
	"encoding/json"
	"go/ast"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// Shelf is a service for the describe tests.
type Shelf struct{}

// DescBase is embedded in DescItem, which encodes its fields as its own.
type DescBase struct {
	// ID is the base's identifier.
	ID int64 `msgpack:"id"`
}

// DescStamp is embedded in DescItem through a pointer.
type DescStamp struct {
	At time.Time `msgpack:"at"` // when it was stamped
}

// descUpper encodes itself as text, which the library sends as binary.
type descUpper string

func (u descUpper) MarshalText() ([]byte, error) { return []byte(strings.ToUpper(string(u))), nil }

// DescLevel is a named integer type.
type DescLevel uint16

// DescItem has a field of each kind.
type DescItem struct {
	DescBase
	*DescStamp
	// Name is the item's name.
	Name      string          `msgpack:"name"`
	Skip      string          `msgpack:"-"`
	hidden    int             //nolint:unused // left out: unexported
	Small     int8            `msgpack:"small,omitempty"`
	Big       uint64          `msgpack:"big"`
	Level     DescLevel       `msgpack:"level"`
	F32       float32         `msgpack:"f32"`
	Data      []byte          `msgpack:"data"`
	Fixed     [4]byte         `msgpack:"fixed"`
	Pair      [2]int          `msgpack:"pair"`
	When      time.Time       `msgpack:"when"`
	MaybeWhen *time.Time      `msgpack:"maybe_when"`
	Any       any             `msgpack:"any"`
	Err       error           `msgpack:"err"`
	Tags      []string        `msgpack:"tags"`
	Counts    map[int]string  `msgpack:"counts"`
	Next      *DescItem       `msgpack:"next"`
	Up        descUpper       `msgpack:"up"`
	UpPtr     *descUpper      `msgpack:"up_ptr"`
	Kids      []DescItem      `msgpack:"kids"`
	Extra     DescBase        `msgpack:"extra"`
	Keyword   string          `msgpack:"class"`
	NoTag     string          // travels as NoTag
	Nested    [][]*DescLevel  `msgpack:"nested"`
	ByName    map[string]bool `msgpack:"by_name"`
	Inner     struct {
		// X is a field of an unnamed struct.
		X int `msgpack:"x"`
	} `msgpack:"inner"`
}

// DescClash embeds two structs: DescBase's id clashes with its own, so
// DescBase is not inlined; DescStamp is kept whole by noinline.
type DescClash struct {
	ID int `msgpack:"id"`
	DescBase
	DescStamp `msgpack:",noinline"`
}

// DescForced inlines DescBase, whose id its own field shadows.
type DescForced struct {
	ID       string `msgpack:"id"`
	DescBase `msgpack:",inline"`
	Other    int `msgpack:"other"`
}

// DescPacked is encoded as an array, its fields omitted when empty.
type DescPacked struct {
	_msgpack struct{} `msgpack:",as_array,omitempty"` //nolint:unused // read by the msgpack library
	A        int      `msgpack:"a"`
	B        string   `msgpack:"b"`
}

// DescTime embeds a time, whose MarshalBinary it gets: the library encodes
// it as bytes.
type DescTime struct {
	time.Time
	N int `msgpack:"n"`
}

// Get returns the item named.
func (*Shelf) Get(ctx context.Context, name string, r *DescItem) error { return nil }

// Walk sends the items from args.From on.
func (*Shelf) Walk(args struct {
	// From is where to start.
	From string `msgpack:"from"`
}, out *Stream[DescItem]) error {
	return nil
}

// Odd takes and returns the odd structs.
func (Shelf) Odd(args DescClash, r *struct {
	Forced DescForced `msgpack:"forced"`
	Packed DescPacked `msgpack:"packed"`
	Time   DescTime   `msgpack:"time"`
	Level  *DescLevel `msgpack:"level"`
}) error {
	return nil
}

// describeJSON registers rcvr on a new server and returns its description,
// decoded from JSON as Python reads it.
func describeJSON(t *testing.T, rcvr any) map[string]any {
	t.Helper()
	srv := NewServer()
	if err := srv.Register(rcvr); err != nil {
		t.Fatal(err)
	}
	var out, stderr bytes.Buffer
	if status := describeTo(srv, &out, &stderr); status != 0 {
		t.Fatalf("describeTo: status %d: %s", status, stderr.String())
	}
	if n := bytes.Count(out.Bytes(), []byte("\n")); n != 1 || !bytes.HasSuffix(out.Bytes(), []byte("\n")) {
		t.Fatalf("want one line of JSON, got %d lines: %q", n, out.String())
	}
	var d map[string]any
	if err := json.Unmarshal(out.Bytes(), &d); err != nil {
		t.Fatal(err)
	}
	return d
}

// dig follows path (map keys, or for lists the item whose "name", "key" or
// "id" is the segment) through v.
func dig(t *testing.T, v any, path ...string) any {
	t.Helper()
	for i, seg := range path {
		switch x := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = x[seg]; !ok {
				t.Fatalf("%s: no key %q in %v", strings.Join(path[:i], "/"), seg, x)
			}
		case []any:
			v = nil
			for _, item := range x {
				m, _ := item.(map[string]any)
				if m["name"] == seg || m["key"] == seg || m["id"] == seg {
					v = item
					break
				}
			}
			if v == nil {
				t.Fatalf("%s: no item %q", strings.Join(path[:i], "/"), seg)
			}
		default:
			t.Fatalf("%s: cannot look up %q in %v", strings.Join(path[:i], "/"), seg, v)
		}
	}
	return v
}

func TestDescribeServicesAndMethods(t *testing.T) {
	d := describeJSON(t, new(Shelf))
	if d["describe"] != float64(describeVersion) {
		t.Errorf("describe = %v", d["describe"])
	}
	checks := []struct {
		path []string
		want any
	}{
		{[]string{"services", "Shelf", "doc"}, "Shelf is a service for the describe tests."},
		{[]string{"services", "Shelf", "methods", "Get", "doc"}, "Get returns the item named."},
		{[]string{"services", "Shelf", "methods", "Get", "kind"}, "call"},
		{[]string{"services", "Shelf", "methods", "Get", "ctx"}, true},
		{[]string{"services", "Shelf", "methods", "Get", "arg", "kind"}, "string"},
		{[]string{"services", "Shelf", "methods", "Get", "reply", "ref"}, "github.com/trio-gotask/trio-gotask/go/gotask.DescItem"},
		{[]string{"services", "Shelf", "methods", "Walk", "kind"}, "stream"},
		{[]string{"services", "Shelf", "methods", "Walk", "ctx"}, false},
		{[]string{"services", "Shelf", "methods", "Walk", "reply", "kind"}, "struct"},
		{[]string{"services", "Shelf", "methods", "Odd", "doc"}, "Odd takes and returns the odd structs."},
	}
	for _, c := range checks {
		if got := dig(t, d, c.path...); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s = %#v, want %#v", strings.Join(c.path, "/"), got, c.want)
		}
	}
	var names []string
	for _, m := range dig(t, d, "services", "Shelf", "methods").([]any) {
		names = append(names, m.(map[string]any)["name"].(string))
	}
	if want := []string{"Get", "Odd", "Walk"}; !reflect.DeepEqual(names, want) {
		t.Errorf("methods %v, want %v (sorted)", names, want)
	}
}

func TestDescribeTypes(t *testing.T) {
	d := describeJSON(t, new(Shelf))
	item := []string{"structs", "github.com/trio-gotask/trio-gotask/go/gotask.DescItem"}
	field := func(key string, more ...string) any {
		return dig(t, d, append(append(append([]string{}, item...), "fields", key), more...)...)
	}
	intType := func(bits int, unsigned bool, goName string) map[string]any {
		m := map[string]any{"kind": "int", "bits": float64(bits), "go": goName}
		if unsigned {
			m["unsigned"] = true
		}
		return m
	}
	checks := []struct {
		key  string
		want any
	}{
		{"id", intType(64, false, "int64")},
		{"at", map[string]any{"kind": "time", "go": "time.Time"}},
		{"name", map[string]any{"kind": "string", "go": "string"}},
		{"small", intType(8, false, "int8")},
		{"big", intType(64, true, "uint64")},
		{"level", intType(16, true, "gotask.DescLevel")},
		{"f32", map[string]any{"kind": "float", "bits": float64(32), "go": "float32"}},
		{"data", map[string]any{"kind": "bytes", "go": "[]uint8"}},
		{"fixed", map[string]any{"kind": "bytes", "go": "[4]uint8", "len": float64(4)}},
		{"pair", map[string]any{"kind": "list", "go": "[2]int", "len": float64(2),
			"elem": intType(64, false, "int")}},
		{"maybe_when", map[string]any{"kind": "pointer", "go": "*time.Time",
			"elem": map[string]any{"kind": "time", "go": "time.Time"}}},
		{"any", map[string]any{"kind": "any", "go": "any"}},
		{"err", map[string]any{"kind": "error", "go": "error"}},
		{"counts", map[string]any{"kind": "map", "go": "map[int]string",
			"key": intType(64, false, "int"), "elem": map[string]any{"kind": "string", "go": "string"}}},
		{"next", map[string]any{"kind": "pointer", "go": "*gotask.DescItem",
			"elem": map[string]any{"kind": "struct", "go": "gotask.DescItem",
				"ref": "github.com/trio-gotask/trio-gotask/go/gotask.DescItem"}}},
		{"up", map[string]any{"kind": "bytes", "go": "gotask.descUpper", "encoder": "encoding.TextMarshaler"}},
		{"up_ptr", map[string]any{"kind": "pointer", "go": "*gotask.descUpper",
			"elem": map[string]any{"kind": "bytes", "go": "*gotask.descUpper", "encoder": "encoding.TextMarshaler"}}},
		{"extra", map[string]any{"kind": "struct", "go": "gotask.DescBase",
			"ref": "github.com/trio-gotask/trio-gotask/go/gotask.DescBase"}},
	}
	for _, c := range checks {
		if got := field(c.key, "type"); !reflect.DeepEqual(got, c.want) {
			t.Errorf("field %s: type %#v, want %#v", c.key, got, c.want)
		}
	}
	docs := map[string]string{
		"id":   "ID is the base's identifier.", // from the embedded struct's declaration
		"at":   "when it was stamped",          // a line comment
		"name": "Name is the item's name.",
		"big":  "",
	}
	for key, want := range docs {
		if got := field(key, "doc"); got != want {
			t.Errorf("field %s: doc %q, want %q", key, got, want)
		}
	}
	if got := field("id", "go_name"); got != "DescBase.ID" {
		t.Errorf("id: go_name %v", got)
	}
	if got := field("small", "omitempty"); got != true {
		t.Errorf("small: omitempty %v", got)
	}
	if got := dig(t, d, append(item, "doc")...); got != "DescItem has a field of each kind." {
		t.Errorf("DescItem doc %q", got)
	}
	inner := field("inner", "type", "ref").(string)
	if got := dig(t, d, "structs", inner, "fields", "x", "doc"); got != "X is a field of an unnamed struct." {
		t.Errorf("an unnamed struct's field: doc %q", got)
	}
	walk := dig(t, d, "services", "Shelf", "methods", "Walk", "arg", "ref").(string)
	if got := dig(t, d, "structs", walk, "fields", "from", "doc"); got != "From is where to start." {
		t.Errorf("a method's unnamed argument struct: doc %q", got)
	}
	var ids []string
	for _, s := range dig(t, d, "structs").([]any) {
		ids = append(ids, s.(map[string]any)["id"].(string))
	}
	if !sortedStrings(ids) {
		t.Errorf("structs not sorted by id: %v", ids)
	}
	timeType := dig(t, d, "services", "Shelf", "methods", "Odd", "reply", "ref").(string)
	want := map[string]any{"kind": "bytes", "go": "gotask.DescTime", "encoder": "encoding.BinaryMarshaler"}
	if got := dig(t, d, "structs", timeType, "fields", "time", "type"); !reflect.DeepEqual(got, want) {
		t.Errorf("a struct embedding time.Time: %#v, want %#v", got, want)
	}
	packed := dig(t, d, "structs", "github.com/trio-gotask/trio-gotask/go/gotask.DescPacked")
	if got := dig(t, packed, "as_array"); got != true {
		t.Errorf("DescPacked: as_array %v", got)
	}
	if got := dig(t, packed, "fields", "a", "omitempty"); got != true {
		t.Errorf("DescPacked.a: omitempty %v (the _msgpack field's option)", got)
	}
}

func sortedStrings(s []string) bool {
	for i := 1; i < len(s); i++ {
		if s[i-1] > s[i] {
			return false
		}
	}
	return true
}

// encodedKeys returns the map keys of v as the msgpack library encodes it.
func encodedKeys(t *testing.T, v any) []string {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	dec := msgpack.NewDecoder(bytes.NewReader(b))
	n, err := dec.DecodeMapLen()
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]string, n)
	for i := range keys {
		if keys[i], err = dec.DecodeString(); err != nil {
			t.Fatal(err)
		}
		if err := dec.Skip(); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// TestDescribedFieldsAreTheLibrarys compares the fields describe lists with
// the keys the library encodes, for values with every field set and for zero
// values (where omitempty fields are left out).
func TestDescribedFieldsAreTheLibrarys(t *testing.T) {
	level := DescLevel(3)
	now := time.Now()
	full := []any{
		&DescItem{DescStamp: &DescStamp{At: now}, Name: "n", Small: 1, Data: []byte{1}, Any: 1,
			Tags: []string{"a"}, Up: "x", UpPtr: new(descUpper), Next: &DescItem{}, Nested: [][]*DescLevel{{&level}}},
		&DescClash{ID: 1, DescBase: DescBase{ID: 2}, DescStamp: DescStamp{At: now}},
		&DescForced{ID: "x", DescBase: DescBase{ID: 3}, Other: 4},
	}
	zero := []any{&DescItem{}, &DescClash{}, &DescForced{}}
	for _, values := range [][]any{full, zero} {
		for _, v := range values {
			typ := reflect.TypeOf(v).Elem()
			fields, asArray := encodedFields(typ, nil)
			if asArray {
				t.Fatalf("%s: as_array", typ)
			}
			var want []string
			someOmitEmpty := false
			for _, f := range fields {
				someOmitEmpty = someOmitEmpty || f.omitEmpty
			}
			for _, f := range fields {
				// The library leaves out an empty omitempty field and, when the struct has
				// omitempty fields, those of a nil embedded pointer (else they are nil).
				fv, err := reflect.ValueOf(v).Elem().FieldByIndexErr(f.index)
				if someOmitEmpty && (err != nil || f.omitEmpty && fv.IsZero()) {
					continue
				}
				want = append(want, f.key)
			}
			if got := encodedKeys(t, v); !reflect.DeepEqual(got, want) {
				t.Errorf("%s: the library encodes the keys %v, describe says %v", typ, got, want)
			}
		}
	}
}

func TestDescribeWithoutSourceHasNoDocs(t *testing.T) {
	d := &describer{
		structs: make(map[reflect.Type]*structDesc),
		ids:     make(map[string]reflect.Type),
		busy:    make(map[reflect.Type]bool),
		docs:    newDocFinder(),
	}
	d.docs.dirs["github.com/trio-gotask/trio-gotask/go/gotask"] = t.TempDir() // no source there
	id := d.structOf(reflect.TypeOf(DescItem{}), nil)
	sd := d.structs[reflect.TypeOf(DescItem{})]
	if sd.ID != id || sd.Doc != "" || len(sd.Fields) == 0 {
		t.Fatalf("got %+v", sd)
	}
	for _, f := range sd.Fields {
		if f.Doc != "" {
			t.Errorf("field %s: doc %q without the source", f.Key, f.Doc)
		}
	}
}

func TestDescribeSelfContainingNamedTypes(t *testing.T) {
	type list []list
	d := &describer{structs: map[reflect.Type]*structDesc{}, ids: map[string]reflect.Type{},
		busy: map[reflect.Type]bool{}, docs: newDocFinder()}
	td := d.typeOf(reflect.TypeOf(list{}), nil)
	if td.Kind != "list" || td.Elem.Kind != "any" {
		t.Errorf("type list []list: %+v, elem %+v", td, td.Elem)
	}
}

func TestParamExprs(t *testing.T) {
	srv := NewServer()
	if err := srv.Register(new(Shelf)); err != nil {
		t.Fatal(err)
	}
	f := newDocFinder()
	decl := f.methodDecl(reflect.TypeOf(new(Shelf)), "Odd") // a value method, called through a pointer
	if decl == nil {
		t.Fatal("no declaration found for Shelf.Odd")
	}
	arg, reply := paramExprs(decl)
	if id, ok := arg.(*ast.Ident); !ok || id.Name != "DescClash" {
		t.Errorf("arg %#v", arg)
	}
	if _, ok := unstar(reply).(*ast.StructType); !ok {
		t.Errorf("reply %#v", reply)
	}
}
