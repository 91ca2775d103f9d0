package gotask_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"

	"github.com/trio-gotask/trio-gotask/go/gotask"
	"github.com/vmihailenco/msgpack/v5"
)

type Greeter struct{}

func (g *Greeter) Hi(name string, reply *map[string]any) error {
	*reply = map[string]any{"hello": name}
	return nil
}

// ExampleServer serves a Greeter on one end of an in-memory connection and
// calls it from the other end, speaking the wire protocol by hand: a
// big-endian length, then the msgpack request [0, msgid, method, params, meta].
func ExampleServer() {
	srv := gotask.NewServer()
	if err := srv.Register(new(Greeter)); err != nil {
		panic(err)
	}
	client, server := net.Pipe()
	go srv.ServeConn(server)
	defer client.Close()

	req, _ := msgpack.Marshal([]any{0, 1, "Greeter.Hi", "gopher", nil})
	binary.Write(client, binary.BigEndian, uint32(len(req)))
	client.Write(req)

	read := func() (msg []any) {
		var n uint32
		binary.Read(client, binary.BigEndian, &n)
		payload := make([]byte, n)
		io.ReadFull(client, payload)
		msgpack.Unmarshal(payload, &msg)
		return msg
	}
	hello := read() // [2, "$hello", {version, max_frame_size, max_inflight}]
	fmt.Println(hello[1], hello[2].(map[string]any)["version"])
	resp := read() // [1, msgid, error, result]
	fmt.Println(resp[1], resp[2], resp[3])
	// Output:
	// $hello 2
	// 1 <nil> map[hello:gopher]
}

// ExampleNewHostLogHandler logs with no client connected, so the records go
// to the fallback handler: here a text handler on standard output without
// times, for a stable output. With a client that takes host calls, they go
// to its logging instead.
func ExampleNewHostLogHandler() {
	fallback := slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})
	logger := slog.New(gotask.NewHostLogHandler(&gotask.HostLogOptions{
		Logger:   "db",
		Fallback: fallback,
		Server:   gotask.NewServer(), // a server with no connections
	}))
	logger.Info("connected", "pool", 4, slog.Group("peer", "host", "db1", "port", 5432))
	logger.Debug("below the default level: not logged")
	// Output:
	// level=INFO msg=connected pool=4 peer.host=db1 peer.port=5432
}

// poolSize reads "pool_size" from the Python client's configuration, or
// returns 4 when the client has no such key or takes no host calls.
func poolSize(ctx context.Context) (int, error) {
	n := 4
	err := gotask.Config(ctx, "pool_size", &n)
	var he *gotask.HostError
	switch {
	case errors.As(err, &he) && he.Type == "not_found", errors.Is(err, gotask.ErrNoHost):
		return 4, nil
	case err != nil:
		return 0, err
	}
	return n, nil
}

func ExampleConfig() {
	// Outside any call and with no client connected, the default applies.
	n, err := poolSize(context.Background())
	fmt.Println(n, err)
	// Output:
	// 4 <nil>
}
