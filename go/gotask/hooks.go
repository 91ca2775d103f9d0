package gotask

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Hook is work that lives as long as the sidecar: a database pool opened
// before the first call and closed after the last, a cache kept warm in the
// background. RunWith (and Run) runs the hooks of the Server it serves; see
// "Lifecycle hooks" in the package documentation for the order and the
// failures. Each function may be nil, meaning nothing to do.
type Hook struct {
	// Name names the hook in logs and errors; empty means "#1", "#2"... in
	// the order added.
	Name string
	// Start runs before the sidecar serves (before its handshake), the hooks
	// one after the other in the order added. ctx ends if the sidecar is
	// asked to stop meanwhile. An error stops the hooks started before and
	// the sidecar, which exits with status 1.
	Start func(ctx context.Context) error
	// Run runs in a goroutine of its own while the sidecar serves, once every
	// Start returned. ctx ends at shutdown, once the calls in flight are
	// done; Run should then return. Returning nil earlier ends just the Run;
	// an error (other than ctx's, once it ended) stops the sidecar, which
	// exits with status 1.
	Run func(ctx context.Context) error
	// Stop runs at shutdown, after the calls in flight are done and every Run
	// returned, the hooks in reverse order, and only for hooks whose Start
	// succeeded (or that have none). ctx ends when the grace period does: a
	// Stop still running then is abandoned, and the ones after it skipped.
	// An error makes the sidecar exit with status 1.
	Stop func(ctx context.Context) error
}

// hookList is a Server's hooks, closed to additions once RunWith takes them.
type hookList struct {
	mu    sync.Mutex
	hooks []Hook
	taken bool
}

// AddHook adds h to the hooks RunWith runs. Add hooks before RunWith (or Run):
// it panics once RunWith has started the hooks, as from a Start, where a hook
// added would be neither started nor stopped in order. Serve and ServeConn
// run no hooks: a program that embeds a Server starts and stops its own
// resources around them.
func (s *Server) AddHook(h Hook) {
	s.hooks.mu.Lock()
	defer s.hooks.mu.Unlock()
	if s.hooks.taken {
		name := h.Name
		if name == "" {
			name = "without a name"
		}
		panic("gotask: AddHook (hook " + name + ") after RunWith started the hooks; add hooks before RunWith")
	}
	s.hooks.hooks = append(s.hooks.hooks, h)
}

// AddHook adds h to the hooks of DefaultServer, which Run runs.
func AddHook(h Hook) { DefaultServer.AddHook(h) }

// takeHooks returns the hooks to run, in the order added; AddHook panics
// from then on.
func (s *Server) takeHooks() []Hook {
	s.hooks.mu.Lock()
	defer s.hooks.mu.Unlock()
	s.hooks.taken = true
	return append([]Hook(nil), s.hooks.hooks...)
}

// runningHook is one hook while RunWith runs it.
type runningHook struct {
	Hook
	name string
	done chan struct{} // closed when Run returned; nil until Run is started
	err  error         // Run's error, set before done is closed
	// early says Run returned before its context ended, set before done is
	// closed: any error is then a failure, even ctx's own.
	early bool
	told  bool // Run's error is reported already
}

// hookSet runs a Server's hooks for RunWith. Its methods are called from
// RunWith's goroutine only, which alone writes to stderr.
type hookSet struct {
	started []*runningHook // the hooks whose Start succeeded, in order
	ctx     context.Context
	cancel  context.CancelFunc
	once    sync.Once
	failed  chan struct{} // closed when a Run fails while the sidecar serves
	failure *runningHook  // that Run; set before failed is closed
}

// startHooks calls the Starts of hooks in order. When one fails it reports
// why on stderr, stops the hooks started before it within grace, and
// returns nil.
func startHooks(ctx context.Context, hooks []Hook, grace time.Duration, stderr io.Writer) *hookSet {
	runCtx, cancel := context.WithCancel(context.Background())
	hs := &hookSet{ctx: runCtx, cancel: cancel, failed: make(chan struct{})}
	for i, h := range hooks {
		rh := &runningHook{Hook: h, name: h.Name}
		if rh.name == "" {
			rh.name = fmt.Sprintf("#%d", i+1)
		}
		if err := callHook(rh.Start, ctx); err != nil {
			reportHook(stderr, rh.name, "start", err)
			stopCtx, stopCancel := graceContext(grace)
			defer stopCancel()
			hs.stop(stopCtx, stderr)
			return nil
		}
		hs.started = append(hs.started, rh)
	}
	return hs
}

// graceContext returns a context that ends when a grace period starting now
// does; a negative grace has ended already.
func graceContext(grace time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), grace)
}

// run starts the Runs, each in a goroutine of its own.
func (hs *hookSet) run() {
	for _, rh := range hs.started {
		if rh.Run == nil {
			continue
		}
		rh.done = make(chan struct{})
		go func() {
			rh.err = callHook(rh.Run, hs.ctx)
			rh.early = hs.ctx.Err() == nil
			if rh.err != nil && rh.early {
				hs.once.Do(func() {
					hs.failure = rh
					close(hs.failed)
				})
			}
			close(rh.done)
		}()
	}
}

// reportFailure reports the Run that closed failed, once the caller received
// from it.
func (hs *hookSet) reportFailure(stderr io.Writer) {
	<-hs.failure.done
	hs.failure.told = true
	reportHook(stderr, hs.failure.name, "run", hs.failure.err)
}

// stop ends the Runs' context, waits for the Runs to return, then calls the
// Stops in reverse order, all until ctx ends. It reports on stderr each
// failure not reported yet, and what it stopped waiting for, and returns
// whether a hook failed (timeouts are not failures of the hook).
func (hs *hookSet) stop(ctx context.Context, stderr io.Writer) (failed bool) {
	if hs == nil {
		return false
	}
	hs.cancel()
	for _, rh := range hs.started {
		if rh.done == nil {
			continue
		}
		select {
		case <-rh.done:
		case <-ctx.Done():
			select {
			case <-rh.done:
			default:
				fmt.Fprintf(stderr, "gotask: hook %s: run: still running when the grace period ended; not waiting for it\n", rh.name)
				continue
			}
		}
		if rh.err == nil || (!rh.early && isContextEnd(rh.err)) {
			continue
		}
		failed = true
		if !rh.told {
			reportHook(stderr, rh.name, "run", rh.err)
		}
	}
	for i := len(hs.started) - 1; i >= 0; i-- {
		rh := hs.started[i]
		if rh.Stop == nil {
			continue
		}
		if ctx.Err() != nil {
			fmt.Fprintf(stderr, "gotask: hook %s: stop: skipped, the grace period is over\n", rh.name)
			continue
		}
		done := make(chan error, 1)
		go func() { done <- callHook(rh.Stop, ctx) }()
		select {
		case err := <-done:
			if err != nil {
				reportHook(stderr, rh.name, "stop", err)
				failed = true
			}
		case <-ctx.Done():
			fmt.Fprintf(stderr, "gotask: hook %s: stop: still running when the grace period ended; not waiting for it\n", rh.name)
		}
	}
	return failed
}

// isContextEnd reports whether err is how a Run says that its context ended.
func isContextEnd(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// hookPanic is a hook function's panic, as an error.
type hookPanic struct {
	value any
	stack string
}

func (p *hookPanic) Error() string { return fmt.Sprintf("panic: %v", p.value) }

// callHook calls f (nil: nothing) with ctx, turning a panic into a
// *hookPanic.
func callHook(f func(context.Context) error, ctx context.Context) (err error) {
	if f == nil {
		return nil
	}
	defer func() {
		if r := recover(); r != nil {
			stack := panicStack()
			// The frames from callHook on are gotask's, not the hook's.
			if i := strings.Index(stack, "gotask.callHook\n"); i >= 0 {
				stack = strings.TrimSuffix(stack[:strings.LastIndexByte(stack[:i], '\n')+1], "\n")
			}
			err = &hookPanic{value: r, stack: stack}
		}
	}()
	return f(ctx)
}

// reportHook writes "gotask: hook NAME: PHASE: ERR" on stderr, then the
// stack of a panic, indented.
func reportHook(stderr io.Writer, name, phase string, err error) {
	fmt.Fprintf(stderr, "gotask: hook %s: %s: %v\n", name, phase, err)
	var p *hookPanic
	if errors.As(err, &p) && p.stack != "" {
		fmt.Fprintf(stderr, "\t%s\n", strings.ReplaceAll(p.stack, "\n", "\n\t"))
	}
}
