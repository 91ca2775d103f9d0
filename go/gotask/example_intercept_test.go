package gotask_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/trio-gotask/trio-gotask/go/gotask"
	"github.com/vmihailenco/msgpack/v5"
)

// Account is the service the interceptor examples call.
type Account struct{}

type userKey struct{}

// Whoami returns the user the auth interceptor found.
func (Account) Whoami(ctx context.Context, _ any, reply *string) error {
	*reply, _ = ctx.Value(userKey{}).(string)
	return nil
}

// Withdraw returns what is left of 100 after amount, or fails.
func (Account) Withdraw(amount int, reply *int) error {
	if amount > 100 {
		return fmt.Errorf("insufficient funds for %d", amount)
	}
	*reply = 100 - amount
	return nil
}

// Notify tells the Python program, through its handler "Py.Notify".
func (Account) Notify(ctx context.Context, text string, _ *any) error {
	return gotask.CallHost(ctx, "Py.Notify", text, nil)
}

// authError is the error a call without valid credentials gets: its
// ErrorType is the type of the exception Python raises (a
// trio_gotask.RemoteError whose type is "unauthenticated").
type authError struct{ method string }

func (e authError) Error() string   { return "no valid authorization for " + e.method }
func (authError) ErrorType() string { return "unauthenticated" }

// authenticate lets a call through only when the "authorization" entry of
// its metadata is one of tokens, and gives the method the token's user in
// its context.
func authenticate(tokens map[string]string) gotask.Interceptor {
	return func(ctx context.Context, info *gotask.CallInfo, next func(context.Context) error) error {
		user, ok := tokens[info.Metadata["authorization"]]
		if !ok {
			return authError{info.Method}
		}
		return next(context.WithValue(ctx, userKey{}, user))
	}
}

// The Python side sends the token with each call, as metadata:
//
//	info.metadata["authorization"] = "Bearer s3cret"  # in a client interceptor
func ExampleInterceptor_auth() {
	srv := gotask.NewServer()
	if err := srv.Register(Account{}); err != nil {
		panic(err)
	}
	srv.Interceptors = []gotask.Interceptor{authenticate(map[string]string{"Bearer s3cret": "ada"})}

	c := dialPipe(srv)
	defer c.Close()
	fmt.Println(c.call("Account.Whoami", nil, map[string]string{"authorization": "Bearer s3cret"}))
	fmt.Println(c.call("Account.Whoami", nil, nil))
	// Output:
	// <nil> ada
	// map[message:no valid authorization for Account.Whoami type:unauthenticated] <nil>
}

// callMetrics counts the calls of each method, those that failed, and the
// time they took.
type callMetrics struct {
	mu       sync.Mutex
	calls    map[string]int
	failures map[string]int
	time     map[string]time.Duration
}

// intercept is a gotask.Interceptor.
func (m *callMetrics) intercept(ctx context.Context, info *gotask.CallInfo, next func(context.Context) error) error {
	start := time.Now()
	err := next(ctx)
	elapsed := time.Since(start)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls[info.Method]++
	if err != nil {
		m.failures[info.Method]++
	}
	m.time[info.Method] += elapsed
	return err
}

func ExampleInterceptor_metrics() {
	m := &callMetrics{calls: map[string]int{}, failures: map[string]int{}, time: map[string]time.Duration{}}
	srv := gotask.NewServer()
	if err := srv.Register(Account{}); err != nil {
		panic(err)
	}
	srv.Interceptors = []gotask.Interceptor{m.intercept}

	c := dialPipe(srv)
	defer c.Close()
	c.call("Account.Withdraw", 10, nil)
	c.call("Account.Withdraw", 1000, nil)     // the method's error
	c.call("Account.Withdraw", "thirty", nil) // bad_params: the method does not run, the interceptor does
	c.call("Account.Whoami", nil, nil)

	m.mu.Lock()
	defer m.mu.Unlock()
	methods := make([]string, 0, len(m.calls))
	for method := range m.calls {
		methods = append(methods, method)
	}
	sort.Strings(methods)
	for _, method := range methods {
		fmt.Printf("%s: %d calls, %d failed\n", method, m.calls[method], m.failures[method])
	}
	// Output:
	// Account.Whoami: 1 calls, 0 failed
	// Account.Withdraw: 3 calls, 2 failed
}

// logCalls logs one record per call: its method, its "request_id" metadata
// entry when it has one, its duration and its error.
func logCalls(logger *slog.Logger) gotask.Interceptor {
	return func(ctx context.Context, info *gotask.CallInfo, next func(context.Context) error) error {
		start := time.Now()
		err := next(ctx)
		attrs := []slog.Attr{slog.String("method", info.Method)}
		if id, ok := info.Metadata["request_id"]; ok {
			attrs = append(attrs, slog.String("request_id", id))
		}
		attrs = append(attrs, slog.Duration("duration", time.Since(start)))
		level := slog.LevelInfo
		if err != nil {
			level = slog.LevelWarn
			attrs = append(attrs, slog.String("error", err.Error()))
		}
		logger.LogAttrs(ctx, level, "call", attrs...)
		return err
	}
}

// The logger here writes text to standard output without times and
// durations, for a stable output. gotask.NewHostLogHandler would send the
// records to the Python program's logging instead.
func ExampleInterceptor_logging() {
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey || a.Key == "duration" {
				return slog.Attr{}
			}
			return a
		},
	}))
	srv := gotask.NewServer()
	if err := srv.Register(Account{}); err != nil {
		panic(err)
	}
	srv.Interceptors = []gotask.Interceptor{logCalls(logger)}

	c := dialPipe(srv)
	defer c.Close()
	c.call("Account.Withdraw", 10, map[string]string{"request_id": "r-1"})
	c.call("Account.Withdraw", 1000, nil)
	// Output:
	// level=INFO msg=call method=Account.Withdraw request_id=r-1
	// level=WARN msg=call method=Account.Withdraw error="insufficient funds for 1000"
}

// passTenant passes the "tenant" entry of a call's metadata on to the host
// calls its method makes.
func passTenant(ctx context.Context, info *gotask.HostCallInfo, next func(context.Context) error) error {
	if tenant, ok := gotask.MetadataFrom(ctx)["tenant"]; ok {
		info.Metadata["tenant"] = tenant
	}
	return next(ctx)
}

func ExampleHostInterceptor() {
	srv := gotask.NewServer()
	if err := srv.Register(Account{}); err != nil {
		panic(err)
	}
	srv.HostInterceptors = []gotask.HostInterceptor{passTenant}

	c := dialPipe(srv)
	defer c.Close()
	c.send(2, "$hello", map[string]any{"version": gotask.ProtocolVersion, "max_host_calls": 1})
	c.send(0, 1, "Account.Notify", "saved", map[string]any{"metadata": map[string]string{"tenant": "acme"}})
	host := c.read() // the host call: [0, msgid, method, arg, meta]
	fmt.Println(host[2], host[3], host[4])
	c.send(1, host[1], nil, nil)
	resp := c.read()
	fmt.Println(resp[1], resp[2])
	// Output:
	// Py.Notify saved map[metadata:map[tenant:acme]]
	// 1 <nil>
}

// pipeClient speaks the wire protocol by hand over one end of an in-memory
// connection, as ExampleServer does.
type pipeClient struct {
	net.Conn
	msgid int
}

// dialPipe serves srv on an in-memory connection and returns a client that
// has read the sidecar's $hello.
func dialPipe(srv *gotask.Server) *pipeClient {
	client, server := net.Pipe()
	go srv.ServeConn(server)
	c := &pipeClient{Conn: client}
	c.read()
	return c
}

// send sends the message msg, a big-endian length and then msgpack.
func (c *pipeClient) send(msg ...any) {
	payload, _ := msgpack.Marshal(msg)
	binary.Write(c, binary.BigEndian, uint32(len(payload)))
	c.Write(payload)
}

func (c *pipeClient) read() (msg []any) {
	var n uint32
	binary.Read(c, binary.BigEndian, &n)
	payload := make([]byte, n)
	io.ReadFull(c, payload)
	msgpack.Unmarshal(payload, &msg)
	return msg
}

// call calls method with arg and the metadata md, and returns the error
// and the result of its response.
func (c *pipeClient) call(method string, arg any, md map[string]string) (errMap, result any) {
	c.msgid++
	var meta any
	if md != nil {
		meta = map[string]any{"metadata": md}
	}
	c.send(0, c.msgid, method, arg, meta)
	resp := c.read()
	return resp[2], resp[3]
}
