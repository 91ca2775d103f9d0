package gotask

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"log"
	"testing"
	"time"

	"github.com/trio-gotask/trio-gotask/go/gotask/internal/scan"
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
	f.Add(frameOf(f, []any{0, 1, "A.B", nil, map[string]any{"timeout": 1.0, "metadata": map[any]any{"k": "v", 1: "x", "n": nil}}}))
	f.Add(frameOf(f, []any{0, 1, "A.B", nil, map[string]any{"metadata": []any{"k", "v"}}}))
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
			if m.metadata != nil {
				parseMetadata(m.metadata)
			}
		}
	})
}

// FuzzSvc is the service FuzzServeConn calls.
type FuzzSvc struct{}

func (FuzzSvc) Echo(v any, r *any) error                     { *r = v; return nil }
func (FuzzSvc) IntMap(m map[int]string, r *int) error        { *r = len(m); return nil }
func (FuzzSvc) Struct(a struct{ A, B []byte }, r *int) error { *r = len(a.A) + len(a.B); return nil }
func (FuzzSvc) Time(t time.Time, r *time.Time) error         { *r = t; return nil }
func (FuzzSvc) Panic(v any, r *any) error                    { panic(v) }
func (FuzzSvc) Fail(s string, r *any) error                  { return errors.New(s) }
func (FuzzSvc) Count(n uint8, out *Stream[int]) error {
	for i := 0; i < int(n); i++ {
		if err := out.Send(i); err != nil {
			return err
		}
	}
	return nil
}
func (FuzzSvc) Slow(ctx context.Context, ms uint8, r *uint8) error {
	select {
	case <-time.After(time.Duration(ms%8) * time.Millisecond): // at most 7 ms
		*r = ms
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fuzzConn is a connection whose peer sent a fixed stream and closed its side;
// it keeps what the server writes.
type fuzzConn struct {
	r *bytes.Reader
	w bytes.Buffer
}

func (c *fuzzConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *fuzzConn) Write(p []byte) (int, error) { return c.w.Write(p) }
func (c *fuzzConn) Close() error                { return nil }

// FuzzServeConn serves a whole connection whose peer sends arbitrary bytes. The
// first byte chooses whether the connection is one accepted by Serve from a
// server with a secret ("s"), which must then come first as $auth. ServeConn
// must return, and must have answered every request read before the stream
// ended or went wrong with exactly one well-formed response, preceded by
// items only for a request yet unanswered, and nothing else.
func FuzzServeConn(f *testing.F) {
	frames := func(msgs ...any) []byte {
		var b []byte
		for _, m := range msgs {
			b = append(b, frameOf(f, m)...)
		}
		return b
	}
	req := func(id int, method string, params any) []any { return []any{0, id, method, params, nil} }
	auth := []any{2, "$auth", "s"}
	seeds := [][]byte{
		frames(req(1, "FuzzSvc.Echo", map[string]any{"a": []any{1, "x", []byte("b")}})),
		frames(req(1, "FuzzSvc.IntMap", map[int]string{1: "a", -1: "b"}), req(2, "FuzzSvc.Struct", map[string]any{"A": []byte("x")})),
		frames(req(1, "FuzzSvc.Time", time.Unix(1, 2)), req(2, "FuzzSvc.Panic", "p"), req(3, "FuzzSvc.Fail", "f")),
		frames(req(1, "FuzzSvc.Slow", 7), []any{2, "$cancel", 1}, req(2, "FuzzSvc.Slow", 1), req(1, "FuzzSvc.Nope", nil)),
		frames([]any{0, 1, "FuzzSvc.Slow", 3, map[string]any{"timeout": 0.001}}, req(2, "FuzzSvc.Echo", nil)),
		frames(req(1, "FuzzSvc.Echo", 1), []any{1, 1, nil, nil}, req(2, "FuzzSvc.Echo", 2)),
		frames([]any{0, 1, "FuzzSvc.Count", 5, map[string]any{"stream": 3}}, []any{2, "$credit", []any{1, 10}}, req(2, "FuzzSvc.Count", 1)),
		frames([]any{0, 1, "FuzzSvc.Count", 9, map[string]any{"stream": 0}}, []any{2, "$cancel", 1}, []any{0, 2, "FuzzSvc.Echo", 1, map[string]any{"stream": 1}}, []any{3, 1, 0}),
		frames([]any{0, 1, "FuzzSvc.Echo", 1, map[string]any{"metadata": map[any]any{"tenant": "acme", 2: "x", "short": "y"}}}, []any{0, 2, "FuzzSvc.Count", 2, map[string]any{"stream": 9, "metadata": map[string]string{"a": "b"}}}),
	}
	for _, s := range seeds {
		f.Add(append([]byte{0}, s...))
		f.Add(append(append([]byte{1}, frames(auth)...), s...))
	}
	f.Add(append([]byte{1}, frames([]any{2, "$auth", "t"}, req(1, "FuzzSvc.Echo", 1))...))
	f.Add(append([]byte{1}, frames(req(1, "FuzzSvc.Echo", 1))...))
	for _, v := range loadVectors(f, "messages.json") {
		b, _ := hex.DecodeString(v.Hex)
		f.Add(append([]byte{0}, b...))
	}
	srv := NewServer()
	srv.ErrorLog = log.New(io.Discard, "", 0)
	srv.MaxFrameSize = 1 << 16
	srv.MaxInflight = 2
	srv.Secret = "s"
	srv.Interceptors = []Interceptor{func(ctx context.Context, info *CallInfo, next func(context.Context) error) error {
		if info.Metadata["short"] != "" {
			return errors.New(info.Metadata["short"]) // answers without running the method
		}
		return next(ctx)
	}}
	if err := srv.Register(FuzzSvc{}); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		accepted, data := data[0]&1 == 1, data[1:]

		// What the server should have read: requests and pings up to the first error.
		want := map[uint32]int{}
		wantN := 0
		pongs := map[uint64]int{}
		pongsN := 0
		r := bytes.NewReader(data)
		authed := !accepted
		for {
			payload, err := readFrame(r, srv.MaxFrameSize)
			if err != nil {
				break
			}
			m, err := parseMessage(payload)
			if err != nil || m.typ == typeResponse {
				break
			}
			if !authed {
				cur := scan.Cursor{B: m.params}
				if s, ok := cur.Str(); !ok || s != "s" || m.typ != typeNotification || m.method != "$auth" {
					break
				}
				authed = true
				continue
			}
			if m.typ == typeRequest {
				want[m.msgid]++
				wantN++
			}
			cur := scan.Cursor{B: m.params}
			if token, ok := cur.Uint(); ok && m.typ == typeNotification && m.method == "$ping" {
				pongs[token]++
				pongsN++
			}
		}

		conn := &fuzzConn{r: bytes.NewReader(data)}
		done := make(chan struct{})
		go func() {
			srv.serveConn(conn, accepted)
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(hangGuard):
			t.Fatal("ServeConn did not return")
		}
		out := bytes.NewReader(conn.w.Bytes())
		gotN := 0
		for {
			payload, err := readFrame(out, DefaultMaxFrameSize)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("server wrote a bad frame: %v", err)
			}
			if id, _, err := parseItem(payload); err == nil {
				if want[id] == 0 {
					t.Fatalf("an item for msgid %d, which has no request unanswered", id)
				}
				continue
			}
			m, err := parseMessage(payload)
			if err == nil && m.typ == typeNotification && (m.method == "$hello" || m.method == "$refused") {
				continue
			}
			if err == nil && m.typ == typeNotification && m.method == "$pong" {
				cur := scan.Cursor{B: m.params}
				if token, ok := cur.Uint(); !ok || pongs[token] == 0 {
					t.Fatalf("$pong %x, to no $ping (or too often)", m.params)
				} else {
					pongs[token]--
					pongsN--
				}
				continue
			}
			if err != nil || m.typ != typeResponse {
				t.Fatalf("server wrote %v, %v; want a response", m, err)
			}
			if want[m.msgid] == 0 {
				t.Fatalf("response to msgid %d, which was not asked (or too often)", m.msgid)
			}
			want[m.msgid]--
			gotN++
		}
		if gotN != wantN {
			t.Fatalf("%d responses to %d requests", gotN, wantN)
		}
		if pongsN != 0 {
			t.Fatalf("%d $ping not answered", pongsN)
		}
	})
}
