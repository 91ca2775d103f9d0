package gotask

import (
	"fmt"
	"math"
	"reflect"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// The msgpack library converts an integer into a narrower Go integer type by
// wrapping it (300 into an int8 is 44, -1 into a uint64 is 2^64-1). The
// protocol maps an integer only to a type that holds it (protocol.md section
// 3), so these decoders refuse the rest, and the call is answered bad_params.
// They are registered for the predeclared integer types; a named integer type
// (type Level int8) still gets the library's conversion.
func init() {
	for _, v := range []any{int(0), int8(0), int16(0), int32(0), int64(0), uint(0), uint8(0), uint16(0), uint32(0), uint64(0)} {
		msgpack.Register(v, nil, decodeInteger)
	}
}

func decodeInteger(d *msgpack.Decoder, v reflect.Value) error {
	c, err := d.PeekCode()
	if err != nil {
		return err
	}
	var i int64  // the value, when negative
	var u uint64 // the value, when not
	switch {
	case c <= msgpcode.PosFixedNumHigh, c == msgpcode.Uint8, c == msgpcode.Uint16, c == msgpcode.Uint32, c == msgpcode.Uint64:
		u, err = d.DecodeUint64()
	default: // signed codes, and nil, and what the library refuses with its own error
		i, err = d.DecodeInt64()
		if i >= 0 {
			u, i = uint64(i), 0
		}
	}
	if err != nil {
		return err
	}
	switch v.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if i < 0 {
			if v.OverflowInt(i) {
				return overflow(v, fmt.Sprint(i))
			}
			v.SetInt(i)
			return nil
		}
		if u > math.MaxInt64 || v.OverflowInt(int64(u)) {
			return overflow(v, fmt.Sprint(u))
		}
		v.SetInt(int64(u))
	default:
		if i < 0 {
			return overflow(v, fmt.Sprint(i))
		}
		if v.OverflowUint(u) {
			return overflow(v, fmt.Sprint(u))
		}
		v.SetUint(u)
	}
	return nil
}

func overflow(v reflect.Value, n string) error {
	return fmt.Errorf("msgpack: %s does not fit in %s", n, v.Type())
}
