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
package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
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

// Now returns the current time; Python receives an aware datetime in UTC.
func (a *App) Now(_ any, r *time.Time) error {
	*r = time.Now().UTC()
	return nil
}

// Fail returns an error with message msg.
func (a *App) Fail(msg string, r *any) error {
	return errors.New(msg)
}

// Panic panics with msg; the sidecar answers with a "panic" error and keeps serving.
func (a *App) Panic(msg string, r *any) error {
	panic(msg)
}

// cancelled counts the Slow calls that ended because their context did.
var (
	cancelled   atomic.Int64
	cancelMu    sync.Mutex
	cancelCh    = make(chan struct{}) // closed and replaced on every cancellation
	errNegative = errors.New("negative count")
)

func noteCancelled() {
	cancelMu.Lock()
	cancelled.Add(1)
	close(cancelCh)
	cancelCh = make(chan struct{})
	cancelMu.Unlock()
}

// Slow waits ms milliseconds and returns ms, or returns the context's error
// as soon as the call is cancelled or its deadline passes.
func (a *App) Slow(ctx context.Context, ms int, r *int) error {
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		*r = ms
		return nil
	case <-ctx.Done():
		noteCancelled()
		return ctx.Err()
	}
}

// WaitCancelled waits until at least n Slow calls were cancelled and returns
// how many were.
func (a *App) WaitCancelled(ctx context.Context, n int64, r *int64) error {
	if n < 0 {
		return errNegative
	}
	for {
		cancelMu.Lock()
		got, ch := cancelled.Load(), cancelCh
		cancelMu.Unlock()
		if got >= n {
			*r = got
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
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

// Log writes msg as one line to standard error.
func (a *App) Log(msg string, r *any) error {
	fmt.Fprintln(os.Stderr, msg)
	return nil
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

func main() {
	if err := gotask.Register(new(App)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	gotask.Run()
}
