package gotask

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/trio-gotask/trio-gotask/go/gotask/internal/scan"
	"github.com/vmihailenco/msgpack/v5"
)

const vectorDir = "../../tests/vectors"

type valueVector struct {
	Name      string          `json:"name"`
	Hex       string          `json:"hex"`
	Value     json.RawMessage `json:"value"`
	Message   json.RawMessage `json:"message"`
	Canonical bool            `json:"canonical"`
	Error     string          `json:"error"`
	MaxFrame  uint32          `json:"max_frame_size"`
	// Metadata is what a receiver reads from a request's meta "metadata";
	// empty when nothing.
	Metadata map[string]string `json:"metadata"`
}

func loadVectors(t testing.TB, name string) []valueVector {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(vectorDir, name))
	if err != nil {
		t.Fatal(err)
	}
	var vs []valueVector
	if err := json.Unmarshal(data, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) == 0 {
		t.Fatalf("%s: no vectors", name)
	}
	return vs
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fromJSON turns a tagged JSON value (protocol.md section 6) into the Go value
// the codec should produce or accept.
func fromJSON(t testing.TB, raw json.RawMessage) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	// Objects must keep their key order for $map, so re-read those with a token walk.
	return convertJSON(t, raw, v)
}

func convertJSON(t testing.TB, raw json.RawMessage, v any) any {
	switch x := v.(type) {
	case nil, bool, string:
		return x
	case json.Number:
		s := x.String()
		if strings.ContainsAny(s, ".eE") {
			f, err := x.Float64()
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
		if i, err := x.Int64(); err == nil {
			return i
		}
		var u uint64
		if _, err := fmt.Sscan(s, &u); err != nil {
			t.Fatal(err)
		}
		return u
	case []any:
		var raws []json.RawMessage
		if err := json.Unmarshal(raw, &raws); err != nil {
			t.Fatal(err)
		}
		out := make([]any, len(x))
		for i := range x {
			out[i] = convertJSON(t, raws[i], x[i])
		}
		return out
	case map[string]any:
		var raws map[string]json.RawMessage
		if err := json.Unmarshal(raw, &raws); err != nil {
			t.Fatal(err)
		}
		if len(x) == 1 {
			for k, inner := range x {
				switch k {
				case "$float":
					return math.Inf(map[string]int{"inf": 1, "-inf": -1}[inner.(string)])
				case "$f32":
					f, _ := inner.(json.Number).Float64()
					return float32(f)
				case "$bin":
					b, err := hex.DecodeString(inner.(string))
					if err != nil {
						t.Fatal(err)
					}
					return b
				case "$ts":
					p := inner.([]any)
					s, _ := p[0].(json.Number).Int64()
					ns, _ := p[1].(json.Number).Int64()
					return time.Unix(s, ns).UTC()
				case "$map":
					var pairs [][]json.RawMessage
					if err := json.Unmarshal(raws[k], &pairs); err != nil {
						t.Fatal(err)
					}
					m := map[any]any{}
					for _, p := range pairs {
						m[fromJSON(t, p[0])] = fromJSON(t, p[1])
					}
					return m
				}
			}
		}
		out := make(map[string]any, len(x))
		for k, inner := range x {
			out[k] = convertJSON(t, raws[k], inner)
		}
		return out
	}
	t.Fatalf("unexpected JSON value %T", v)
	return nil
}

// normalize maps every integer to int64 (or uint64 above MaxInt64) and every
// time to UTC, so that values decoded as sized types compare with the JSON ones.
func normalize(v any) any {
	rv := reflect.ValueOf(v)
	switch x := v.(type) {
	case nil:
		return nil
	case time.Time:
		return x.UTC()
	case []byte:
		return x
	case []any:
		out := make([]any, len(x))
		for i := range x {
			out[i] = normalize(x[i])
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = normalize(e)
		}
		return out
	case map[any]any:
		out := make(map[any]any, len(x))
		for k, e := range x {
			out[normalize(k)] = normalize(e)
		}
		return out
	}
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if u := rv.Uint(); u > math.MaxInt64 {
			return u
		}
		return int64(rv.Uint())
	}
	return v
}

func encodeValue(t testing.TB, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	enc.SetSortMapKeys(true)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestVectorValues(t *testing.T) {
	for _, v := range loadVectors(t, "values.json") {
		t.Run(v.Name, func(t *testing.T) {
			want := fromJSON(t, v.Value)
			data := mustHex(t, v.Hex)
			var got any
			if err := decodeValue(data, &got); err != nil {
				t.Fatalf("decode %s: %v", v.Hex, err)
			}
			if !reflect.DeepEqual(normalize(got), normalize(want)) {
				t.Fatalf("decoded %#v, want %#v", got, want)
			}
			if _, isBin := want.([]byte); isBin {
				if _, ok := got.([]byte); !ok {
					t.Fatalf("bin decoded as %T", got)
				}
			}
			if v.Canonical {
				if enc := encodeValue(t, want); !bytes.Equal(enc, data) {
					t.Fatalf("encoded %x, want %s", enc, v.Hex)
				}
				// What Echo sends back must be the same bytes too.
				if enc := encodeValue(t, got); !bytes.Equal(enc, data) {
					t.Fatalf("re-encoded %x, want %s", enc, v.Hex)
				}
			}
		})
	}
}

// encodeFrame encodes a message given as tagged JSON (protocol.md section 6)
// the way a client does: compact ints, the value's own types, and the keys of
// a map in the order the JSON has them.
func encodeFrame(t testing.TB, msg json.RawMessage) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	encodeOrdered(t, enc, msg)
	payload := buf.Bytes()
	return append([]byte{byte(len(payload) >> 24), byte(len(payload) >> 16), byte(len(payload) >> 8), byte(len(payload))}, payload...)
}

// encodeOrdered encodes the tagged JSON value raw with enc, keeping the key
// order of its maps.
func encodeOrdered(t testing.TB, enc *msgpack.Encoder, raw json.RawMessage) {
	t.Helper()
	raw = bytes.TrimSpace(raw)
	switch raw[0] {
	case '[':
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			t.Fatal(err)
		}
		enc.EncodeArrayLen(len(items))
		for _, item := range items {
			encodeOrdered(t, enc, item)
		}
		return
	case '{':
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.Token() // {
		var keys []string
		var values []json.RawMessage
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				t.Fatal(err)
			}
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				t.Fatal(err)
			}
			keys, values = append(keys, k.(string)), append(values, v)
		}
		if len(keys) != 1 || !strings.HasPrefix(keys[0], "$") {
			enc.EncodeMapLen(len(keys))
			for i, k := range keys {
				enc.EncodeString(k)
				encodeOrdered(t, enc, values[i])
			}
			return
		}
	}
	if err := enc.Encode(fromJSON(t, raw)); err != nil { // a scalar or a tagged value
		t.Fatal(err)
	}
}

// parseItem decodes an item's payload, [3, msgid, item], as a client does;
// the sidecar's parseMessage refuses it.
func parseItem(payload []byte) (msgid uint32, item []byte, err error) {
	if _, err := scan.Skip(payload, 0); err != nil {
		return 0, nil, err
	}
	c := scan.Cursor{B: payload}
	if n, ok := c.ArrayLen(); !ok || n != 3 {
		return 0, nil, errors.New("an item is not an array of 3")
	}
	if typ, ok := c.Uint(); !ok || typ != typeItem {
		return 0, nil, errors.New("an item's type is not 3")
	}
	if msgid, err = readMsgid(&c); err != nil {
		return 0, nil, err
	}
	return msgid, c.Raw(), nil
}

func TestVectorMessages(t *testing.T) {
	for _, v := range loadVectors(t, "messages.json") {
		t.Run(v.Name, func(t *testing.T) {
			want := fromJSON(t, v.Message).([]any)
			data := mustHex(t, v.Hex)
			payload, err := readFrame(bytes.NewReader(data), DefaultMaxFrameSize)
			if err != nil {
				t.Fatal(err)
			}
			raw := func(b []byte) any {
				var x any
				if err := decodeValue(b, &x); err != nil {
					t.Fatal(err)
				}
				return x
			}
			if want[0] == int64(typeItem) {
				// Only a sidecar sends items: it takes one for a bad_message.
				if _, err := parseMessage(payload); errorCode(err) != codeBadMessage {
					t.Fatalf("the sidecar parsed an item: %v", err)
				}
				msgid, item, err := parseItem(payload)
				if err != nil {
					t.Fatal(err)
				}
				if got := []any{int64(typeItem), int64(msgid), raw(item)}; !reflect.DeepEqual(normalize(got), normalize(want)) {
					t.Fatalf("decoded %#v, want %#v", got, want)
				}
				if v.Canonical {
					e := getEncBuf()
					if _, err := encodeItem(e, msgid, raw(item)); err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(e.buf.Bytes(), data) {
						t.Fatalf("server encoded %x, want %s", e.buf.Bytes(), v.Hex)
					}
					if enc := encodeFrame(t, v.Message); !bytes.Equal(enc, data) {
						t.Fatalf("encoded %x, want %s", enc, v.Hex)
					}
				}
				return
			}
			m, err := parseMessage(payload)
			if err != nil {
				t.Fatal(err)
			}
			got := []any{int64(m.typ)}
			switch m.typ {
			case typeRequest:
				got = append(got, int64(m.msgid), m.method, raw(m.params))
				if len(want) == 5 {
					var meta any
					if m.meta != nil {
						meta = raw(m.meta)
					}
					got = append(got, meta)
				}
				mm, _ := want[len(want)-1].(map[string]any)
				if len(want) != 5 {
					mm = nil
				}
				if to, ok := mm["timeout"]; ok && (!m.hasTimeout || m.timeout != to.(float64)) {
					t.Fatalf("timeout %v (%v), want %v", m.timeout, m.hasTimeout, to)
				}
				if credit, ok := mm["stream"]; ok != m.stream || ok && m.credit != credit.(int64) {
					t.Fatalf("stream %v, credit %d; want the stream credit %v", m.stream, m.credit, credit)
				}
				if got := parseMetadata(m.metadata); len(got) != len(v.Metadata) || len(got) > 0 && !reflect.DeepEqual(map[string]string(got), v.Metadata) {
					t.Fatalf("metadata %#v, want %#v", got, v.Metadata)
				}
			case typeResponse:
				var e any
				if m.errMap != nil {
					em := map[string]any{"type": m.errMap.Type, "message": m.errMap.Message}
					if m.errMap.Stack != "" {
						em["stack"] = m.errMap.Stack
					}
					e = em
				}
				got = append(got, int64(m.msgid), e, raw(m.result))
			case typeNotification:
				got = append(got, m.method, raw(m.params))
			}
			if !reflect.DeepEqual(normalize(got), normalize(want)) {
				t.Fatalf("decoded %#v, want %#v", got, want)
			}
			if !v.Canonical {
				return
			}
			if enc := encodeFrame(t, v.Message); !bytes.Equal(enc, data) {
				t.Fatalf("encoded %x, want %s", enc, v.Hex)
			}
			if m.typ == typeResponse {
				// The server's own response encoder must give the same bytes.
				e := getEncBuf()
				var werr *wireError
				if m.errMap != nil {
					werr = m.errMap
				}
				if err := encodeResponse(e, m.msgid, werr, raw(m.result)); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(e.buf.Bytes(), data) {
					t.Fatalf("server encoded %x, want %s", e.buf.Bytes(), v.Hex)
				}
			}
		})
	}
}

// readOne reads one frame and parses it, as the server's reader does.
func readOne(data []byte, max uint32) error {
	payload, err := readFrame(bytes.NewReader(data), max)
	if err != nil {
		return err
	}
	_, err = parseMessage(payload)
	return err
}

func TestVectorMalformed(t *testing.T) {
	for _, v := range loadVectors(t, "malformed.json") {
		t.Run(v.Name, func(t *testing.T) {
			max := uint32(DefaultMaxFrameSize)
			if v.MaxFrame != 0 {
				max = v.MaxFrame
			}
			err := readOne(mustHex(t, v.Hex), max)
			if got := errorCode(err); got != v.Error {
				t.Fatalf("got %v (code %q), want %q", err, got, v.Error)
			}
		})
	}
}

func TestReadFrameCleanEOF(t *testing.T) {
	if _, err := readFrame(bytes.NewReader(nil), DefaultMaxFrameSize); err.Error() != "EOF" {
		t.Fatalf("empty stream: %v, want EOF", err)
	}
}

func TestDecodeStrictness(t *testing.T) {
	var s string
	if err := decodeValue([]byte{0xc4, 0x01, 'x'}, &s); err == nil {
		t.Fatal("bin accepted as string")
	}
	var bs []byte
	if err := decodeValue([]byte{0xa1, 'x'}, &bs); err == nil {
		t.Fatal("str accepted as []byte")
	}
	var m map[int]string
	if err := decodeValue([]byte{0x82, 0x01, 0xa1, 'a', 0xfe, 0xa1, 'b'}, &m); err != nil || m[1] != "a" || m[-2] != "b" {
		t.Fatalf("map[int]string: %v %v", m, err)
	}
	var a any
	if err := decodeValue([]byte{0x81, 0x91, 0x01, 0x02}, &a); err == nil {
		t.Fatalf("array key accepted: %v", a)
	}
	if err := decodeValue([]byte{0x82, 0xa1, 'a', 0x01, 0x02, 0x03}, &a); err != nil {
		t.Fatal(err)
	} else if mm, ok := a.(map[any]any); !ok || len(mm) != 2 || mm["a"] != int8(1) {
		t.Fatalf("mixed keys: %#v", a)
	}
}

// TestVectorHello: the sidecar's $hello, $refused, $goaway and $drained encoders give the bytes
// of the vectors, and the client's $hello vector announces its frame limit.
func TestVectorHello(t *testing.T) {
	byName := map[string][]byte{}
	for _, v := range loadVectors(t, "messages.json") {
		byName[v.Name] = mustHex(t, v.Hex)
	}
	e := getEncBuf()
	e.appendHello(DefaultMaxFrameSize, DefaultMaxInflight)
	if got, _ := e.frame(); !bytes.Equal(got, byName["notification_hello_sidecar"]) {
		t.Errorf("$hello %x, want %x", got, byName["notification_hello_sidecar"])
	}
	e = getEncBuf()
	e.appendNotification("$refused", "authentication failed: wrong secret")
	if got, _ := e.frame(); !bytes.Equal(got, byName["notification_refused"]) {
		t.Errorf("$refused %x, want %x", got, byName["notification_refused"])
	}
	e = getEncBuf()
	e.appendGoAway()
	if got, _ := e.frame(); !bytes.Equal(got, byName["notification_goaway"]) {
		t.Errorf("$goaway %x, want %x", got, byName["notification_goaway"])
	}
	e = getEncBuf()
	e.appendDrained()
	if got, _ := e.frame(); !bytes.Equal(got, byName["notification_drained"]) {
		t.Errorf("$drained %x, want %x", got, byName["notification_drained"])
	}
	payload, err := readFrame(bytes.NewReader(byName["notification_hello_client"]), DefaultMaxFrameSize)
	if err != nil {
		t.Fatal(err)
	}
	m, err := parseMessage(payload)
	if err != nil {
		t.Fatal(err)
	}
	if limit, ok := helloFrameLimit(m.params); m.method != "$hello" || !ok || limit != DefaultMaxFrameSize {
		t.Errorf("client $hello: %s, limit %d (%v)", m.method, limit, ok)
	}
}

// TestVectorKeepalive: the sidecar encodes $ping and $pong as the vectors,
// and reads the client's $hellos as announcing that it answers pings.
func TestVectorKeepalive(t *testing.T) {
	byName := map[string][]byte{}
	for _, v := range loadVectors(t, "messages.json") {
		byName[v.Name] = mustHex(t, v.Hex)
	}
	for _, name := range []string{"ping", "pong"} {
		e := getEncBuf()
		e.appendToken("$"+name, 7)
		if got, _ := e.frame(); !bytes.Equal(got, byName["notification_"+name]) {
			t.Errorf("$%s %x, want %x", name, got, byName["notification_"+name])
		}
	}
	for _, name := range []string{"notification_hello_client", "notification_hello_client_host_calls"} {
		payload, err := readFrame(bytes.NewReader(byName[name]), DefaultMaxFrameSize)
		if err != nil {
			t.Fatal(err)
		}
		m, err := parseMessage(payload)
		if err != nil {
			t.Fatal(err)
		}
		if !helloPing(m.params) {
			t.Errorf("%s does not announce ping", name)
		}
	}
}

// TestVectorHostCalls: the sidecar's host-call request encoder gives the bytes
// of the vector, and the client's $hello vector announces its host calls.
func TestVectorHostCalls(t *testing.T) {
	byName := map[string][]byte{}
	for _, v := range loadVectors(t, "messages.json") {
		byName[v.Name] = mustHex(t, v.Hex)
	}
	e := getEncBuf()
	if _, _, err := encodeRequest(e, 5, "Py.Upper", "reasno", 1.5, true, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.frame(); !bytes.Equal(got, byName["request_host_call"]) {
		t.Errorf("host call %x, want %x", got, byName["request_host_call"])
	}
	payload, err := readFrame(bytes.NewReader(byName["notification_hello_client_host_calls"]), DefaultMaxFrameSize)
	if err != nil {
		t.Fatal(err)
	}
	m, err := parseMessage(payload)
	if err != nil {
		t.Fatal(err)
	}
	if n := helloHostCalls(m.params); n != 64 {
		t.Errorf("client $hello announces %d host calls, want 64", n)
	}
}

// TestVectorStreams: the sidecar reads the client's $credit vector as credit
// for its stream. (TestVectorMessages checks that it refuses the item vectors,
// and encodes the same bytes.)
func TestVectorStreams(t *testing.T) {
	byName := map[string][]byte{}
	for _, v := range loadVectors(t, "messages.json") {
		byName[v.Name] = mustHex(t, v.Hex)
	}
	payload, err := readFrame(bytes.NewReader(byName["notification_credit"]), DefaultMaxFrameSize)
	if err != nil {
		t.Fatal(err)
	}
	m, err := parseMessage(payload)
	if err != nil {
		t.Fatal(err)
	}
	if id, n, ok := parseCredit(m.params); m.method != "$credit" || !ok || id != 10 || n != 32768 {
		t.Errorf("$credit %s: msgid %d, credit %d (%v)", m.method, id, n, ok)
	}
}

// TestVectorMetadata: the sidecar reads the metadata of the client's request
// vector, and its host-call encoder gives the bytes of the host call vector
// with metadata. (TestVectorMessages checks the metadata of every request.)
func TestVectorMetadata(t *testing.T) {
	byName := map[string]valueVector{}
	for _, v := range loadVectors(t, "messages.json") {
		byName[v.Name] = v
	}
	t.Run("request_metadata", func(t *testing.T) {
		v, ok := byName["request_metadata"]
		if !ok {
			t.Fatal("tests/vectors/messages.json has no request_metadata")
		}
		m := parseVector(t, v)
		want := Metadata{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tenant": "acme"}
		if got := parseMetadata(m.metadata); m.typ != typeRequest || !m.hasTimeout || !reflect.DeepEqual(got, want) {
			t.Errorf("request: type %d, timeout %v, metadata %#v; want a request with a timeout and %#v", m.typ, m.hasTimeout, got, want)
		}
	})
	t.Run("request_host_metadata", func(t *testing.T) {
		v, ok := byName["request_host_metadata"]
		if !ok {
			t.Fatal("tests/vectors/messages.json has no request_host_metadata")
		}
		m := parseVector(t, v)
		md := parseMetadata(m.metadata)
		if m.typ != typeRequest || md == nil {
			t.Fatalf("type %d, metadata %#v: want a request with metadata", m.typ, md)
		}
		e := getEncBuf()
		if _, _, err := encodeRequest(e, m.msgid, m.method, msgpack.RawMessage(m.params), m.timeout, m.hasTimeout, md); err != nil {
			t.Fatal(err)
		}
		if got := e.buf.Bytes(); !bytes.Equal(got, mustHex(t, v.Hex)) {
			t.Errorf("host call %x, want %s (the sidecar sends the metadata's keys sorted)", got, v.Hex)
		}
	})
}

// parseVector parses the frame of a message vector as the sidecar does.
func parseVector(t *testing.T, v valueVector) *message {
	t.Helper()
	payload, err := readFrame(bytes.NewReader(mustHex(t, v.Hex)), DefaultMaxFrameSize)
	if err != nil {
		t.Fatal(err)
	}
	m, err := parseMessage(payload)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
