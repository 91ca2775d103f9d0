package gotask

import (
	"math"
	"strings"
	"testing"
)

func TestIntegersThatDoNotFitAreRefused(t *testing.T) {
	type S struct{ A int16 }
	cases := []struct {
		name   string
		value  any // what the client sends
		target any // a pointer to what the method takes
	}{
		{"300 into int8", 300, new(int8)},
		{"-129 into int8", -129, new(int8)},
		{"-1 into uint8", -1, new(uint8)},
		{"-1 into uint64", -1, new(uint64)},
		{"2^63 into int64", uint64(1) << 63, new(int64)},
		{"2^63 into int", uint64(1) << 63, new(int)},
		{"2^32 into uint32", uint64(1) << 32, new(uint32)},
		{"70000 into a struct's int16", map[string]any{"A": 70000}, new(S)},
		{"300 in a []int8", []any{1, 300}, new([]int8)},
		{"-1 as a map[uint16]string key", map[int]string{-1: "x"}, new(map[uint16]string)},
	}
	for _, c := range cases {
		data, err := marshalCompact(c.value)
		if err != nil {
			t.Fatal(err)
		}
		err = decodeValue(data, c.target)
		if err == nil || !strings.Contains(err.Error(), "does not fit in") {
			t.Errorf("%s: got %v, want a 'does not fit in' error", c.name, err)
		}
	}
}

func TestIntegersThatFitDecodeAsBefore(t *testing.T) {
	check := func(name string, value, target, want any, got func() any) {
		t.Helper()
		data, err := marshalCompact(value)
		if err != nil {
			t.Fatal(err)
		}
		if err := decodeValue(data, target); err != nil {
			t.Errorf("%s: %v", name, err)
		} else if got() != want {
			t.Errorf("%s: got %v, want %v", name, got(), want)
		}
	}
	var i8 int8
	check("127 into int8", 127, &i8, int8(127), func() any { return i8 })
	check("-128 into int8", -128, &i8, int8(-128), func() any { return i8 })
	check("nil into int8", nil, &i8, int8(0), func() any { return i8 })
	var u8 uint8
	check("255 into uint8", 255, &u8, uint8(255), func() any { return u8 })
	var u64 uint64
	check("2^64-1 into uint64", uint64(math.MaxUint64), &u64, uint64(math.MaxUint64), func() any { return u64 })
	var i64 int64
	check("-2^63 into int64", int64(math.MinInt64), &i64, int64(math.MinInt64), func() any { return i64 })
	check("2^63-1 into int64", uint64(math.MaxInt64), &i64, int64(math.MaxInt64), func() any { return i64 })
	var s struct{ A int16 }
	check("-32768 into a struct's int16", map[string]any{"A": -32768}, &s, int16(-32768), func() any { return s.A })
	var b []byte
	check("bin into []byte", []byte{1, 2, 255}, &b, "\x01\x02\xff", func() any { return string(b) })
}

func TestIntegerCodesTheLibraryRefusesStillFail(t *testing.T) {
	data, err := marshalCompact("12")
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := decodeValue(data, &n); err == nil {
		t.Fatalf("a string decoded into an int: %d", n)
	}
}
