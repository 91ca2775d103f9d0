package scan

import (
	"errors"
	"fmt"
)

// MaxNesting bounds how deeply arrays and maps may nest in one payload, so
// that hostile input cannot exhaust the stack of a recursive decoder.
const MaxNesting = 10000

// errEarly is the error of an object that ends before its header or data does.
var errEarly = errors.New("object ends early")

// Skip checks that b[pos:] starts with one well-formed msgpack object and
// returns the offset just past it. It is iterative, so nesting cannot blow the
// stack, and it refuses nesting deeper than MaxNesting. It reads headers only:
// a large str or bin costs the same as a small one.
func Skip(b []byte, pos int) (int, error) {
	// stack holds, for each open container, how many objects it still expects.
	var stackBuf [16]int
	stack := append(stackBuf[:0], 1)
	for len(stack) > 0 {
		top := len(stack) - 1
		if stack[top] == 0 {
			stack = stack[:top]
			continue
		}
		stack[top]--
		if pos >= len(b) {
			return 0, errEarly
		}
		c := b[pos]
		r := &rules[c]
		kind, size, n, ok := r.kind, 0, 0, false
		if r.lenSize == 0 { // span, with no call for the objects most payloads are made of
			size, n, ok = r.short(len(b) - pos)
		} else {
			_, size, n, ok = spanLength(b, pos, r)
		}
		if !ok {
			if kind == Invalid {
				return 0, fmt.Errorf("reserved byte %#x at offset %d", c, pos)
			}
			return 0, errEarly
		}
		pos += size
		var children uint64
		switch kind {
		case Array:
			children = uint64(n)
		case Map:
			children = 2 * uint64(n)
		default:
			pos += n
			continue
		}
		if children == 0 {
			continue
		}
		// Every child takes at least one byte.
		if children > uint64(len(b)-pos) {
			return 0, fmt.Errorf("container of %d objects ends early", children)
		}
		if len(stack) > MaxNesting {
			return 0, fmt.Errorf("nesting deeper than %d", MaxNesting)
		}
		stack = append(stack, int(children))
	}
	return pos, nil
}
