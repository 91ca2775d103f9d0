package check

import (
	"time"

	"github.com/trio-gotask/trio-gotask/go/gotask/internal/scan"
)

// walkRules chooses what walkValue refuses.
type walkRules uint8

const (
	// argRules: an argument decoded into any. Map keys Go cannot hash (an
	// array, a map, bin) and malformed timestamps are refused.
	argRules walkRules = iota
	// replyRules: a reply. Map keys Python cannot hash (an array, a map),
	// times outside years 1-9999 and nesting deeper than the client decodes
	// are refused.
	replyRules
)

// maxReplyNesting is the deepest nesting of arrays and maps a reply may have:
// the Python client's msgpack decoder stops at 1024 levels, and the response
// array around the reply is one of them.
const maxReplyNesting = 1023

// walkFrame is one open array or map of walkValue.
type walkFrame struct {
	isMap  bool
	n      int // objects in the container: twice the entries of a map
	i      int // the object being walked
	keyPos int // map: the offset of the current entry's key
}

// walkValue walks the object at b[pos:] and returns the offset just past it,
// or the first thing rules refuse. typ names the Go type the value decodes
// into, for messages. It is iterative, so nesting cannot exhaust the stack,
// and it steps over the bytes of a str, bin or ext without reading them.
func walkValue(b []byte, pos int, rules walkRules, typ string) (int, *pathError) {
	var buf [16]walkFrame
	stack := buf[:0]
	var h scan.Head
	for {
		if !h.Read(b, pos) {
			return 0, walkError(malformed(), stack, b)
		}
		if n := len(stack); n > 0 && stack[n-1].isMap && stack[n-1].i%2 == 0 {
			stack[n-1].keyPos = pos
			switch {
			case rules == argRules && (h.Kind == scan.Array || h.Kind == scan.Map || h.Kind == scan.Bin):
				return 0, walkError(refuse("expected a map key Go can hash for %s, got %s", typ, describe(b, pos, &h)), stack, b)
			case rules == replyRules && (h.Kind == scan.Array || h.Kind == scan.Map):
				return 0, walkError(refuse("a map key is %s; the Python client cannot use it as a dict key", withArticle(describe(b, pos, &h))), stack, b)
			}
		}
		switch h.Kind {
		case scan.Array, scan.Map:
			if rules == replyRules && len(stack) >= maxReplyNesting {
				return 0, walkError(refuse("arrays and maps nest deeper than %d levels; the Python client cannot decode that", maxReplyNesting), stack, b)
			}
			pos += h.Size
			n := h.N
			if h.Kind == scan.Map {
				n *= 2
			}
			if n > 0 {
				stack = append(stack, walkFrame{isMap: h.Kind == scan.Map, n: n})
				continue
			}
		case scan.Ext:
			if h.Ext == timestampExt {
				sec, nsec, ok := timestamp(h.Data(b, pos))
				switch {
				case rules == argRules && !ok:
					return 0, walkError(refuse("expected a valid timestamp for %s, got %s", typ, describe(b, pos, &h)), stack, b)
				case rules == replyRules && ok && (sec < minPySeconds || sec > maxPySeconds):
					t := time.Unix(sec, int64(nsec)).UTC().Format(time.RFC3339Nano)
					return 0, walkError(refuse("time %s is outside years 1-9999", t), stack, b)
				}
			}
			pos = h.End(pos)
		default:
			pos = h.End(pos)
		}
		// The object is done: move on in its container, closing the finished ones.
		for {
			if len(stack) == 0 {
				return pos, nil
			}
			top := &stack[len(stack)-1]
			if top.i++; top.i < top.n {
				break
			}
			stack = stack[:len(stack)-1]
		}
	}
}

// walkError adds to e the path of the object walkValue was at.
func walkError(e *pathError, stack []walkFrame, b []byte) *pathError {
	for k := len(stack) - 1; k >= 0; k-- {
		f := &stack[k]
		switch {
		case !f.isMap:
			e.in(indexSegment(f.i))
		case f.i%2 == 1: // in a value: name it by its key
			e.in(keySegment(b, f.keyPos))
		}
	}
	return e
}

// Reply scans result, one encoded msgpack object (a reply), for what the
// Python client cannot represent: a timestamp outside years 1-9999 (UTC), a
// map key that is an array or a map (dict keys must be hashable, and the
// client decodes those as list and dict), and arrays and maps nested deeper
// than its decoder goes. The error says what and where, such as
// "[3].when: time 12000-01-01T00:00:00Z is outside years 1-9999". It reads
// only headers: a large bin or str costs the same as a small one.
func Reply(result []byte) error {
	if _, err := walkValue(result, 0, replyRules, ""); err != nil {
		return err
	}
	return nil
}
