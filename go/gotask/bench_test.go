package gotask

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"log"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// Bench is the service the benchmarks call.
type Bench struct{}

func (Bench) Echo(v any, r *any) error { *r = v; return nil }

// benchClient serves a fresh Server, set up by configure, on a Unix socket
// and returns a client connected to it.
func benchClient(b *testing.B, configure ...func(*Server)) *testClient {
	srv := NewServer()
	srv.ErrorLog = log.New(io.Discard, "", 0)
	for _, f := range configure {
		f(srv)
	}
	if err := srv.Register(Bench{}); err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("unix", filepath.Join(b.TempDir(), "s"))
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(l)
	b.Cleanup(func() { l.Close() })
	conn, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	return newTestClient(b, conn)
}

func benchmarkEcho(b *testing.B, arg any) {
	c := benchClient(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := c.call("Bench.Echo", arg, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// Profile the server with, for example:
//
//	go test -run '^$' -bench Echo16MiB -cpuprofile cpu.out ./gotask && go tool pprof -top cpu.out
func BenchmarkEchoSmall(b *testing.B) { benchmarkEcho(b, 1) }
func BenchmarkEcho16MiB(b *testing.B) { benchmarkEcho(b, make([]byte, 16<<20)) }

// benchArgs is a call's arguments of the usual kinds: strings, integers of
// several sizes, floats, a timestamp, bytes, a list and a nested map.
type benchArgs struct {
	Name   string             `msgpack:"name"`
	Count  int                `msgpack:"count"`
	Big    uint64             `msgpack:"big"`
	Neg    int32              `msgpack:"neg"`
	Ratio  float64            `msgpack:"ratio"`
	When   time.Time          `msgpack:"when"`
	Blob   []byte             `msgpack:"blob"`
	Tags   []string           `msgpack:"tags"`
	Scores map[string]float32 `msgpack:"scores"`
	Extra  map[string]any     `msgpack:"extra"`
}

// benchRequest is [0, msgid, "Bench.Args", args, {"timeout": 5.0}], encoded.
func benchRequest(b *testing.B) (payload, params []byte) {
	args := benchArgs{
		Name: "a name of some length", Count: 300, Big: 1 << 40, Neg: -70000, Ratio: 0.25,
		When: time.Unix(1700000000, 5), Blob: make([]byte, 64),
		Tags:   []string{"alpha", "beta", "gamma", "delta"},
		Scores: map[string]float32{"x": 1, "y": 2, "z": 3},
		Extra:  map[string]any{"list": []any{1, "two", 3.0, nil, true}, "map": map[string]any{"k": -1}},
	}
	params, err := msgpack.Marshal(args)
	if err != nil {
		b.Fatal(err)
	}
	payload, err = msgpack.Marshal([]any{0, 7, "Bench.Args", msgpack.RawMessage(params), map[string]any{"timeout": 5.0}})
	if err != nil {
		b.Fatal(err)
	}
	return payload, params
}

// BenchmarkParseMessage measures the frame decoder: scan.Skip and scan.Cursor.
func BenchmarkParseMessage(b *testing.B) {
	payload, _ := benchRequest(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := parseMessage(payload); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeArgs measures the argument checker (check.Arg) and the
// library's decoder behind it.
func BenchmarkDecodeArgs(b *testing.B) {
	_, params := benchRequest(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var args benchArgs
		if err := decodeValue(params, &args); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadFrame measures readFrame on frames already buffered, as the
// read loop sees them: small ones in one allocation, large ones grown as they
// arrive.
func BenchmarkReadFrame(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"100B", 100}, {"64KiB", 64 << 10}, {"1MiB", 1 << 20}, {"16MiB", 16 << 20}} {
		b.Run(size.name, func(b *testing.B) {
			frame := binary.BigEndian.AppendUint32(nil, uint32(size.n))
			frame = append(frame, make([]byte, size.n)...)
			r := bytes.NewReader(frame)
			br := bufio.NewReaderSize(r, 64<<10)
			b.SetBytes(int64(size.n))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r.Reset(frame)
				br.Reset(r)
				if _, err := readFrame(br, DefaultMaxFrameSize); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
