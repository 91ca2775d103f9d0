package gotask

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"reflect"
	"sync"
	"time"

	"github.com/trio-gotask/trio-gotask/go/gotask/internal/check"
	"github.com/vmihailenco/msgpack/v5"
)

// encBuf is a pooled buffer holding one outgoing frame, with the encoder bound to it.
// The first four bytes are reserved for the length prefix.
type encBuf struct {
	buf     bytes.Buffer
	enc     *msgpack.Encoder
	release bool       // a reply whose call's in-flight slot the writer frees (conn.reply)
	stream  *outStream // an item's stream, told when the writer takes it (conn.taken)
}

// maxPooledBuf is the largest buffer returned to the pool; bigger ones are dropped
// so that one huge reply does not pin its memory forever.
const maxPooledBuf = 1 << 20

var encPool = sync.Pool{New: func() any {
	e := new(encBuf)
	e.enc = msgpack.NewEncoder(&e.buf)
	e.enc.UseCompactInts(true) // smallest encoding for every integer
	return e
}}

func getEncBuf() *encBuf {
	e := encPool.Get().(*encBuf)
	e.release = false
	e.stream = nil
	e.buf.Reset()
	e.buf.Write([]byte{0, 0, 0, 0})
	return e
}

func putEncBuf(e *encBuf) {
	if e.buf.Cap() <= maxPooledBuf {
		encPool.Put(e)
	}
}

// frame fills in the length prefix and returns the whole frame.
func (e *encBuf) frame() ([]byte, error) {
	b := e.buf.Bytes()
	n := len(b) - 4
	if uint64(n) > math.MaxUint32 {
		return nil, fmt.Errorf("frame of %d bytes is too large for the wire", n)
	}
	binary.BigEndian.PutUint32(b, uint32(n))
	return b, nil
}

type decBuf struct {
	r   bytes.Reader
	dec *msgpack.Decoder
}

var decPool = sync.Pool{New: func() any {
	d := new(decBuf)
	d.dec = msgpack.NewDecoder(&d.r)
	return d
}}

// decodeValue decodes one msgpack object into v, which must be a non-nil
// pointer, under the protocol's rules (protocol.md section 3): check.Arg
// refuses what they refuse, with a message that says what and where, and the
// library decodes the rest. A panic in the library (or in a type's own
// decoder) becomes an error.
func decodeValue(data []byte, v any) (err error) {
	rv := reflect.ValueOf(v).Elem()
	if data, err = check.Arg(data, rv.Type()); err != nil {
		return err
	}
	d := decPool.Get().(*decBuf)
	d.r.Reset(data)
	d.dec.ResetReader(&d.r)
	d.dec.SetMapDecoder(decodeMap) // ResetReader clears it
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("decoding %s: panic: %v", check.TypeName(rv.Type()), r)
			return // the decoder may be in any state: drop it
		}
		d.r.Reset(nil)
		decPool.Put(d)
	}()
	// DecodeValue, not Decode: Decode's fast paths for some pointer types
	// (*time.Time among them) follow other rules than the decoders of the
	// same types inside a struct or a slice.
	if err := d.dec.DecodeValue(rv); err != nil {
		return fmt.Errorf("decoding %s: %w", check.TypeName(rv.Type()), err)
	}
	return nil
}

// decodeMap decodes a map into an interface value: map[string]any when every key
// is a string, map[any]any otherwise (int-keyed maps).
func decodeMap(d *msgpack.Decoder) (any, error) {
	n, err := d.DecodeMapLen()
	if err != nil {
		return nil, err
	}
	if n == -1 {
		return nil, nil
	}
	sm := make(map[string]any, min(n, 64))
	var am map[any]any
	for i := 0; i < n; i++ {
		k, err := d.DecodeInterface()
		if err != nil {
			return nil, err
		}
		v, err := d.DecodeInterface()
		if err != nil {
			return nil, err
		}
		if am == nil {
			if s, ok := k.(string); ok {
				sm[s] = v
				continue
			}
			am = make(map[any]any, len(sm)+1)
			for ks, vs := range sm {
				am[ks] = vs
			}
		}
		if !hashable(k) {
			return nil, fmt.Errorf("expected a map key Go can hash for any, got %T", k)
		}
		am[k] = v
	}
	if am != nil {
		return am, nil
	}
	return sm, nil
}

func hashable(k any) bool {
	switch k.(type) {
	case nil, bool, string, float32, float64, time.Time,
		int8, int16, int32, int64, uint8, uint16, uint32, uint64:
		return true
	}
	return false
}
