package gotask_test

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"

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
