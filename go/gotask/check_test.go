package gotask

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"reflect"
	"strings"
	"testing"
	"testing/quick"
	"time"

	"github.com/trio-gotask/trio-gotask/go/gotask/internal/check"
	"github.com/trio-gotask/trio-gotask/go/gotask/internal/scan"
	"github.com/vmihailenco/msgpack/v5"
)

type Level int8
type Temp float32

type Args struct{ A, B int }
type Small struct{ A int16 }

type Event struct {
	Name    string    `msgpack:"name"`
	Data    []byte    `msgpack:"data"`
	When    time.Time `msgpack:"when"`
	Tags    []string  `msgpack:"tags"`
	Level   Level     `msgpack:"level"`
	Skipped int       `msgpack:"-"`
	Renamed int       `msgpack:"renamed,alias:old"`
	hidden  int
}

type Base struct {
	ID int `msgpack:"id"`
}

type WithBase struct {
	Base
	Name string `msgpack:"name"`
}

type WithPtrBase struct {
	*Base
	Name string `msgpack:"name"`
}

// Base comes first and is inlined; the later id field takes its name over.
type ShadowAfter struct {
	Base
	ID string `msgpack:"id"`
}

// id is taken when Base comes, so Base is not inlined but is a field "Base".
type ShadowBefore struct {
	ID string `msgpack:"id"`
	Base
}

type NoInline struct {
	Base `msgpack:",noinline"`
}

// Color decodes itself, from text.
type Color int

func (c *Color) UnmarshalText(b []byte) error {
	switch string(b) {
	case "red":
		*c = 1
	case "green":
		*c = 2
	default:
		return fmt.Errorf("no color %q", b)
	}
	return nil
}

// Stamped decodes itself, so it is not inlined where it is embedded.
type Stamped struct{ At int }

func (s *Stamped) DecodeMsgpack(d *msgpack.Decoder) error {
	n, err := d.DecodeInt()
	s.At = n
	return err
}

type WithStamped struct {
	Stamped
	Name string
}

// Tagged encodes itself, so it is not inlined where it is embedded (and the
// struct embedding it encodes itself too, but decodes as a struct).
type Tagged struct{ T string }

func (Tagged) MarshalMsgpack() ([]byte, error) { return msgpack.Marshal("tagged") }

type WithTagged struct {
	Tagged
	Name string
}

// SelfEmbed makes the library recurse forever computing its fields.
type SelfEmbed struct {
	A int
	*SelfEmbed
}

type SelfPtr *SelfPtr

type Nest []Nest

// enc encodes v as the client does, with map keys in order so that messages
// listing them are the same every time.
func enc(t testing.TB, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	e := msgpack.NewEncoder(&buf)
	e.UseCompactInts(true)
	e.SetSortMapKeys(true)
	if err := e.Encode(v); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// ts encodes a timestamp of 4, 8 or 12 bytes, as the length of data says.
func ts(data ...byte) []byte {
	switch len(data) {
	case 4:
		return append([]byte{0xd6, 0xff}, data...)
	case 8:
		return append([]byte{0xd7, 0xff}, data...)
	}
	return append([]byte{0xc7, byte(len(data)), 0xff}, data...)
}

func ts12(sec int64, nsec uint32) []byte {
	b := binary.BigEndian.AppendUint32(nil, nsec)
	return ts(binary.BigEndian.AppendUint64(b, uint64(sec))...)
}

func TestCheckRefuses(t *testing.T) {
	deep := append(bytes.Repeat([]byte{0x91}, scan.MaxNesting+1), 0x90) // one more than the frame decoder takes
	cases := []struct {
		name   string
		data   any // a Go value to encode, or []byte of msgpack when raw
		raw    bool
		target any // a pointer to what the method takes
		want   string
	}{
		// Integers
		{"float into int64", 1.5, false, new(int64), "expected an integer for int64, got float 1.5"},
		{"float32 into int", float32(2), false, new(int), "expected an integer for int, got float 2"},
		{"str into int", "12", false, new(int), `expected an integer for int, got str "12"`},
		{"300 into int8", 300, false, new(int8), "expected an integer from -128 to 127 for int8, got int 300"},
		{"-129 into int8", -129, false, new(int8), "expected an integer from -128 to 127 for int8, got int -129"},
		{"-1 into uint8", -1, false, new(uint8), "expected an integer from 0 to 255 for uint8, got int -1"},
		{"-1 into uint64", -1, false, new(uint64), "expected an integer from 0 to 18446744073709551615 for uint64, got int -1"},
		{"2^63 into int64", uint64(1) << 63, false, new(int64), "expected an integer from -9223372036854775808 to 9223372036854775807 for int64, got int 9223372036854775808"},
		{"2^63 into int", uint64(1) << 63, false, new(int), "expected an integer from -9223372036854775808 to 9223372036854775807 for int, got int 9223372036854775808"},
		{"2^32 into uint32", uint64(1) << 32, false, new(uint32), "expected an integer from 0 to 4294967295 for uint32, got int 4294967296"},
		{"300 into a named int8", 300, false, new(Level), "expected an integer from -128 to 127 for gotask.Level, got int 300"},
		{"a duration from a str", "1s", false, new(time.Duration), `expected an integer for time.Duration, got str "1s"`},
		{"70000 into a field", map[string]any{"A": 70000}, false, new(Small), "A: expected an integer from -32768 to 32767 for int16, got int 70000"},
		{"300 in a []int8", []any{1, 300}, false, new([]int8), "[1]: expected an integer from -128 to 127 for int8, got int 300"},
		{"-1 as a map key", map[int]string{-1: "x"}, false, new(map[uint16]string), "map key: expected an integer from 0 to 65535 for uint16, got int -1"},
		{"300 into a named int8 field", map[string]any{"level": 300}, false, new(Event), "level: expected an integer from -128 to 127 for gotask.Level, got int 300"},
		// Floats
		{"1e300 into float32", 1e300, false, new(float32), "expected a number from -3.4028234663852886e+38 to 3.4028234663852886e+38 for float32, got float 1e+300"},
		{"-1e39 into a named float32", -1e39, false, new(Temp), "expected a number from -3.4028234663852886e+38 to 3.4028234663852886e+38 for gotask.Temp, got float -1e+39"},
		{"str into float64", "x", false, new(float64), `expected a number for float64, got str "x"`},
		{"bool into float32", true, false, new(float32), "expected a number for float32, got bool true"},
		// Bool
		{"int into bool", 1, false, new(bool), "expected a bool for bool, got int 1"},
		// str and bin
		{"bin into string", []byte("abc"), false, new(string), "expected a string for string, got bin (3 bytes)"},
		{"str into []byte", "x", false, new([]byte), `expected bytes for []uint8, got str "x"`},
		{"bin in a field", map[string]any{"name": []byte("x")}, false, new(Event), "name: expected a string for string, got bin (1 byte)"},
		{"str in a []byte field", map[string]any{"data": "x"}, false, new(Event), `data: expected bytes for []uint8, got str "x"`},
		{"bin in a []string", map[string]any{"tags": []any{"a", "b", []byte("xyz")}}, false, new(Event), "tags[2]: expected a string for string, got bin (3 bytes)"},
		{"bin as a map[string] key", []byte{0x82, 0xa1, 'a', 0x01, 0xc4, 0x01, 'b', 0x02}, true, new(map[string]int), "map key: expected a string for string, got bin (1 byte)"},
		{"long str", strings.Repeat("x", 40), false, new([]byte), "expected bytes for []uint8, got str (40 bytes)"},
		{"deep path", []any{nil, nil, map[string]any{"name": []byte("x")}}, false, new([]Event), "[2].name: expected a string for string, got bin (1 byte)"},
		{"quoted key", map[string]any{"a b": "x"}, false, new(map[string]int), `["a b"]: expected an integer for int, got str "x"`},
		{"int key", map[int]any{5: 1}, false, new(map[int]string), "[5]: expected a string for string, got int 1"},
		// Time
		{"int for a time field", map[string]any{"when": 5}, false, new(Event), "when: expected a timestamp for time.Time, got int 5"},
		{"str for a time", "2024-01-01T00:00:00Z", false, new(time.Time), `expected a timestamp for time.Time, got str "2024-01-01T00:00:00Z"`},
		{"legacy time array", []any{1, 2}, false, new(time.Time), "expected a timestamp for time.Time, got array (2 items)"},
		{"another ext", []byte{0xd6, 0x0d, 0, 0, 0, 1}, true, new(time.Time), "expected a timestamp for time.Time, got ext 13 (4 bytes)"},
		{"timestamp of 5 bytes", ts(1, 2, 3, 4, 5), true, new(time.Time), "expected a valid timestamp for time.Time, got malformed timestamp (5 bytes)"},
		{"nanoseconds past 10^9", ts12(0, 1e9), true, new(time.Time), "expected a valid timestamp for time.Time, got malformed timestamp (12 bytes)"},
		{"timestamp for an int", ts12(0, 0), true, new(int), "expected an integer for int, got timestamp 1970-01-01T00:00:00Z"},
		// Structs
		{"no field matched", map[string]any{"C": 1}, false, new(Args), "cannot use a map with key C as type gotask.Args: none of them is a field of it (fields: A, B)"},
		{"no field matched, keys", map[string]any{"c": 1, "d e": 2}, false, new(*Args), `cannot use a map with keys c, "d e" as type gotask.Args: none of them is a field of it (fields: A, B)`},
		{"no field matched in a field", map[string]any{"A": map[string]int{"x": 1}}, false, new(struct{ A Base }), "A: cannot use a map with key x as type gotask.Base: none of them is a field of it (fields: id)"},
		{"a skipped field does not match", map[string]any{"Skipped": 1, "hidden": 2}, false, new(Event), "cannot use a map with keys Skipped, hidden as type gotask.Event: none of them is a field of it (fields: name, data, when, tags, level, renamed)"},
		{"not inlined", map[string]any{"id": 1}, false, new(NoInline), "cannot use a map with key id as type gotask.NoInline: none of them is a field of it (fields: Base)"},
		{"not inlined, encodes itself", map[string]any{"T": "x"}, false, new(WithTagged), "cannot use a map with key T as type gotask.WithTagged: none of them is a field of it (fields: Tagged, Name)"},
		{"str for a struct", "not a struct", false, new(Args), `expected a map for gotask.Args, got str "not a struct"`},
		{"long list for a struct", []int{1, 2, 3}, false, new(Args), "expected a map, or a list of 2 items, for gotask.Args, got array (3 items)"},
		{"int key for a struct", map[int]int{1: 2}, false, new(Args), "expected a string for a field name of gotask.Args, got int 1"},
		{"bin key for a struct", []byte{0x81, 0xc4, 0x01, 'A', 0x02}, true, new(Args), "expected a string for a field name of gotask.Args, got bin (1 byte)"},
		{"shadowing field", map[string]any{"id": 5}, false, new(ShadowAfter), "id: expected a string for string, got int 5"},
		{"shadowed embedded", map[string]any{"id": 5}, false, new(ShadowBefore), "id: expected a string for string, got int 5"},
		{"embedded by its name", map[string]any{"Base": map[string]any{"id": "x"}}, false, new(WithBase), `Base.id: expected an integer for int, got str "x"`},
		{"embeds itself", map[string]any{"A": 1}, false, new(SelfEmbed), "the msgpack library cannot decode gotask.SelfEmbed: it embeds itself"},
		// Arrays
		{"short list", []int{1}, false, new([2]int), "expected a list of 2 items for [2]int, got array (1 item)"},
		{"long list", []int{1, 2, 3}, false, new([2]int), "expected a list of 2 items for [2]int, got array (3 items)"},
		{"short bin", []byte{1, 2, 3}, false, new([4]byte), "expected 4 bytes for [4]uint8, got bin (3 bytes)"},
		{"list for a byte array", []int{1, 2, 3, 4}, false, new([4]byte), "expected 4 bytes for [4]uint8, got array (4 items)"},
		{"map for a slice", map[string]int{}, false, new([]int), "expected a list for []int, got map (0 entries)"},
		// any
		{"array key into any", []byte{0x81, 0x91, 0x01, 0x02}, true, new(any), "expected a map key Go can hash for any, got array (1 item)"},
		{"map key into any", []byte{0x81, 0x81, 0x01, 0x02, 0x03}, true, new(any), "expected a map key Go can hash for any, got map (1 entry)"},
		{"bin key deep in any", []byte{0x81, 0xa1, 'a', 0x92, 0x01, 0x81, 0xc4, 0x01, 'k', 0x01}, true, new(any), "a[1]: expected a map key Go can hash for any, got bin (1 byte)"},
		{"array key into map[any]int", []byte{0x81, 0x91, 0x01, 0x02}, true, new(map[any]int), "expected a map key Go can hash for any, got array (1 item)"},
		{"bin key into map[any]int", []byte{0x81, 0xc4, 0x01, 'k', 0x02}, true, new(map[any]int), "expected a map key Go can hash for any, got bin (1 byte)"},
		{"array key in map[string]any", []byte{0x81, 0xa1, 'x', 0x81, 0x90, 0x01}, true, new(map[string]any), "x: expected a map key Go can hash for any, got array (0 items)"},
		{"bad timestamp in any", append([]byte{0x91}, ts(1, 2, 3)...), true, new(any), "[0]: expected a valid timestamp for any, got malformed timestamp (3 bytes)"},
		// Interfaces with methods
		{"int for a Stringer", 5, false, new(fmt.Stringer), "expected a value implementing fmt.Stringer, got int 5 (decoded as int8, which does not)"},
		{"int for an error", 5, false, new(error), "expected a value implementing error, got int 5 (decoded as int8, which does not)"},
		// What the library cannot do
		{"uintptr", 1, false, new(uintptr), "the msgpack library cannot decode uintptr"},
		{"a pointer to itself", nil, false, new(SelfPtr), "the msgpack library cannot decode gotask.SelfPtr: it is a pointer to itself"},
		{"too deep", deep, true, new(Nest), strings.Repeat("[0]", 16) + "..." + strings.Repeat("[0]", 16) + ": arrays and maps nest deeper than 10000 levels"},
		{"truncated", []byte{0x92, 0x01}, true, new([]int), "[1]: malformed msgpack"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data, _ := c.data.([]byte)
			if !c.raw {
				data = enc(t, c.data)
			}
			err := decodeValue(data, c.target)
			if err == nil {
				t.Fatalf("accepted, decoded %#v", reflect.ValueOf(c.target).Elem())
			}
			if err.Error() != c.want {
				t.Fatalf("got  %s\nwant %s", err, c.want)
			}
		})
	}
}

func TestCheckAccepts(t *testing.T) {
	// The library decodes a timestamp into local time.
	when := time.Date(2024, 2, 29, 12, 30, 15, 123456789, time.UTC).Local()
	var red Color = 1
	cases := []struct {
		name   string
		data   any
		raw    bool
		target any
		want   any // what target points to afterwards
	}{
		{"127 into int8", 127, false, new(int8), int8(127)},
		{"-128 into int8", -128, false, new(int8), int8(-128)},
		{"255 into uint8", 255, false, new(uint8), uint8(255)},
		{"2^64-1 into uint64", uint64(math.MaxUint64), false, new(uint64), uint64(math.MaxUint64)},
		{"2^64-1 into uint", uint64(math.MaxUint64), false, new(uint), uint(math.MaxUint64)},
		{"-2^63 into int64", int64(math.MinInt64), false, new(int64), int64(math.MinInt64)},
		{"2^63-1 into int", int64(math.MaxInt64), false, new(int), math.MaxInt},
		{"uint8-encoded 200 into int16", []byte{0xcc, 200}, true, new(int16), int16(200)},
		{"int64-encoded 5 into uint8", []byte{0xd3, 0, 0, 0, 0, 0, 0, 0, 5}, true, new(uint8), uint8(5)},
		{"127 into a named int8", 127, false, new(Level), Level(127)},
		{"-128 into a named int8", -128, false, new(Level), Level(-128)},
		{"a duration", int64(time.Second), false, new(time.Duration), time.Second},
		{"float 64 into float32", 0.1, false, new(float32), float32(0.1)},
		{"float 64 into a named float32", 36.6, false, new(Temp), Temp(36.6)},
		{"float 32 into float32", float32(0.25), false, new(float32), float32(0.25)},
		{"max float32 as a float 64", float64(math.MaxFloat32), false, new(float32), float32(math.MaxFloat32)},
		{"inf into float32", math.Inf(-1), false, new(float32), float32(math.Inf(-1))},
		{"int into float32", -3, false, new(float32), float32(-3)},
		{"2^64-1 into float32", uint64(math.MaxUint64), false, new(float32), float32(math.MaxUint64)},
		{"2^64-1 into float64", uint64(math.MaxUint64), false, new(float64), float64(math.MaxUint64)},
		{"float 32 into float64", float32(0.5), false, new(float64), 0.5},
		{"float32 fields narrow", []any{1.5, 2.5}, false, new([]float32), []float32{1.5, 2.5}},
		{"nil into int", nil, false, new(int), 0},
		{"nil into string", nil, false, new(string), ""},
		{"nil into bool", nil, false, new(bool), false},
		{"nil into float32", nil, false, new(float32), float32(0)},
		{"nil into a struct", nil, false, new(Args), Args{}},
		{"nil into an array", nil, false, new([2]int), [2]int{}},
		{"nil into a byte array", nil, false, new([2]byte), [2]byte{}},
		{"nil into time.Time", nil, false, new(time.Time), time.Time{}},
		{"nil into *time.Time", nil, false, new(*time.Time), (*time.Time)(nil)},
		{"nil into a time field", map[string]any{"when": nil, "name": "x"}, false, new(Event), Event{Name: "x"}},
		{"nil in a []time.Time", []any{nil, when}, false, new([]time.Time), []time.Time{{}, when}},
		{"nil into a self-embedding struct", nil, false, new(SelfEmbed), SelfEmbed{}},
		{"time", when, false, new(time.Time), when},
		{"time, 4 bytes", ts(0, 0, 0, 7), true, new(time.Time), time.Unix(7, 0)},
		{"time, 8 bytes", ts(0, 0, 0, 4, 0, 0, 0, 7), true, new(time.Time), time.Unix(7, 1)},
		{"time before 1970", time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC), false, new(time.Time), time.Date(1960, 1, 1, 0, 0, 0, 0, time.Local)},
		{"time into *time.Time", when, false, new(*time.Time), &when},
		{"bin into []byte", []byte{1, 2, 255}, false, new([]byte), []byte{1, 2, 255}},
		{"bin into [3]byte", []byte{1, 2, 3}, false, new([3]byte), [3]byte{1, 2, 3}},
		{"list into [2]int", []int{1, 2}, false, new([2]int), [2]int{1, 2}},
		{"struct by tags", map[string]any{"name": "n", "data": []byte("d"), "when": when, "tags": []string{"a"}, "level": -3, "renamed": 4}, false, new(Event),
			Event{Name: "n", Data: []byte("d"), When: when, Tags: []string{"a"}, Level: -3, Renamed: 4}},
		{"an alias", map[string]any{"old": 9}, false, new(Event), Event{Renamed: 9}},
		{"unknown keys are skipped", map[string]any{"A": 1, "Z": []any{1, map[string]any{"x": []byte("y")}}}, false, new(Args), Args{A: 1}},
		{"an empty map", map[string]any{}, false, new(Args), Args{}},
		{"a struct as a list", []int{1, 2}, false, new(Args), Args{1, 2}},
		{"a struct as an empty list", []int{}, false, new(Args), Args{}},
		{"embedded fields", map[string]any{"id": 3, "name": "n"}, false, new(WithBase), WithBase{Base{3}, "n"}},
		{"embedded by its name", map[string]any{"Base": map[string]any{"id": 4}}, false, new(WithBase), WithBase{Base: Base{4}}},
		{"embedded pointer", map[string]any{"id": 3}, false, new(WithPtrBase), WithPtrBase{Base: &Base{3}}},
		{"the later field wins", map[string]any{"id": "x"}, false, new(ShadowAfter), ShadowAfter{ID: "x"}},
		{"shadowed embedded", map[string]any{"id": "x", "Base": map[string]any{"id": 2}}, false, new(ShadowBefore), ShadowBefore{"x", Base{2}}},
		{"not inlined", map[string]any{"Base": map[string]any{"id": 2}}, false, new(NoInline), NoInline{Base{2}}},
		{"a promoted decoder", 5, false, new(WithStamped), WithStamped{Stamped: Stamped{5}}},
		{"embedded, encodes itself", map[string]any{"Tagged": map[string]any{"T": "x"}}, false, new(WithTagged), WithTagged{Tagged: Tagged{"x"}}},
		{"a self-decoding type", "red", false, new(Color), red},
		{"a self-decoding field", map[string]any{"C": "green"}, false, new(struct{ C Color }), struct{ C Color }{2}},
		{"a raw message", map[string]any{"R": []any{1, "x"}}, false, new(struct{ R msgpack.RawMessage }), struct{ R msgpack.RawMessage }{msgpack.RawMessage{0x92, 0x01, 0xa1, 'x'}}},
		{"map with int keys", map[int]string{1: "a", -2: "b"}, false, new(map[int]string), map[int]string{1: "a", -2: "b"}},
		{"keys of any kind into map[any]int", map[any]int{1: 1, "a": 2, nil: 3, 1.5: 4}, false, new(map[any]int), map[any]int{int8(1): 1, "a": 2, nil: 3, 1.5: 4}},
		{"map with int keys into any", map[int]string{1: "a"}, false, new(any), map[any]any{int8(1): "a"}},
		{"map with str keys into any", map[string]any{"a": []any{1, "x", []byte("y")}}, false, new(any), map[string]any{"a": []any{int8(1), "x", []byte("y")}}},
		{"pointers", map[string]any{"P": 5}, false, new(struct{ P **int }), func() any { n := 5; p := &n; return struct{ P **int }{&p} }()},
		{"a str into an error", "boom", false, new(error), errors.New("boom")},
		{"a time into a Stringer", when, false, new(fmt.Stringer), fmt.Stringer(when)},
		{"nil into a Stringer", nil, false, new(fmt.Stringer), fmt.Stringer(nil)},
		{"nesting at the limit", append(bytes.Repeat([]byte{0x91}, scan.MaxNesting), 0x90), true, new(Nest), nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data, _ := c.data.([]byte)
			if !c.raw {
				data = enc(t, c.data)
			}
			if err := decodeValue(data, c.target); err != nil {
				t.Fatal(err)
			}
			if c.want == nil {
				return
			}
			got := reflect.ValueOf(c.target).Elem().Interface()
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got  %#v\nwant %#v", got, c.want)
			}
		})
	}
}

// The nil rewritten for a time.Time is the zero time itself, not an equal one.
func TestCheckNilTimeIsTheZeroTime(t *testing.T) {
	var tm time.Time
	if err := decodeValue([]byte{0xc0}, &tm); err != nil || tm != (time.Time{}) || !tm.IsZero() {
		t.Fatalf("%#v %v", tm, err)
	}
}

// libraryDecode decodes data with the msgpack library alone, as gotask did
// before it checked arguments (the map decoder is gotask's).
func libraryDecode(data []byte, v any) error {
	d := msgpack.NewDecoder(bytes.NewReader(data))
	d.SetMapDecoder(decodeMap)
	return d.Decode(v)
}

// What the library decoded correctly before the checker, it still decodes the same.
func TestCheckKeepsWhatTheLibraryDecodes(t *testing.T) {
	when := time.Date(2024, 2, 29, 12, 30, 15, 123456789, time.UTC)
	n := 7
	values := []struct {
		value  any
		target func() any
	}{
		{int8(-5), func() any { return new(int8) }},
		{uint16(65535), func() any { return new(uint16) }},
		{int64(math.MinInt64), func() any { return new(int64) }},
		{int64(127), func() any { return new(Level) }},
		{uint64(math.MaxUint64), func() any { return new(uint64) }},
		{float32(1.25), func() any { return new(float32) }},
		{1.25, func() any { return new(float64) }},
		{int64(3), func() any { return new(float64) }},
		{true, func() any { return new(bool) }},
		{"héllo", func() any { return new(string) }},
		{[]byte{0, 1, 255}, func() any { return new([]byte) }},
		{[]byte{}, func() any { return new([]byte) }},
		{[]string{"a", "b"}, func() any { return new([]string) }},
		{[]string{}, func() any { return new([]string) }},
		{[]any{1, "x", nil}, func() any { return new([]any) }},
		{map[string]string{"a": "b"}, func() any { return new(map[string]string) }},
		{map[string]any{"a": []any{1, 2.5}}, func() any { return new(map[string]any) }},
		{map[int]string{1: "a", -300: "b"}, func() any { return new(map[int]string) }},
		{map[uint8][]int16{7: {1, -1}}, func() any { return new(map[uint8][]int16) }},
		{Event{Name: "n", Data: []byte("d"), When: when, Tags: []string{"t"}, Level: 3, Renamed: 2}, func() any { return new(Event) }},
		{WithBase{Base{1}, "x"}, func() any { return new(WithBase) }},
		{WithPtrBase{&Base{1}, "x"}, func() any { return new(WithPtrBase) }},
		{ShadowBefore{"x", Base{2}}, func() any { return new(ShadowBefore) }},
		{NoInline{Base{3}}, func() any { return new(NoInline) }},
		{when, func() any { return new(time.Time) }},
		{&when, func() any { return new(*time.Time) }},
		{[]time.Time{when, when.Add(time.Hour)}, func() any { return new([]time.Time) }},
		{&n, func() any { return new(*int) }},
		{nil, func() any { return new(*int) }},
		{nil, func() any { return new([]int) }},
		{nil, func() any { return new(map[string]int) }},
		{[3]int{1, 2, 3}, func() any { return new([3]int) }},
		{[2]byte{1, 2}, func() any { return new([2]byte) }},
		{map[string]any{"a": map[int]any{1: []any{map[string]any{}}}}, func() any { return new(any) }},
		{[]any{int8(1), uint64(math.MaxUint64), -1.5, float32(2), "s", []byte("b"), when, nil, true}, func() any { return new(any) }},
	}
	for _, v := range values {
		t.Run(fmt.Sprintf("%T", v.value), func(t *testing.T) {
			data := enc(t, v.value)
			want, got := v.target(), v.target()
			if err := libraryDecode(data, want); err != nil {
				t.Fatalf("the library alone: %v", err)
			}
			if err := decodeValue(data, got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got  %#v\nwant %#v", reflect.ValueOf(got).Elem(), reflect.ValueOf(want).Elem())
			}
		})
	}
}

// gotask registers nothing with the msgpack library: a program that uses the
// library for its own data gets the library's behaviour, while calls still
// follow the protocol's rules.
func TestNothingRegisteredWithTheLibrary(t *testing.T) {
	// Inside a struct, where the library's registry applies (Unmarshal has
	// fast paths of its own for a bare *int8 or *float32).
	var s struct {
		I int8
		L Level
	}
	if err := msgpack.Unmarshal(enc(t, map[string]int{"I": 300, "L": 300}), &s); err != nil || s.I != 44 || s.L != 44 {
		t.Errorf("msgpack.Unmarshal of 300 into int8 fields: %+v, %v; the library on its own wraps it to 44", s, err)
	}
	var f struct{ F float32 }
	if err := msgpack.Unmarshal(enc(t, map[string]float64{"F": 0.5}), &f); err == nil {
		t.Errorf("msgpack.Unmarshal of a float 64 into a float32 field gave %v; the library on its own refuses it", f.F)
	}
	var i8 []int8
	if err := msgpack.Unmarshal(enc(t, []int{300}), &i8); err != nil || i8[0] != 44 {
		t.Errorf("msgpack.Unmarshal of [300] into []int8: %v, %v", i8, err)
	}

	srv := NewServer()
	if err := srv.Register(new(Ints)); err != nil {
		t.Fatal(err)
	}
	c, _ := serve(t, srv)
	var got int8
	var f32 float32
	err := c.call("Ints.Int8", 300, &got)
	if errType(err) != "bad_params" || !strings.Contains(err.Error(), "expected an integer from -128 to 127 for int8, got int 300") {
		t.Errorf("Ints.Int8(300): %v, want bad_params", err)
	}
	if err := c.call("Ints.Int8", 100, &got); err != nil || got != 100 {
		t.Errorf("Ints.Int8(100): %v, %v", got, err)
	}
	if err := c.call("Ints.Float32", 0.5, &f32); err != nil || f32 != 0.5 {
		t.Errorf("Ints.Float32(0.5): %v, %v", f32, err)
	}
}

type Ints struct{}

func (Ints) Int8(n int8, r *int8) error          { *r = n; return nil }
func (Ints) Float32(f float32, r *float32) error { *r = f; return nil }

// The bad_params message is the checker's, whole.
func TestBadParamsMessage(t *testing.T) {
	srv := NewServer()
	if err := srv.Register(new(Ints)); err != nil {
		t.Fatal(err)
	}
	c, _ := serve(t, srv)
	err := c.call("Ints.Int8", 1.5, nil)
	var re *remoteError
	if !errors.As(err, &re) || re.Type != "bad_params" || re.Message != "expected an integer for int8, got float 1.5" {
		t.Fatalf("%#v", err)
	}
}

// A panic inside the library, or in a type's own decoder, is an error, not a crash.
func TestDecodePanicIsAnError(t *testing.T) {
	var p Panicky
	err := decodeValue(enc(t, 1), &p)
	if err == nil || err.Error() != "decoding gotask.Panicky: panic: boom" {
		t.Fatalf("%v", err)
	}
	// The pool still works.
	var n int
	if err := decodeValue(enc(t, 3), &n); err != nil || n != 3 {
		t.Fatal(n, err)
	}
}

type Panicky struct{}

func (*Panicky) DecodeMsgpack(*msgpack.Decoder) error { panic("boom") }

// The rewrite for float32 keeps the bytes around it and leaves the input alone.
func TestCheckRewritesInACopy(t *testing.T) {
	type S struct {
		A float32
		B string
		C []float32
		D time.Time
	}
	data := enc(t, map[string]any{"A": 0.5, "B": "b", "C": []any{1.5, 2, uint64(math.MaxUint64)}, "D": nil})
	orig := bytes.Clone(data)
	var s S
	if err := decodeValue(data, &s); err != nil {
		t.Fatal(err)
	}
	want := S{0.5, "b", []float32{1.5, 2, float32(math.MaxUint64)}, time.Time{}}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("%#v", s)
	}
	if !bytes.Equal(data, orig) {
		t.Fatal("the input was modified")
	}
	// Nothing to rewrite: the input itself is decoded, not a copy.
	small := enc(t, map[string]any{"A": float32(0.5)})
	if out, err := check.Arg(small, reflect.TypeOf(s)); err != nil || &out[0] != &small[0] {
		t.Fatalf("copied without need (%v)", err)
	}
}

func BenchmarkDecodeArg(b *testing.B) {
	for _, c := range []struct {
		name   string
		data   []byte
		target func() any
	}{
		{"AnyInt", enc(b, 1), func() any { return new(any) }},
		{"Struct", enc(b, map[string]any{"name": "n", "when": time.Now(), "tags": []string{"a", "b"}, "level": 3}), func() any { return new(Event) }},
		{"Float32s", enc(b, []float64{0.5, 1.5, 2.5, 3.5}), func() any { return new([]float32) }},
		{"Bytes16MiB", enc(b, make([]byte, 16<<20)), func() any { return new([]byte) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if err := decodeValue(c.data, c.target()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type QuickInner struct {
	X int8     `msgpack:"x"`
	Y []string `msgpack:"y"`
}

type QuickValue struct {
	QuickInner
	I8   int8
	I16  int16
	I32  int32
	I64  int64
	I    int
	U8   uint8
	U16  uint16
	U32  uint32
	U64  uint64
	U    uint
	L    Level
	F32  float32
	F64  float64
	T    Temp
	B    bool
	S    string
	Bs   []byte
	Arr  [3]int16
	BArr [4]byte
	Sl   []int32
	M    map[int16]string
	MS   map[string]uint8
	P    *int64
	N    *QuickInner
	E    QuickInner `msgpack:"e"`
	List [][]QuickInner
}

// Whatever the library encodes from a Go value, gotask decodes back into the
// same type unchanged: the checker refuses none of it.
func TestCheckRoundTripsRandomValues(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 500; i++ {
		v, ok := quick.Value(reflect.TypeOf(QuickValue{}), rng)
		if !ok {
			t.Fatal("quick.Value")
		}
		want := v.Interface().(QuickValue)
		var got QuickValue
		if err := decodeValue(enc(t, want), &got); err != nil {
			t.Fatalf("%#v: %v", want, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got  %#v\nwant %#v", got, want)
		}
	}
}

// hasOtherExt reports whether data holds an extension other than the
// timestamp: what becomes of it depends on what the program registered.
func hasOtherExt(data []byte) bool {
	for pos := 0; pos < len(data); {
		h, ok := scan.ReadHead(data, pos)
		if !ok {
			return true
		}
		if h.Kind == scan.Ext && h.Ext != -1 {
			return true
		}
		if h.Kind == scan.Array || h.Kind == scan.Map {
			pos += h.Size
		} else {
			pos = h.End(pos)
		}
	}
	return false
}

// What the checker accepts, the library decodes without an error or a panic.
func FuzzCheckThenDecode(f *testing.F) {
	when := time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, v := range []any{
		nil, 1, -1, 300, uint64(math.MaxUint64), 1.5, float32(2.5), "s", []byte("b"), true, when,
		[]any{1, 2}, []any{1, "x", nil}, [4]byte{1, 2, 3, 4},
		map[string]any{"name": "n", "data": []byte("d"), "when": when, "tags": []string{"a"}, "level": 3},
		map[string]any{"id": 1, "name": "x", "Base": map[string]any{"id": 2}},
		map[int]string{1: "a", -1: "b"}, map[string]any{"a": []any{map[string]any{"b": nil}}},
		[]any{map[string]any{"when": nil}, map[string]any{"A": 1, "B": 2}},
	} {
		f.Add(enc(f, v))
	}
	f.Add([]byte{0x81, 0x91, 0x01, 0x02})
	f.Add(ts(1, 2, 3, 4, 5))
	targets := []func() any{
		func() any { return new(Event) }, func() any { return new([]Event) }, func() any { return new(Args) },
		func() any { return new([]int8) }, func() any { return new(map[int]string) }, func() any { return new(map[string]any) },
		func() any { return new(float32) }, func() any { return new(Temp) }, func() any { return new(float64) },
		func() any { return new(uint64) }, func() any { return new(Level) }, func() any { return new(any) },
		func() any { return new([2]int) }, func() any { return new([4]byte) }, func() any { return new(time.Time) },
		func() any { return new(*time.Time) }, func() any { return new(WithBase) }, func() any { return new(ShadowBefore) },
		func() any { return new(fmt.Stringer) }, func() any { return new(error) }, func() any { return new(QuickValue) },
		func() any { return new(map[any]int) }, func() any { return new(map[[2]int]any) },
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if end, err := scan.Skip(data, 0); err != nil || end != len(data) || hasOtherExt(data) {
			return // the frame decoder lets only one well-formed object through
		}
		for _, target := range targets {
			v := target()
			rv := reflect.ValueOf(v).Elem()
			checked, err := check.Arg(data, rv.Type())
			if err != nil {
				continue
			}
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("%s: accepted %x, and the library panicked: %v", rv.Type(), data, r)
					}
				}()
				d := msgpack.NewDecoder(bytes.NewReader(checked))
				d.SetMapDecoder(decodeMap)
				if err := d.DecodeValue(rv); err != nil {
					t.Fatalf("%s: accepted %x, and the library refused it: %v", rv.Type(), data, err)
				}
			}()
		}
	})
}
