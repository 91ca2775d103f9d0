package gotask

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// events records what hooks did, in order.
type events struct {
	mu   sync.Mutex
	list []string
}

func (e *events) add(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = append(e.list, fmt.Sprintf(format, args...))
}

func (e *events) get() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.list)
}

// recordingHook records its Start, the start and end of its Run (which
// returns when its context ends, after sending on running), and its Stop.
func recordingHook(ev *events, name string, running chan<- string) Hook {
	return Hook{
		Name: name,
		Start: func(ctx context.Context) error {
			ev.add("start %s", name)
			return nil
		},
		Run: func(ctx context.Context) error {
			ev.add("run %s", name)
			running <- name
			<-ctx.Done()
			ev.add("run %s ended", name)
			return ctx.Err()
		},
		Stop: func(ctx context.Context) error {
			if _, ok := ctx.Deadline(); !ok {
				ev.add("stop %s without a deadline", name)
			}
			ev.add("stop %s", name)
			return nil
		},
	}
}

// hookedRun is run(...) in a goroutine, standalone, with a test's stdout and
// stderr.
type hookedRun struct {
	t         *testing.T
	cancel    context.CancelFunc // a signal: shut down
	exit      chan int
	stderr    *syncBuffer
	handshake string // "" when run returned before it
	stdin     *io.PipeWriter
	stdout    *io.PipeReader
}

// startRun starts run(srv, o) and reads its handshake.
func startRun(t *testing.T, srv *Server, o Options) *hookedRun {
	t.Helper()
	o.Standalone = true
	ctx, cancel := context.WithCancel(context.Background())
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	r := &hookedRun{t: t, cancel: cancel, exit: make(chan int, 1), stderr: new(syncBuffer), stdin: inW, stdout: outR}
	go func() {
		code := run(ctx, srv, o, false, inR, outW, r.stderr)
		outW.Close()
		r.exit <- code
	}()
	t.Cleanup(func() {
		cancel()
		inW.Close()
		outR.Close()
		if t.Failed() {
			t.Logf("stderr:\n%s", r.stderr.String())
		}
	})
	r.handshake, _ = readLine(outR)
	return r
}

// client connects to the socket sidecar r serves.
func (r *hookedRun) client() *testClient {
	r.t.Helper()
	parts := strings.Split(r.handshake, "|")
	if len(parts) != 4 {
		r.t.Fatalf("handshake %q", r.handshake)
	}
	conn, err := net.Dial(parts[2], parts[3])
	if err != nil {
		r.t.Fatal(err)
	}
	return newTestClient(r.t, conn)
}

func (r *hookedRun) waitExit() int {
	r.t.Helper()
	select {
	case code := <-r.exit:
		return code
	case <-time.After(hangGuard):
		r.t.Fatalf("run did not return; stderr:\n%s", r.stderr.String())
		return -1
	}
}

func receive[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(hangGuard):
		t.Fatal("timed out")
		panic("unreachable")
	}
}

// TestHooksStartInOrderAndStopInReverse: the Starts run before the
// handshake, in the order added; the Runs while serving; at shutdown the
// Runs' contexts end, and once the Runs returned the Stops run in reverse
// order, with the grace deadline. A Run that returns nil early ends just
// itself, and hooks without functions are no trouble.
func TestHooksStartInOrderAndStopInReverse(t *testing.T) {
	ev := new(events)
	running := make(chan string, 3)
	early := make(chan struct{})
	srv, _ := newTestServer(t, newSvc())
	for _, name := range []string{"a", "b", "c"} {
		srv.AddHook(recordingHook(ev, name, running))
	}
	srv.AddHook(Hook{})
	srv.AddHook(Hook{Name: "once", Run: func(ctx context.Context) error { close(early); return nil }})
	r := startRun(t, srv, Options{Address: "127.0.0.1:0", Grace: time.Minute})
	if got := ev.get(); len(got) < 3 || !slices.Equal(got[:3], []string{"start a", "start b", "start c"}) {
		t.Fatalf("at the handshake %q: %v", r.handshake, got)
	}
	for range 3 {
		receive(t, running)
	}
	receive(t, early)
	c := r.client()
	if err := c.call("Svc.Teapot", nil, nil); errType(err) != "teapot" {
		t.Fatalf("a call after a Run returned nil: %v", err)
	}
	c.rwc.Close()
	r.cancel()
	if code := r.waitExit(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	got := ev.get()
	runs, ended, stops := got[3:6], got[6:9], got[9:]
	slices.Sort(runs)
	slices.Sort(ended)
	if !slices.Equal(runs, []string{"run a", "run b", "run c"}) ||
		!slices.Equal(ended, []string{"run a ended", "run b ended", "run c ended"}) ||
		!slices.Equal(stops, []string{"stop c", "stop b", "stop a"}) {
		t.Fatalf("events %q", got)
	}
	if s := r.stderr.String(); s != "" {
		t.Fatalf("stderr %q", s)
	}
}

// TestAHookStartErrorStopsTheStartedOnes: a Start that fails stops the hooks
// started before it, in reverse order, starts no other hook and no Run, and
// the sidecar exits with status 1 before its handshake, saying which hook
// failed and why. Its socket is gone.
func TestAHookStartErrorStopsTheStartedOnes(t *testing.T) {
	ev := new(events)
	running := make(chan string, 3)
	srv, _ := newTestServer(t, newSvc())
	srv.AddHook(recordingHook(ev, "a", running))
	srv.AddHook(recordingHook(ev, "b", running))
	failing := recordingHook(ev, "", running)
	failing.Start = func(ctx context.Context) error {
		ev.add("start #3")
		return errors.New("no database at db.internal:5432")
	}
	srv.AddHook(failing)
	srv.AddHook(recordingHook(ev, "d", running))
	socket := filepath.Join(t.TempDir(), "app.sock")
	r := startRun(t, srv, Options{Address: socket, Grace: time.Minute})
	if code := r.waitExit(); code != 1 || r.handshake != "" {
		t.Fatalf("exit %d, handshake %q", code, r.handshake)
	}
	if got, want := ev.get(), []string{"start a", "start b", "start #3", "stop b", "stop a"}; !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
	if s := r.stderr.String(); s != "gotask: hook #3: start: no database at db.internal:5432\n" {
		t.Fatalf("stderr %q", s)
	}
	if _, err := os.Lstat(socket); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}
}

// TestAHookRunErrorStopsTheSidecar: a Run that fails while the sidecar
// serves shuts it down as a signal would, the calls in flight finishing
// first, and the sidecar exits with status 1 saying which hook failed and
// why, once.
func TestAHookRunErrorStopsTheSidecar(t *testing.T) {
	ev := new(events)
	running := make(chan string, 2)
	svc := newSvc()
	srv, _ := newTestServer(t, svc)
	srv.AddHook(recordingHook(ev, "a", running))
	feed := recordingHook(ev, "feed", running)
	lost := make(chan struct{})
	feed.Run = func(ctx context.Context) error {
		<-lost
		return errors.New("lost the feed")
	}
	srv.AddHook(feed)
	r := startRun(t, srv, Options{Address: "127.0.0.1:0", Grace: time.Minute})
	c := r.client()
	_, block := c.start("Svc.Block", nil, nil)
	receive(t, svc.started)
	close(lost)
	receive(t, c.goaway)
	if slices.Contains(ev.get(), "run a ended") {
		t.Fatalf("a Run's context ended with a call in flight: %q", ev.get())
	}
	close(svc.release)
	if err := c.wait(block, nil); err != nil {
		t.Fatalf("the call in flight: %v", err)
	}
	c.rwc.Close() // Shutdown need not linger for it
	if code := r.waitExit(); code != 1 {
		t.Fatalf("exit %d", code)
	}
	if got := ev.get(); !slices.Equal(got[len(got)-3:], []string{"run a ended", "stop feed", "stop a"}) {
		t.Fatalf("events %q", got)
	}
	if s := r.stderr.String(); s != "gotask: hook feed: run: lost the feed\n" {
		t.Fatalf("stderr %q", s)
	}
}

// pool is a hook's resource: open from its Start to its Stop.
type pool struct {
	mu     sync.Mutex
	open   bool
	runCtx context.Context // the hook's Run's
}

func (p *pool) state() (open, running bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open, p.runCtx != nil && p.runCtx.Err() == nil
}

// PoolSvc uses a pool in its one method.
type PoolSvc struct {
	pool    *pool
	entered chan struct{}
	release chan struct{}
}

// Use waits for release, ignoring its context, then reports whether the
// pool is still open and its hook's Run still running.
func (s *PoolSvc) Use(_ any, r *[2]bool) error {
	s.entered <- struct{}{}
	<-s.release
	open, running := s.pool.state()
	*r = [2]bool{open, running}
	return nil
}

// TestAHookOutlivesTheCallsInFlight: at shutdown, a call in flight still
// finds its hook's resource open and its Run running; the Run's context
// ends after the call, and the Stop comes after the Run returned.
func TestAHookOutlivesTheCallsInFlight(t *testing.T) {
	p := new(pool)
	svc := &PoolSvc{pool: p, entered: make(chan struct{}, 1), release: make(chan struct{})}
	srv := NewServer()
	if err := srv.Register(svc); err != nil {
		t.Fatal(err)
	}
	ranDone := make(chan struct{})
	var stopSawRun bool
	srv.AddHook(Hook{
		Name:  "pool",
		Start: func(ctx context.Context) error { p.mu.Lock(); p.open = true; p.mu.Unlock(); return nil },
		Run: func(ctx context.Context) error {
			p.mu.Lock()
			p.runCtx = ctx
			p.mu.Unlock()
			<-ctx.Done()
			close(ranDone)
			return nil
		},
		Stop: func(ctx context.Context) error {
			stopSawRun = isClosed(ranDone)
			p.mu.Lock()
			p.open = false
			p.mu.Unlock()
			return nil
		},
	})
	r := startRun(t, srv, Options{Address: "127.0.0.1:0", Grace: time.Minute})
	c := r.client()
	_, use := c.start("PoolSvc.Use", nil, nil)
	receive(t, svc.entered)
	r.cancel()
	receive(t, c.goaway)
	close(svc.release)
	var got [2]bool
	if err := c.wait(use, &got); err != nil || got != [2]bool{true, true} {
		t.Fatalf("the call in flight saw open, running = %v (%v), want both", got, err)
	}
	c.rwc.Close() // Shutdown need not linger for it
	if code := r.waitExit(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if open, _ := p.state(); open || !stopSawRun {
		t.Fatalf("after the exit: open %v, Stop after the Run returned %v", open, stopSawRun)
	}
}

// TestAHookStopThatBlocksIsAbandonedAtTheEndOfTheGracePeriod: a Stop still
// running when the grace period ends is logged and not waited for; the
// Stops after it are skipped, logged too; the sidecar exits (with status 0:
// an overrun is not a hook's failure) with the Stop still blocked.
func TestAHookStopThatBlocksIsAbandonedAtTheEndOfTheGracePeriod(t *testing.T) {
	ev := new(events)
	running := make(chan string, 2)
	srv, _ := newTestServer(t, newSvc())
	srv.AddHook(recordingHook(ev, "first", running))
	stuck := make(chan struct{})
	t.Cleanup(func() { close(stuck) })
	srv.AddHook(Hook{Name: "stuck", Stop: func(ctx context.Context) error {
		<-stuck // ignores ctx
		return nil
	}})
	r := startRun(t, srv, Options{Address: "127.0.0.1:0", Grace: 50 * time.Millisecond})
	receive(t, running)
	r.cancel()
	if code := r.waitExit(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if isClosed(stuck) {
		t.Fatal("the Stop returned")
	}
	want := "gotask: hook stuck: stop: still running when the grace period ended; not waiting for it\n" +
		"gotask: hook first: stop: skipped, the grace period is over\n"
	if s := r.stderr.String(); s != want {
		t.Fatalf("stderr %q, want %q", s, want)
	}
	if slices.Contains(ev.get(), "stop first") {
		t.Fatalf("a Stop after the grace period ran: %q", ev.get())
	}
}

// TestHookPanicsAreErrorsNamingTheHook: a panic in a Start, a Run or a Stop
// is that hook's error: the line names the hook and the phase, the stack
// that follows names the panicking function, and the exit status is 1.
func TestHookPanicsAreErrorsNamingTheHook(t *testing.T) {
	for _, phase := range []string{"start", "run", "stop"} {
		t.Run(phase, func(t *testing.T) {
			srv, _ := newTestServer(t, newSvc())
			h := Hook{Name: "fragile"}
			explode := func(ctx context.Context) error { panic("kaboom in " + phase) }
			switch phase {
			case "start":
				h.Start = explode
			case "run":
				h.Run = explode
			case "stop":
				h.Stop = explode
			}
			srv.AddHook(h)
			r := startRun(t, srv, Options{Address: "127.0.0.1:0", Grace: time.Minute})
			if phase == "stop" {
				r.cancel()
			}
			if code := r.waitExit(); code != 1 {
				t.Fatalf("exit %d", code)
			}
			s := r.stderr.String()
			line := fmt.Sprintf("gotask: hook fragile: %s: panic: kaboom in %s\n", phase, phase)
			if !strings.HasPrefix(s, line) || !strings.Contains(s, "TestHookPanicsAreErrorsNamingTheHook") ||
				strings.Contains(s, "callHook") || strings.Count(s, "gotask: ") != 1 {
				t.Fatalf("stderr %q", s)
			}
		})
	}
}

// TestAddHookOnceTheHooksStartedPanics: a hook added from a Start would be
// neither started nor stopped in order: AddHook panics, saying so.
func TestAddHookOnceTheHooksStartedPanics(t *testing.T) {
	srv, _ := newTestServer(t, newSvc())
	var recovered any
	srv.AddHook(Hook{Name: "adder", Start: func(ctx context.Context) error {
		defer func() { recovered = recover() }()
		srv.AddHook(Hook{Name: "late"})
		return nil
	}})
	r := startRun(t, srv, Options{Address: "127.0.0.1:0", Grace: time.Minute})
	r.cancel()
	if code := r.waitExit(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if s, _ := recovered.(string); !strings.Contains(s, "AddHook (hook late) after RunWith started the hooks") {
		t.Fatalf("recovered %v", recovered)
	}
}

// TestHooksRunWithListenOnPipe: with -listen-on-pipe too, the Starts run
// before the handshake and the Stops once standard input ends.
func TestHooksRunWithListenOnPipe(t *testing.T) {
	ev := new(events)
	running := make(chan string, 1)
	srv, _ := newTestServer(t, newSvc())
	srv.AddHook(recordingHook(ev, "a", running))
	r := startRun(t, srv, Options{ListenOnPipe: true, Grace: time.Minute})
	if got := ev.get(); !strings.HasSuffix(r.handshake, "|pipe|-") || len(got) == 0 || got[0] != "start a" {
		t.Fatalf("handshake %q, events %q", r.handshake, got)
	}
	go io.Copy(io.Discard, r.stdout) // its $hello
	receive(t, running)
	r.stdin.Close()
	if code := r.waitExit(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if got, want := ev.get(), []string{"start a", "run a", "run a ended", "stop a"}; !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
}

// TestDescribeModeRunsNoHook: GOTASK_DESCRIBE=1 describes the services and
// exits without starting a hook: the example's, told to fail its Start and
// to log each step, neither fails nor logs.
func TestDescribeModeRunsNoHook(t *testing.T) {
	t.Parallel()
	logFile := filepath.Join(t.TempDir(), "hook.log")
	cmd := exec.Command(exampleBin)
	cmd.Env = append(os.Environ(), describeEnv+"=1", "GOTASK_EXAMPLE_HOOK_FAIL=start", "GOTASK_EXAMPLE_HOOK_LOG="+logFile)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || !strings.HasPrefix(string(out), `{"describe":`) {
		t.Fatalf("%v; stdout %.80q; stderr %q", err, out, stderr.String())
	}
	if _, err := os.Stat(logFile); !os.IsNotExist(err) {
		t.Fatalf("a hook ran: %v", err)
	}
}
