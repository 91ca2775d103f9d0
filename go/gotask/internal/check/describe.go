package check

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/trio-gotask/trio-gotask/go/gotask/internal/scan"
)

// Timestamps a Python datetime can hold: years 1 to 9999, UTC.
const (
	minPySeconds = -62135596800 // 0001-01-01T00:00:00Z
	maxPySeconds = 253402300799 // 9999-12-31T23:59:59Z
)

// PyTime reports whether Python can hold t: years 1 to 9999.
func PyTime(t time.Time) bool {
	s := t.Unix()
	return s >= minPySeconds && s <= maxPySeconds
}

// timestampExt is the extension type of a msgpack timestamp.
const timestampExt = -1

// timestamp decodes the data of a timestamp extension. It reports
// false for a length other than 4, 8 or 12 bytes, or nanoseconds past 10^9-1.
func timestamp(data []byte) (sec int64, nsec uint32, ok bool) {
	switch len(data) {
	case 4:
		return int64(binary.BigEndian.Uint32(data)), 0, true
	case 8:
		v := binary.BigEndian.Uint64(data)
		sec, nsec = int64(v&(1<<34-1)), uint32(v>>34)
	case 12:
		nsec, sec = binary.BigEndian.Uint32(data), int64(binary.BigEndian.Uint64(data[4:]))
	default:
		return 0, 0, false
	}
	return sec, nsec, nsec < 1e9
}

// describe says what the object at b[pos:] with header h is, for a message:
// its msgpack type and, where short, its value.
func describe(b []byte, pos int, h *scan.Head) string {
	switch h.Kind {
	case scan.Nil:
		return "nil"
	case scan.Bool:
		return fmt.Sprintf("bool %t", h.V == 1)
	case scan.Int:
		if h.Neg {
			return "int " + strconv.FormatInt(h.Int(), 10)
		}
		return "int " + strconv.FormatUint(h.Uint(), 10)
	case scan.Float32:
		return "float " + strconv.FormatFloat(h.Float(), 'g', -1, 32)
	case scan.Float64:
		return "float " + strconv.FormatFloat(h.Float(), 'g', -1, 64)
	case scan.Str:
		if h.N <= 32 {
			return "str " + strconv.Quote(string(h.Data(b, pos)))
		}
		return fmt.Sprintf("str (%d bytes)", h.N)
	case scan.Bin:
		return fmt.Sprintf("bin (%s)", plural(h.N, "byte"))
	case scan.Array:
		return fmt.Sprintf("array (%s)", plural(h.N, "item"))
	case scan.Map:
		return fmt.Sprintf("map (%s)", plural(h.N, "entry"))
	}
	data := h.Data(b, pos)
	if h.Ext == timestampExt {
		if sec, nsec, ok := timestamp(data); ok {
			return "timestamp " + time.Unix(sec, int64(nsec)).UTC().Format(time.RFC3339Nano)
		}
		return fmt.Sprintf("malformed timestamp (%s)", plural(len(data), "byte"))
	}
	return fmt.Sprintf("ext %d (%s)", h.Ext, plural(len(data), "byte"))
}

// withArticle puts "a" or "an" before a description.
func withArticle(s string) string {
	if s != "" && strings.ContainsRune("aeiou", rune(s[0])) {
		return "an " + s
	}
	return "a " + s
}

func plural(n int, what string) string {
	switch {
	case n == 1:
		return "1 " + what
	case what == "entry":
		return strconv.Itoa(n) + " entries"
	}
	return strconv.Itoa(n) + " " + what + "s"
}

// keySegment is the path segment of the value under the map key at b[pos:]:
// .name for a key that reads as an identifier, ["a b"] for another string,
// [5] for an integer, and the key's description in brackets otherwise.
func keySegment(b []byte, pos int) string {
	h, ok := scan.ReadHead(b, pos)
	if !ok {
		return "[?]"
	}
	switch h.Kind {
	case scan.Str:
		return nameSegment(string(h.Data(b, pos)))
	case scan.Int:
		if h.Neg {
			return "[" + strconv.FormatInt(h.Int(), 10) + "]"
		}
		return "[" + strconv.FormatUint(h.Uint(), 10) + "]"
	}
	return "[" + describe(b, pos, &h) + "]"
}

// nameSegment is the path segment of the value under the string key name.
func nameSegment(name string) string {
	if isIdent(name) {
		return "." + name
	}
	return "[" + strconv.Quote(name) + "]"
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// pathError is a value the checkers refuse: what is wrong, and where, as a
// path from the top of the value such as [3].when or tags[2].
type pathError struct {
	rev []string // the path's segments, innermost first
	msg string
}

func (e *pathError) Error() string {
	if len(e.rev) == 0 {
		return e.msg
	}
	const ends = 16 // a longer path shows this many segments at each end
	var buf []byte
	for i := len(e.rev) - 1; i >= 0; i-- {
		s := e.rev[i]
		if len(buf) == 0 && s[0] == '.' {
			s = s[1:]
		}
		if i == len(e.rev)-1-ends && i >= ends {
			buf = append(buf, "..."...)
			i = ends
			continue
		}
		buf = append(buf, s...)
	}
	buf = append(buf, ": "...)
	buf = append(buf, e.msg...)
	return string(buf)
}

// in adds the segment of the value the error is in, one level up.
func (e *pathError) in(seg string) *pathError {
	e.rev = append(e.rev, seg)
	return e
}

func indexSegment(i int) string { return "[" + strconv.Itoa(i) + "]" }

func refuse(format string, args ...any) *pathError {
	return &pathError{msg: fmt.Sprintf(format, args...)}
}

func malformed() *pathError { return &pathError{msg: "malformed msgpack"} }
