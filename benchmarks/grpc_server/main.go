// Command grpc_server is the gRPC peer of benchmarks/grpc_compare.py: one unary method,
// /bench.Echo/Echo, that returns its google.protobuf.Int64Value unchanged.
//
// The service is described by hand (no protoc): a grpc.ServiceDesc whose handler decodes the
// request into the pre-generated wrapperspb.Int64Value with the default proto codec.
//
// It prints "ready <address>" on stdout once listening and exits when its stdin closes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// echoServer is the handler type the ServiceDesc names; it has no state.
type echoServer interface {
	Echo(context.Context, *wrapperspb.Int64Value) (*wrapperspb.Int64Value, error)
}

type echo struct{}

func (echo) Echo(_ context.Context, in *wrapperspb.Int64Value) (*wrapperspb.Int64Value, error) {
	return in, nil
}

func echoHandler(srv any, ctx context.Context, decode func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := new(wrapperspb.Int64Value)
	if err := decode(in); err != nil {
		return nil, err
	}
	if interceptor == nil {
		return srv.(echoServer).Echo(ctx, in)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: "/bench.Echo/Echo"}
	return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
		return srv.(echoServer).Echo(ctx, req.(*wrapperspb.Int64Value))
	})
}

var echoDesc = grpc.ServiceDesc{
	ServiceName: "bench.Echo",
	HandlerType: (*echoServer)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Echo", Handler: echoHandler}},
	Metadata:    "bench.proto",
}

func main() {
	address := flag.String("address", "127.0.0.1:0", `where to listen: a Unix socket path if it contains "/", else host:port`)
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("grpc_server: ")

	network := "tcp"
	if strings.Contains(*address, "/") {
		network = "unix"
	}
	listener, err := net.Listen(network, *address)
	if err != nil {
		log.Fatal(err)
	}
	server := grpc.NewServer()
	server.RegisterService(&echoDesc, echo{})

	served := make(chan error, 1)
	go func() { served <- server.Serve(listener) }()
	fmt.Printf("ready %s\n", listener.Addr())

	stdinClosed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stdinClosed)
	}()
	select {
	case <-stdinClosed:
		server.Stop() // closes the listener, which removes the Unix socket file
	case err := <-served:
		if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			log.Fatal(err)
		}
	}
}
