package gotask

import (
	"bytes"
	"testing"
)

// TestSkipObjectAgreesWithReadHead checks the frame scanner's rule for every
// first byte against the checker's header reader: both must find the same
// end, or both refuse. The bytes after the first give each length field the
// values 0 and 1 (and 257, 65793... for the longer ones, which end early).
func TestSkipObjectAgreesWithReadHead(t *testing.T) {
	for _, fill := range []byte{0x00, 0x01} {
		tail := bytes.Repeat([]byte{fill}, 1100)
		for c := 0; c < 256; c++ {
			b := append([]byte{byte(c)}, tail...)
			// Each item is a one-byte fixint, so a container ends after its
			// header and one byte per item.
			want, ok := -1, false
			if h, hok := readHead(b, 0); hok {
				switch h.kind {
				case vArray:
					want = h.size + h.n
				case vMap:
					want = h.size + 2*h.n
				default:
					want = h.end(0)
				}
				ok = want <= len(b)
			}
			end, err := skipObject(b, 0)
			switch {
			case ok && (err != nil || end != want):
				t.Errorf("first byte %#02x, then %#02x...: skipObject = %d, %v; readHead says it ends at %d", c, fill, end, err, want)
			case !ok && err == nil:
				t.Errorf("first byte %#02x, then %#02x...: skipObject = %d; readHead refuses it", c, fill, end)
			}
		}
	}
}
