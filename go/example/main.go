// Command example is a trio-gotask sidecar used by the tests and as a
// starting point: copy it, keep the last two lines of main, and replace App's
// methods with your own.
//
// Every method has the shape
//
//	func (a *App) Name(args A, reply *R) error
//	func (a *App) Name(ctx context.Context, args A, reply *R) error
//
// and is called from Python as "App.Name":
//
//	async with trio_gotask.open_gotask("./example") as gt:
//	    print(await gt.call("App.Hi", "Reasno"))  # {'hello': 'Reasno'}
//
// or, for the stream methods (Count, Words, ...), which send items before
// their reply, the shape
//
//	func (a *App) Name(args A, out *gotask.Stream[Item]) error
//	func (a *App) Name(ctx context.Context, args A, out *gotask.Stream[Item]) error
//
// and is opened from Python with gt.stream("App.Count", 3).
package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trio-gotask/trio-gotask/go/gotask"
)

// App holds the methods served to Python.
type App struct{}

// Hi greets name.
func (a *App) Hi(name string, r *map[string]any) error {
	*r = map[string]any{"hello": name}
	return nil
}

// Echo returns its argument unchanged.
func (a *App) Echo(v any, r *any) error {
	*r = v
	return nil
}

// Bytes returns b reversed; it only accepts binary data (Python bytes).
func (a *App) Bytes(b []byte, r *[]byte) error {
	out := make([]byte, len(b))
	for i, c := range b {
		out[len(b)-1-i] = c
	}
	*r = out
	return nil
}

// Large returns n bytes: 0, 1, 2, ... 255, 0, 1, ...
func (a *App) Large(n int, r *[]byte) error {
	if n < 0 {
		return fmt.Errorf("negative size %d", n)
	}
	out := make([]byte, n)
	for i := range out {
		out[i] = byte(i)
	}
	*r = out
	return nil
}

// AddArgs are the arguments of Add; Python sends {"a": 1, "b": 2}.
type AddArgs struct {
	A int `msgpack:"a"`
	B int `msgpack:"b"`
}

// Add returns a + b.
func (a *App) Add(args AddArgs, r *int) error {
	*r = args.A + args.B
	return nil
}

// IntMap returns m with its values upper-cased; Python sends a dict with int keys.
func (a *App) IntMap(m map[int]string, r *map[int]string) error {
	out := make(map[int]string, len(m))
	for k, v := range m {
		out[k] = strings.ToUpper(v)
	}
	*r = out
	return nil
}

// Int returns n. A float is refused (bad_params), never truncated.
func (a *App) Int(n int64, r *int64) error {
	*r = n
	return nil
}

// Level is a named integer type: like int8, it refuses 300 instead of wrapping it.
type Level int8

// Level returns l.
func (a *App) Level(l Level, r *Level) error {
	*r = l
	return nil
}

// Float32 returns f. Python sends every float as float 64; a float32 narrows it.
func (a *App) Float32(f float32, r *float32) error {
	*r = f
	return nil
}

// Event has a field of each kind the type mapping keeps apart.
type Event struct {
	Name  string    `msgpack:"name"`
	Data  []byte    `msgpack:"data"`
	When  time.Time `msgpack:"when"`
	Tags  []string  `msgpack:"tags"`
	Level Level     `msgpack:"level"`
}

// Events returns es as decoded: Python sends a list of dicts.
func (a *App) Events(es []Event, r *[]Event) error {
	*r = es
	return nil
}

// Pair returns the sum of a list of exactly two integers.
func (a *App) Pair(p [2]int, r *int) error {
	*r = p[0] + p[1]
	return nil
}

// Now returns the current time; Python receives an aware datetime in UTC.
func (a *App) Now(_ any, r *time.Time) error {
	*r = time.Now().UTC()
	return nil
}

// TimeAt returns midnight, January 1st of year, in UTC: past year 9999 it is a
// time Python cannot hold, and the sidecar answers bad_reply.
func (a *App) TimeAt(year int, r *time.Time) error {
	*r = time.Date(year, time.January, 1, 0, 0, 0, 0, time.UTC)
	return nil
}

// Grid returns an n by n grid keyed by [row, column]: a map keyed by arrays,
// which a Python dict cannot take, so the sidecar answers bad_reply.
func (a *App) Grid(n int, r *map[[2]int]int) error {
	for i := 0; i < n; i++ {
		for j := 0; j < n; j++ {
			(*r)[[2]int{i, j}] = i * j
		}
	}
	return nil
}

// Fail returns an error with message msg.
func (a *App) Fail(msg string, r *any) error {
	return errors.New(msg)
}

// typedError is an error that names its type, as users' errors do with an
// ErrorType method.
type typedError struct{ kind, msg string }

func (e typedError) Error() string     { return e.msg }
func (e typedError) ErrorType() string { return e.kind }

// FailTyped returns an error whose ErrorType() is args.Type, to show what a
// client receives when a method's error claims a type of the runtime's own.
func (a *App) FailTyped(args struct {
	Type    string `msgpack:"type"`
	Message string `msgpack:"message"`
}, r *any) error {
	failedTyped.Add(1)
	return typedError{args.Type, args.Message}
}

// failedTyped counts the runs of FailTyped.
var failedTyped atomic.Int64

// FailedTyped says how many times FailTyped ran.
func (a *App) FailedTyped(_ any, r *int64) error {
	*r = failedTyped.Load()
	return nil
}

// FailRepeated returns an error whose message is s repeated n times: longer
// than a small frame limit, for the test that error replies always fit.
func (a *App) FailRepeated(args struct {
	S string `msgpack:"s"`
	N int    `msgpack:"n"`
}, r *any) error {
	return errors.New(strings.Repeat(args.S, args.N))
}

// PanicRepeated panics with s repeated n times.
func (a *App) PanicRepeated(args struct {
	S string `msgpack:"s"`
	N int    `msgpack:"n"`
}, r *any) error {
	panic(strings.Repeat(args.S, args.N))
}

// Panic panics with msg; the sidecar answers with a "panic" error and keeps serving.
func (a *App) Panic(msg string, r *any) error {
	panic(msg)
}

// counter is a count that calls can wait on: how a test learns that Go has
// reached a point, instead of guessing how long that takes.
type counter struct {
	mu      sync.Mutex
	n       int64
	changed chan struct{} // closed when n changes; nil until someone waits
}

func (c *counter) add(d int64) {
	c.mu.Lock()
	c.n += d
	if c.changed != nil {
		close(c.changed)
		c.changed = nil
	}
	c.mu.Unlock()
}

// value returns the count.
func (c *counter) value() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// wait returns the count once it is at least n, or ctx's error first.
func (c *counter) wait(ctx context.Context, n int64) (int64, error) {
	for {
		c.mu.Lock()
		got := c.n
		if got >= n {
			c.mu.Unlock()
			return got, nil
		}
		if c.changed == nil {
			c.changed = make(chan struct{})
		}
		changed := c.changed
		c.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

var (
	cancelled   counter // the Slow calls that ended because their context did
	running     counter // the Slow calls under way
	errNegative = errors.New("negative count")
)

// Slow waits ms milliseconds and returns ms, or returns the context's error
// as soon as the call is cancelled or its deadline passes.
func (a *App) Slow(ctx context.Context, ms int, r *int) error {
	running.add(1)
	defer running.add(-1)
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		*r = ms
		return nil
	case <-ctx.Done():
		cancelled.add(1)
		return ctx.Err()
	}
}

// WaitCancelled waits until at least n Slow calls were cancelled and returns
// how many were.
func (a *App) WaitCancelled(ctx context.Context, n int64, r *int64) (err error) {
	if n < 0 {
		return errNegative
	}
	*r, err = cancelled.wait(ctx, n)
	return err
}

// Running waits until at least n Slow calls are under way at once and returns
// how many are.
func (a *App) Running(ctx context.Context, n int64, r *int64) (err error) {
	*r, err = running.wait(ctx, n)
	return err
}

// A gate holds the calls of Hold that wait on one name until Release.
type gate struct {
	waiting counter
	open    chan struct{}
}

var (
	gatesMu sync.Mutex
	gates   = map[string]*gate{}
)

func gateNamed(name string) *gate {
	gatesMu.Lock()
	defer gatesMu.Unlock()
	g := gates[name]
	if g == nil {
		g = &gate{open: make(chan struct{})}
		gates[name] = g
	}
	return g
}

// Hold waits at the gate name, ignoring its context as Sleep does, until
// Release opens it, and returns name: a reply that comes exactly when a test
// says, however long ago its caller gave up.
func (a *App) Hold(name string, r *string) error {
	g := gateNamed(name)
	g.waiting.add(1)
	<-g.open
	*r = name
	return nil
}

// HoldingArgs are the arguments of Holding; Python sends {"name": "g", "n": 1}.
type HoldingArgs struct {
	Name string `msgpack:"name"`
	N    int64  `msgpack:"n"`
}

// Holding waits until at least n calls of Hold have reached the gate
// args.Name, and returns how many have.
func (a *App) Holding(ctx context.Context, args HoldingArgs, r *int64) (err error) {
	*r, err = gateNamed(args.Name).waiting.wait(ctx, args.N)
	return err
}

// Release opens the gate name: the calls of Hold waiting there return, and
// so will any that come later.
func (a *App) Release(name string, r *any) error {
	g := gateNamed(name)
	gatesMu.Lock()
	defer gatesMu.Unlock()
	select {
	case <-g.open:
	default:
		close(g.open)
	}
	return nil
}

// The calls waiting in Barrier.
var (
	barrierMu      sync.Mutex
	barrierWaiting int
	barrierOpen    = make(chan struct{}) // closed, and replaced, when enough calls wait
)

// Barrier returns n once n calls of Barrier are running at the same time: a
// test that a burst of calls really runs at once.
func (a *App) Barrier(ctx context.Context, n int, r *int) error {
	barrierMu.Lock()
	open := barrierOpen
	barrierWaiting++
	if barrierWaiting >= n {
		close(open)
		barrierOpen, barrierWaiting = make(chan struct{}), 0
	}
	barrierMu.Unlock()
	select {
	case <-open:
		*r = n
		return nil
	case <-ctx.Done():
		barrierMu.Lock()
		if barrierOpen == open {
			barrierWaiting--
		}
		barrierMu.Unlock()
		return ctx.Err()
	}
}

// Deadline returns the seconds left until the call's deadline, or -1 if it has none.
func (a *App) Deadline(ctx context.Context, _ any, r *float64) error {
	if d, ok := ctx.Deadline(); ok {
		*r = time.Until(d).Seconds()
	} else {
		*r = -1
	}
	return nil
}

// Sleep sleeps ms milliseconds, ignoring cancellation, and returns ms.
func (a *App) Sleep(ms int, r *int) error {
	time.Sleep(time.Duration(ms) * time.Millisecond)
	*r = ms
	return nil
}

// LogArgs are the arguments of Log; Python sends {"level": "warn",
// "message": "hi", "logger": "db", "attrs": {"n": 1}} (or the Go names).
type LogArgs struct {
	Level   string         `msgpack:"level,alias:Level"`
	Message string         `msgpack:"message,alias:Message"`
	Logger  string         `msgpack:"logger,alias:Logger"`
	Attrs   map[string]any `msgpack:"attrs,alias:Attrs"`
}

// Log, given a string, writes it as one line to standard error. Given
// LogArgs, it logs Message at Level ("debug", "info", "warn", "error", or
// such as "info+2") through a slog logger named Logger whose records go to
// the Python client's logging, over this call's connection (to standard
// error if the client takes no host calls). Attrs become the record's
// attributes, in key order; when Attrs has "rich": true, the record also
// carries the group "req" {"id": 7} and the error "err" (errors.New("boom")).
// The record reaches Python before the reply.
func (a *App) Log(ctx context.Context, arg any, r *any) error {
	var args LogArgs
	switch v := arg.(type) {
	case string:
		fmt.Fprintln(os.Stderr, v)
		return nil
	case map[string]any:
		var err error
		if args, err = logArgs(v); err != nil {
			return err
		}
	default:
		return fmt.Errorf("Log takes a string or a map, not %T", arg)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(args.Level)); err != nil {
		return fmt.Errorf("level %q: %w", args.Level, err)
	}
	logger := slog.New(gotask.NewHostLogHandler(&gotask.HostLogOptions{Level: slog.LevelDebug, Logger: args.Logger}))
	keys := make([]string, 0, len(args.Attrs))
	for k := range args.Attrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	attrs := make([]any, 0, len(keys)+2)
	for _, k := range keys {
		attrs = append(attrs, slog.Any(k, args.Attrs[k]))
	}
	if rich, _ := args.Attrs["rich"].(bool); rich {
		attrs = append(attrs, slog.Group("req", slog.Int("id", 7)), slog.Any("err", errors.New("boom")))
	}
	logger.Log(ctx, level, args.Message, attrs...)
	return nil
}

// logArgs reads LogArgs from a map decoded into any.
func logArgs(m map[string]any) (LogArgs, error) {
	var a LogArgs
	str := func(key, alias string, to *string) error {
		v, ok := m[key]
		if !ok {
			v, ok = m[alias]
		}
		if s, isStr := v.(string); isStr {
			*to = s
		} else if ok && v != nil {
			return fmt.Errorf("%s: expected a string, got %T", key, v)
		}
		return nil
	}
	for _, f := range []struct {
		key, alias string
		to         *string
	}{{"level", "Level", &a.Level}, {"message", "Message", &a.Message}, {"logger", "Logger", &a.Logger}} {
		if err := str(f.key, f.alias, f.to); err != nil {
			return a, err
		}
	}
	attrs, ok := m["attrs"]
	if !ok {
		attrs = m["Attrs"]
	}
	switch v := attrs.(type) {
	case nil:
	case map[string]any:
		a.Attrs = v
	default:
		return a, fmt.Errorf("attrs: expected a map with string keys, got %T", attrs)
	}
	return a, nil
}

// LogUntilCancelled writes msg as one line to standard error, again and again,
// until the call is cancelled, then says how many it wrote: a sidecar still
// logging when its host dies and takes the reading end of standard error with
// it.
func (a *App) LogUntilCancelled(ctx context.Context, msg string, r *int) error {
	n := 0
	for ; ctx.Err() == nil; n++ {
		fmt.Fprintln(os.Stderr, msg)
	}
	fmt.Fprintf(os.Stderr, "cancelled after %d lines\n", n)
	return ctx.Err()
}

// Print writes n lines to standard output, which must carry nothing after the
// handshake: a method that does it anyway must not hang the sidecar.
func (a *App) Print(n int, r *int) error {
	for i := 0; i < n; i++ {
		fmt.Printf("stray line %d from a method\n", i)
	}
	*r = n
	return nil
}

// ReadStdin reads what standard input holds, up to n bytes: with
// -listen-on-pipe it must be empty (the frames travel on a copy of it), and
// the call must not take the next calls' frames.
func (a *App) ReadStdin(n int, r *[]byte) error {
	buf := make([]byte, n)
	got, err := io.ReadFull(os.Stdin, buf)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return err
	}
	*r = buf[:got]
	return nil
}

// Exit ends the sidecar at once with status code.
func (a *App) Exit(code int, r *any) error {
	fmt.Fprintf(os.Stderr, "exiting with %d\n", code)
	os.Exit(code)
	return nil
}

// Pid returns the sidecar's process id.
func (a *App) Pid(_ any, r *int) error {
	*r = os.Getpid()
	return nil
}

// CountPrimes returns how many primes are below n, by trial division: plain
// CPU work for the benchmarks, done the same way in Python.
func (a *App) CountPrimes(n int, r *int) error {
	count := 0
	for i := 2; i < n; i++ {
		prime := true
		for d := 2; d*d <= i; d++ {
			if i%d == 0 {
				prime = false
				break
			}
		}
		if prime {
			count++
		}
	}
	*r = count
	return nil
}

// hashBlock is 1 MiB of the bytes 0, 1, ... 255, 0, 1, ...
var hashBlock = func() []byte {
	b := make([]byte, 1<<20)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}()

// SHA256 returns the SHA-256 digest of mib MiB of hashBlock repeated.
func (a *App) SHA256(mib int, r *[]byte) error {
	h := sha256.New()
	for i := 0; i < mib; i++ {
		h.Write(hashBlock)
	}
	*r = h.Sum(nil)
	return nil
}

// HostArgs name a handler registered in the Python client and its argument;
// Python sends {"method": ..., "arg": ...} (or "Method" and "Arg").
type HostArgs struct {
	Method string `msgpack:"method,alias:Method"`
	Arg    any    `msgpack:"arg,alias:Arg"`
}

// CallPy calls the Python handler args.Method with args.Arg over the
// connection this call came in on, and returns its result. Its error is
// returned as is: Python sees the HostError's text, "Py.Upper: ValueError: bad".
func (a *App) CallPy(ctx context.Context, args HostArgs, r *any) error {
	return gotask.CallHost(ctx, args.Method, args.Arg, r)
}

// CallPyMany calls the Python handler method n times at once, with 0 ... n-1,
// and returns the results in order, or the first error.
func (a *App) CallPyMany(ctx context.Context, args struct {
	Method string `msgpack:"method,alias:Method"`
	N      int    `msgpack:"n,alias:N"`
}, r *[]any) error {
	if args.N < 0 {
		return errNegative
	}
	results := make([]any, args.N)
	errs := make([]error, args.N)
	var wg sync.WaitGroup
	for i := range args.N {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = gotask.CallHost(ctx, args.Method, i, &results[i])
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	*r = results
	return nil
}

// CallPyTimeout calls the Python handler args.Method with args.Arg under a
// deadline args.Ms milliseconds away, and reports how it ended rather than
// failing: {"result": the handler's result, "type": "", "message": "",
// "err": nil} on success; otherwise "type" and "message" are the HostError's
// (a Go error gets the type a method's error would: "deadline_exceeded",
// "cancelled" or "error", and its text), and "err" is the deadline
// context's error as text ("context deadline exceeded"), or nil.
func (a *App) CallPyTimeout(ctx context.Context, args struct {
	Method string `msgpack:"method,alias:Method"`
	Arg    any    `msgpack:"arg,alias:Arg"`
	Ms     int    `msgpack:"ms,alias:Ms"`
}, r *map[string]any) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(args.Ms)*time.Millisecond)
	defer cancel()
	var result any
	err := gotask.CallHost(ctx, args.Method, args.Arg, &result)
	out := map[string]any{"result": result, "type": "", "message": "", "err": nil}
	var he *gotask.HostError
	switch {
	case errors.As(err, &he):
		out["type"], out["message"] = he.Type, he.Message
	case errors.Is(err, context.DeadlineExceeded):
		out["type"], out["message"] = "deadline_exceeded", err.Error()
	case errors.Is(err, context.Canceled):
		out["type"], out["message"] = "cancelled", err.Error()
	case err != nil:
		out["type"], out["message"] = "error", err.Error()
	}
	if e := ctx.Err(); e != nil {
		out["err"] = e.Error()
	}
	*r = out
	return nil
}

// CallPyBackground calls the Python handler args.Method from a goroutine of
// its own with context.Background(), as code running outside any call does:
// the call goes over any connection that takes host calls.
func (a *App) CallPyBackground(ctx context.Context, args HostArgs, r *any) error {
	type outcome struct {
		result any
		err    error
	}
	done := make(chan outcome, 1)
	go func() {
		var o outcome
		o.err = gotask.CallHost(context.Background(), args.Method, args.Arg, &o.result)
		done <- o
	}()
	select {
	case o := <-done:
		*r = o.result
		return o.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Nest returns args.Arg when args.Depth is 0; otherwise it calls the Python
// handler "Py.Nest" with {"depth": Depth-1, "arg": Arg}, which calls App.Nest
// back, and returns what it returns: calls nested both ways on one connection.
func (a *App) Nest(ctx context.Context, args struct {
	Depth int `msgpack:"depth,alias:Depth"`
	Arg   any `msgpack:"arg,alias:Arg"`
}, r *any) error {
	if args.Depth <= 0 {
		*r = args.Arg
		return nil
	}
	return gotask.CallHost(ctx, "Py.Nest", map[string]any{"depth": args.Depth - 1, "arg": args.Arg}, r)
}

// GetConfig returns the value the Python client was given for key (the host
// call trio_gotask.Config). A key it does not have fails with the
// *gotask.HostError as is: its text says not_found.
func (a *App) GetConfig(ctx context.Context, key string, r *any) error {
	return gotask.Config(ctx, key, r)
}

// HostLatency calls the Python handler args.Method n times, one after the
// other, with 0 ... n-1, and returns the median and the 99th percentile of
// the calls' durations as measured in Go, in nanoseconds: {"p50_ns": ...,
// "p99_ns": ...}, the round trip Go -> Python -> Go.
func (a *App) HostLatency(ctx context.Context, args struct {
	Method string `msgpack:"method,alias:Method"`
	N      int    `msgpack:"n,alias:N"`
}, r *map[string]any) error {
	if args.N <= 0 {
		return fmt.Errorf("n must be at least 1, not %d", args.N)
	}
	durations := make([]time.Duration, args.N)
	for i := range args.N {
		var reply any
		start := time.Now()
		if err := gotask.CallHost(ctx, args.Method, i, &reply); err != nil {
			return err
		}
		durations[i] = time.Since(start)
	}
	slices.Sort(durations)
	at := func(q float64) int64 { return durations[int(q*float64(args.N-1))].Nanoseconds() }
	*r = map[string]any{"p50_ns": at(0.5), "p99_ns": at(0.99)}
	return nil
}

// Count sends 0, 1, ... n-1, then ends the stream.
func (a *App) Count(ctx context.Context, n int, out *gotask.Stream[int]) error {
	for i := 0; i < n; i++ {
		if err := out.Send(i); err != nil {
			return err
		}
	}
	return nil
}

// CountFail sends 0, 1, ... N-1, then ends the stream with the error Message;
// Python sends {"N": 3, "Message": "boom"}.
func (a *App) CountFail(args struct {
	N       int    `msgpack:"N"`
	Message string `msgpack:"Message"`
}, out *gotask.Stream[int]) error {
	for i := 0; i < args.N; i++ {
		if err := out.Send(i); err != nil {
			return err
		}
	}
	return errors.New(args.Message)
}

// Chunks sends Count chunks of Size bytes, chunk i filled with byte(i);
// Python sends {"Count": 3, "Size": 1024}.
func (a *App) Chunks(args struct{ Count, Size int }, out *gotask.Stream[[]byte]) error {
	if args.Size < 0 {
		return fmt.Errorf("negative size %d", args.Size)
	}
	chunk := make([]byte, args.Size) // Send encodes it at once: reusing it is safe
	for i := 0; i < args.Count; i++ {
		for j := range chunk {
			chunk[j] = byte(i)
		}
		if err := out.Send(chunk); err != nil {
			return err
		}
	}
	return nil
}

var (
	endlessTried     counter // the Sends Endless began
	endlessSent      counter // the Sends of Endless that succeeded
	streamsCancelled counter // the Endless streams that ended because their context did
)

// Endless sends chunks of Size zero bytes until Send fails, which it does
// once the stream is cancelled (or times out), and returns Send's error;
// Python sends {"Size": 1024}. It counts in endlessTried, endlessSent and
// streamsCancelled, which StreamState reports.
func (a *App) Endless(ctx context.Context, args struct{ Size int }, out *gotask.Stream[[]byte]) error {
	if args.Size < 0 {
		return fmt.Errorf("negative size %d", args.Size)
	}
	chunk := make([]byte, args.Size)
	for {
		endlessTried.add(1)
		if err := out.Send(chunk); err != nil {
			if ctx.Err() != nil {
				streamsCancelled.add(1)
			}
			return err
		}
		endlessSent.add(1)
	}
}

// StreamState waits until Endless has begun at least Tried Sends and at
// least Cancelled of its streams ended by their context, then returns the
// counts: {"tried": ..., "sent": ..., "cancelled": ...}; Python sends
// {"Tried": 5, "Cancelled": 1}. A test learns so that a stream blocks (its
// Sends stop at some count) or was cancelled, without guessing how long that
// takes.
func (a *App) StreamState(ctx context.Context, args struct{ Tried, Cancelled int64 }, r *map[string]int64) error {
	if _, err := endlessTried.wait(ctx, args.Tried); err != nil {
		return err
	}
	if _, err := streamsCancelled.wait(ctx, args.Cancelled); err != nil {
		return err
	}
	*r = map[string]int64{"tried": endlessTried.value(), "sent": endlessSent.value(), "cancelled": streamsCancelled.value()}
	return nil
}

// BadItem sends 1, then a time in the year 12000, which Python cannot hold:
// Send refuses it with a *gotask.ItemError, which BadItem returns, so the
// stream ends with a bad_reply error after the item 1.
func (a *App) BadItem(_ any, out *gotask.Stream[any]) error {
	if err := out.Send(1); err != nil {
		return err
	}
	err := out.Send(time.Date(12000, time.January, 1, 0, 0, 0, 0, time.UTC))
	var ie *gotask.ItemError
	if !errors.As(err, &ie) {
		return fmt.Errorf("sending a time in the year 12000: want a *gotask.ItemError, got %v", err)
	}
	return err
}

// Words sends the words of text, split at white space.
func (a *App) Words(text string, out *gotask.Stream[string]) error {
	for _, w := range strings.Fields(text) {
		if err := out.Send(w); err != nil {
			return err
		}
	}
	return nil
}

func main() {
	gotask.AddHook(cache.hook()) // see hooks.go; a sidecar without one leaves this out
	if err := gotask.Register(new(App)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	gotask.Run()
}
