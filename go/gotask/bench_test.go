package gotask

import (
	"io"
	"log"
	"net"
	"path/filepath"
	"testing"
)

// Bench is the service the benchmarks call.
type Bench struct{}

func (Bench) Echo(v any, r *any) error { *r = v; return nil }

// benchClient serves a fresh Server on a Unix socket and returns a client
// connected to it.
func benchClient(b *testing.B) *testClient {
	srv := NewServer()
	srv.ErrorLog = log.New(io.Discard, "", 0)
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
