package check

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

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

type Base struct{ ID int }

// A large bin costs the checker no more than a small one: it reads headers only.
func TestCheckDoesNotReadBin(t *testing.T) {
	big := enc(t, make([]byte, 1<<20))
	for i := 5; i < len(big); i++ {
		big[i] = 0xc1 // never valid msgpack: reading it would fail
	}
	for _, typ := range []reflect.Type{reflect.TypeOf([]byte(nil)), anyType, reflect.TypeOf([]any(nil)).Elem()} {
		if _, err := Arg(big, typ); err != nil {
			t.Errorf("%s: %v", typ, err)
		}
	}
}

func TestCheckReply(t *testing.T) {
	type E struct{ When time.Time }
	y12000 := time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name  string
		value any
		want  string // "" for nothing to report
	}{
		{"ints", []int{1, 2}, ""},
		{"year 1", time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), ""},
		{"the zero time", time.Time{}, ""},
		{"year 9999", time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC), ""},
		{"year 10000", time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), "time 10000-01-01T00:00:00Z is outside years 1-9999"},
		{"year 0", time.Date(0, 12, 31, 23, 59, 59, 0, time.UTC), "time 0000-12-31T23:59:59Z is outside years 1-9999"},
		{"deep in a list", []any{1, 2, 3, E{y12000}}, "[3].When: time 12000-01-01T00:00:00Z is outside years 1-9999"},
		{"under a quoted key", map[string]any{"a b": []time.Time{y12000}}, `["a b"][0]: time 12000-01-01T00:00:00Z is outside years 1-9999`},
		{"under an int key", map[int]any{7: y12000}, "[7]: time 12000-01-01T00:00:00Z is outside years 1-9999"},
		{"an array key", map[[2]int]int{{1, 2}: 3}, "a map key is an array (2 items); the Python client cannot use it as a dict key"},
		{"a struct key", map[string]any{"m": map[Base]int{{1}: 2}}, "m: a map key is a map (1 entry); the Python client cannot use it as a dict key"},
		{"bin keys are fine", map[any]any{"x": map[string]any{}, 1.5: nil}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			e := msgpack.NewEncoder(&buf)
			e.UseCompactInts(true)
			if err := e.Encode(c.value); err != nil {
				t.Fatal(err)
			}
			err := Reply(buf.Bytes())
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want != "" && (err == nil || err.Error() != c.want):
				t.Fatalf("got  %v\nwant %s", err, c.want)
			}
		})
	}
}

func TestCheckReplyNesting(t *testing.T) {
	ok := append(bytes.Repeat([]byte{0x91}, maxReplyNesting-1), 0x90)
	if err := Reply(ok); err != nil {
		t.Fatalf("%d levels: %v", maxReplyNesting, err)
	}
	deep := append(bytes.Repeat([]byte{0x91}, maxReplyNesting), 0x80)
	err := Reply(deep)
	if err == nil || !strings.HasSuffix(err.Error(), "arrays and maps nest deeper than 1023 levels; the Python client cannot decode that") {
		t.Fatalf("%d levels: %v", maxReplyNesting+1, err)
	}
	// Iterative: far deeper nesting than any stack would take is no problem.
	if err := Reply(append(bytes.Repeat([]byte{0x91}, 1<<20), 0xc0)); err == nil {
		t.Fatal("a million levels accepted")
	}
	if _, err := walkValue(append(bytes.Repeat([]byte{0x91}, 1<<20), 0xc0), 0, argRules, "any"); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkCheckReply(b *testing.B) {
	small := enc(b, map[string]any{"hello": "Reasno", "n": 1, "t": time.Now(), "l": []any{1.5, "x"}})
	large := enc(b, make([]byte, 16<<20))
	for _, c := range []struct {
		name string
		data []byte
	}{{"Small", small}, {"16MiB", large}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if err := Reply(c.data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
