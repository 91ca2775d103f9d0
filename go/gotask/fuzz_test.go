package gotask

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"io"
	"testing"
)

// FuzzReadMessage feeds arbitrary streams to the frame reader and message
// parser, then decodes params into the types methods commonly take. Nothing
// may panic, and every failure must be io.EOF or a protocol error.
func FuzzReadMessage(f *testing.F) {
	for _, file := range []string{"values.json", "messages.json", "malformed.json"} {
		for _, v := range loadVectors(f, file) {
			b, _ := hex.DecodeString(v.Hex)
			if file == "values.json" {
				// As the params of a notification: [2, "x", value].
				frame := binary.BigEndian.AppendUint32(nil, uint32(len(b)+3))
				b = append(append(frame, 0x93, 0x02, 0xa1, 'x'), b...)
			}
			f.Add(b)
		}
	}
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		for {
			payload, err := readFrame(r, 1<<16)
			if err == io.EOF {
				return
			}
			if err != nil {
				if errorCode(err) == "" {
					t.Fatalf("readFrame: non-protocol error %v", err)
				}
				return
			}
			m, err := parseMessage(payload)
			if err != nil {
				if errorCode(err) == "" {
					t.Fatalf("parseMessage: non-protocol error %v", err)
				}
				return
			}
			raw := m.params
			if m.typ == typeResponse {
				raw = m.result
			}
			var a any
			decodeValue(raw, &a)
			var im map[int]string
			decodeValue(raw, &im)
			var st struct {
				A int    `msgpack:"a"`
				B []byte `msgpack:"b"`
			}
			decodeValue(raw, &st)
			if m.meta != nil {
				decodeValue(m.meta, &a)
			}
		}
	})
}
