package check

import (
	"reflect"
	"testing"
	"time"
)

type inner struct {
	When time.Time
	Done chan int `msgpack:"done"`
}

type outer struct {
	Name   string
	hidden chan int
	Skip   chan int `msgpack:"-"`
	Items  []inner  `msgpack:"items"`
}

type selfEncoding struct{ C chan int }

func (selfEncoding) MarshalMsgpack() ([]byte, error) { return []byte{0xc0}, nil }

func TestUnencodableSaysWhere(t *testing.T) {
	loop := &struct{ Next any }{}
	loop.Next = loop
	selfMap := map[string]any{}
	selfMap["self"] = selfMap
	for _, c := range []struct {
		value any
		path  string
		typ   any
	}{
		{make(chan int), "", make(chan int)},
		{outer{Items: []inner{{Done: make(chan int)}}}, ".items[0].done", make(chan int)},
		{outer{Items: []inner{{}}}, ".items[0].done", make(chan int)}, // a nil channel fails too
		{map[string]any{"a b": []any{1, func() {}}}, `["a b"][1]`, func() {}},
		{map[any]int{complex(1, 2): 1}, "[key (1+2i)]", complex(1, 2)},
		{map[int]any{7: &struct{ X complex64 }{}}, "[7].X", complex64(0)},
		{outer{hidden: make(chan int), Skip: make(chan int)}, "", nil},
		{selfEncoding{C: make(chan int)}, "", nil},
		{loop, "", nil},
		{selfMap, "", nil},
		{[]byte("fine"), "", nil},
	} {
		path, typ := Unencodable(c.value)
		var want reflect.Type
		if c.typ != nil {
			want = reflect.TypeOf(c.typ)
		}
		if path != c.path || typ != want {
			t.Errorf("%#v: %q %v, want %q %v", c.value, path, typ, c.path, want)
		}
	}
}
