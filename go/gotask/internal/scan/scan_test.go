package scan

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// librarySkip is where the msgpack library's own decoder ends the object at
// the start of b, or -1 where it refuses it.
func librarySkip(b []byte) int {
	r := bytes.NewReader(b)
	if err := msgpack.NewDecoder(r).Skip(); err != nil {
		return -1
	}
	return len(b) - r.Len()
}

// Skip ends every object where the library does, and refuses what it refuses,
// for every first byte. The bytes after the first give each length field the
// values 0 and 1 (and 257, 65793... for the longer ones, which end early).
func TestSkipAgreesWithTheLibrary(t *testing.T) {
	for _, fill := range []byte{0x00, 0x01} {
		tail := bytes.Repeat([]byte{fill}, 1100)
		for c := 0; c < 256; c++ {
			b := append([]byte{byte(c)}, tail...)
			want := librarySkip(b)
			end, err := Skip(b, 0)
			if err != nil {
				end = -1
			}
			if end != want {
				t.Errorf("first byte %#02x, then %#02x...: Skip = %d, %v; the library ends it at %d", c, fill, end, err, want)
			}
		}
	}
}

// ReadHead reads the value of every scalar as the library decodes it.
func TestReadHeadAgreesWithTheLibrary(t *testing.T) {
	values := []any{
		nil, true, false, 0, 1, 127, 128, 255, 256, 65535, 65536, math.MaxUint32, uint64(math.MaxUint32) + 1,
		uint64(math.MaxUint64), -1, -32, -33, -128, -129, -32768, -32769, math.MinInt32, int64(math.MinInt32) - 1,
		int64(math.MinInt64), float32(1.5), -2.25, math.Inf(1), "", "x", strings.Repeat("s", 31),
		strings.Repeat("s", 32), strings.Repeat("s", 256), strings.Repeat("s", 65536), []byte{}, []byte("bin"),
		make([]byte, 300), []any{}, []any{1, 2}, make([]any, 16), make([]any, 65536), map[string]any{},
		map[string]any{"a": 1}, msgpack.RawMessage{0xd4, 0x05, 0x07}, msgpack.RawMessage{0xc7, 0x03, 0x05, 1, 2, 3},
	}
	for _, v := range values {
		var buf bytes.Buffer
		e := msgpack.NewEncoder(&buf)
		e.UseCompactInts(true)
		e.UseCompactFloats(false)
		if err := e.Encode(v); err != nil {
			t.Fatal(err)
		}
		b := buf.Bytes()
		h, ok := ReadHead(b, 0)
		if !ok {
			t.Errorf("%T %.40v: not read", v, v)
			continue
		}
		got := any(nil)
		switch h.Kind {
		case Bool:
			got = h.V == 1
		case Int:
			if h.Neg {
				got = h.Int()
			} else {
				got = h.Uint()
			}
		case Float32, Float64:
			got = h.Float()
		case Str, Bin, Ext, Array, Map:
			got = h.N
		}
		var want any
		d := msgpack.NewDecoder(bytes.NewReader(b))
		switch h.Kind {
		case Int:
			n, err := d.DecodeInt64()
			if err != nil {
				t.Fatal(err)
			}
			if h.Neg {
				want = n
			} else {
				u, _ := msgpack.NewDecoder(bytes.NewReader(b)).DecodeUint64()
				want = u
			}
		case Float32, Float64:
			want, _ = d.DecodeFloat64()
		case Bool:
			want, _ = d.DecodeBool()
		case Str, Bin:
			s, _ := d.DecodeBytes()
			want = len(s)
		case Array:
			want, _ = d.DecodeArrayLen()
		case Map:
			want, _ = d.DecodeMapLen()
		case Ext:
			want = len(b) - h.Size
		}
		if got != want {
			t.Errorf("%T %.40v: ReadHead read %v (%T), the library %v (%T)", v, v, got, got, want, want)
		}
		if end := librarySkip(b); h.Kind != Array && h.Kind != Map && h.End(0) != end {
			t.Errorf("%T %.40v: ReadHead ends it at %d, the library at %d", v, v, h.End(0), end)
		}
	}
}

func TestNestingLimit(t *testing.T) {
	deep := append(bytes.Repeat([]byte{0x91}, MaxNesting+10), 0xc0)
	if _, err := Skip(deep, 0); err == nil || !strings.Contains(err.Error(), "nesting deeper than") {
		t.Fatalf("deep nesting: %v", err)
	}
	ok := append(bytes.Repeat([]byte{0x91}, 100), 0xc0)
	if end, err := Skip(ok, 0); err != nil || end != len(ok) {
		t.Fatalf("moderate nesting: %d, %v", end, err)
	}
	// A huge declared length in a tiny payload fails fast, without allocating.
	if _, err := Skip([]byte{0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0}, 0); err == nil || !strings.Contains(err.Error(), "ends early") {
		t.Fatalf("huge array: %v", err)
	}
}

func TestCursorLeavesOtherKindsUnread(t *testing.T) {
	b := []byte{0xff, 0xa1, 'x', 0x05} // -1, "x", 5
	c := Cursor{B: b}
	if _, ok := c.Uint(); ok || c.P != 0 {
		t.Fatalf("Uint read -1: at %d", c.P)
	}
	if f, ok := c.Number(); !ok || f != -1 || c.P != 1 {
		t.Fatalf("Number = %v, %v at %d", f, ok, c.P)
	}
	if _, ok := c.ArrayLen(); ok || c.P != 1 {
		t.Fatal("ArrayLen read a string")
	}
	if s, ok := c.Str(); !ok || s != "x" {
		t.Fatalf("Str = %q, %v", s, ok)
	}
	if u, ok := c.Uint(); !ok || u != 5 || c.P != len(b) {
		t.Fatalf("Uint = %d, %v", u, ok)
	}
}

// BenchmarkSkip measures Skip on many small objects of the usual kinds, where
// its per-object cost shows.
func BenchmarkSkip(b *testing.B) {
	var items []any
	for i := 0; i < 1000; i++ {
		items = append(items, i*300, "a string longer than thirty-one bytes", 1.5, nil, map[string]any{"k": -5}, []byte{1, 2})
	}
	payload, err := msgpack.Marshal(items)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := Skip(payload, 0); err != nil {
			b.Fatal(err)
		}
	}
}
