package gotask

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// exampleBin is the example sidecar, built once by TestMain.
var exampleBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gotask-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	exampleBin = filepath.Join(dir, "example")
	cmd := exec.Command("go", "build", "-o", exampleBin, "../example")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the example sidecar:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer collects a child's standard error.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type sidecar struct {
	t         *testing.T
	cmd       *exec.Cmd
	stdin     *os.File // our end of its standard input
	stdout    *bufio.Reader
	stdoutF   *os.File
	stderr    *syncBuffer
	transport string
	address   string
	exited    chan struct{}
	waitErr   error
}

// startSidecar starts the example with the cookie and waits for its handshake.
func startSidecar(t *testing.T, cookie bool, args ...string) *sidecar {
	t.Helper()
	return startSidecarEnv(t, nil, cookie, args...)
}

// startSidecarEnv is startSidecar with extra environment variables.
func startSidecarEnv(t *testing.T, env []string, cookie bool, args ...string) *sidecar {
	t.Helper()
	return startProgram(t, exampleBin, env, cookie, args...)
}

// startProgram is startSidecarEnv for the program bin.
func startProgram(t *testing.T, bin string, env []string, cookie bool, args ...string) *sidecar {
	t.Helper()
	sc := &sidecar{t: t, stderr: new(syncBuffer), exited: make(chan struct{})}
	sc.cmd = exec.Command(bin, args...)
	sc.cmd.Env = append(os.Environ(), env...)
	if cookie {
		sc.cmd.Env = append(sc.cmd.Env, MagicCookieKey+"="+MagicCookieValue)
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	sc.cmd.Stdin, sc.cmd.Stdout, sc.cmd.Stderr = inR, outW, sc.stderr
	if err := sc.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	inR.Close()
	outW.Close()
	sc.stdin, sc.stdoutF, sc.stdout = inW, outR, bufio.NewReader(outR)
	go func() {
		sc.waitErr = sc.cmd.Wait()
		close(sc.exited)
	}()
	t.Cleanup(func() {
		sc.cmd.Process.Kill()
		<-sc.exited
		inW.Close()
		outR.Close()
		// Killed, it left the private folder it made for its socket (the Python
		// client removes it likewise).
		if dir := filepath.Dir(sc.address); sc.transport == "unix" && strings.HasPrefix(filepath.Base(dir), "gotask-") {
			os.Remove(sc.address)
			os.Remove(dir)
		}
		if t.Failed() {
			t.Logf("sidecar stderr:\n%s", sc.stderr.String())
		}
	})
	if !cookie && !contains(args, "-standalone") {
		return sc
	}
	line := make(chan string, 1)
	go func() {
		s, _ := sc.stdout.ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		parts := strings.Split(strings.TrimSuffix(s, "\n"), "|")
		if len(parts) != 4 || parts[0] != "gotask" || parts[1] != strconv.Itoa(ProtocolVersion) {
			t.Fatalf("bad handshake %q; stderr: %s", s, sc.stderr.String())
		}
		sc.transport, sc.address = parts[2], parts[3]
	case <-time.After(hangGuard):
		t.Fatalf("no handshake in %v; stderr: %s", hangGuard, sc.stderr.String())
	}
	return sc
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// waitExit waits for the sidecar to exit and returns its status.
func (sc *sidecar) waitExit() int {
	sc.t.Helper()
	select {
	case <-sc.exited:
	case <-time.After(hangGuard):
		sc.t.Fatalf("sidecar did not exit; stderr: %s", sc.stderr.String())
	}
	return sc.cmd.ProcessState.ExitCode()
}

func (sc *sidecar) dial() net.Conn {
	sc.t.Helper()
	network := sc.transport
	c, err := net.Dial(network, sc.address)
	if err != nil {
		sc.t.Fatal(err)
	}
	sc.t.Cleanup(func() { c.Close() })
	return c
}

func (sc *sidecar) client() *testClient { return newTestClient(sc.t, sc.dial()) }

// pipeClient talks to a -listen-on-pipe sidecar over its standard input and output.
func (sc *sidecar) pipeClient() *testClient {
	return newTestClient(sc.t, pipeConn{sc.stdout, sc.stdin})
}

func TestSidecarUnix(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t, true)
	if sc.transport != "unix" {
		t.Fatalf("transport %q, want unix", sc.transport)
	}
	c := sc.client()
	checkCalls(t, c)
	checkCancel(t, c)
	checkConcurrent(t, c)

	// Closing standard input shuts the sidecar down and removes its socket.
	sc.stdin.Close()
	if code := sc.waitExit(); code != 0 {
		t.Fatalf("exit status %d after stdin EOF", code)
	}
	if _, err := os.Stat(sc.address); !os.IsNotExist(err) {
		t.Fatalf("socket file left behind: %v", err)
	}
	if _, err := os.Stat(filepath.Dir(sc.address)); !os.IsNotExist(err) {
		t.Fatalf("private directory left behind: %v", err)
	}
}

func TestSidecarTCP(t *testing.T) {
	t.Parallel()
	// A grace no machine uses up here: only the call's end may end the shutdown.
	sc := startSidecar(t, true, "-address", "127.0.0.1:0", "-grace", "1h")
	if sc.transport != "tcp" || strings.HasSuffix(sc.address, ":0") {
		t.Fatalf("handshake %s|%s, want tcp with a real port", sc.transport, sc.address)
	}
	c := startTestClient(t, sc.dial(), make(chan *message, 1))
	c.sendHello(map[string]any{"max_frame_size": DefaultMaxFrameSize, "max_host_calls": 1})
	var hi map[string]any
	if err := c.call("App.Hi", "tcp", &hi); err != nil || hi["hello"] != "tcp" {
		t.Fatalf("Hi: %v %v", hi, err)
	}

	// SIGTERM lets an in-flight call finish, answers new calls with
	// shutting_down, then exits 0. The call in flight waits for its host call
	// (to us), which the test answers when it has seen all that.
	_, inFlight := c.start("App.CallPy", map[string]any{"method": "Py.Finish", "arg": nil}, nil)
	hostCall := c.next() // the call is running
	wantRequest(t, hostCall, "Py.Finish")
	if err := sc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.goaway:
	case <-time.After(hangGuard):
		t.Fatal("no $goaway after SIGTERM")
	}
	if err := c.call("App.Hi", "x", nil); errType(err) != "shutting_down" {
		t.Fatalf("a call after SIGTERM: %v, want shutting_down", err)
	}
	c.respond(hostCall.msgid, nil, "finished")
	var got string
	if err := c.wait(inFlight, &got); err != nil || got != "finished" {
		t.Fatalf("the call in flight: %q %v", got, err)
	}
	if code := sc.waitExit(); code != 0 {
		t.Fatalf("exit status %d after SIGTERM", code)
	}
}

func TestSidecarPipe(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t, true, "-listen-on-pipe")
	if sc.transport != "pipe" || sc.address != "-" {
		t.Fatalf("handshake %s|%s", sc.transport, sc.address)
	}
	c := sc.pipeClient()
	checkCalls(t, c)
	sc.stdin.Close()
	if code := sc.waitExit(); code != 0 {
		t.Fatalf("exit status %d after stdin EOF", code)
	}
	if s := sc.stderr.String(); s != "a log line\n" {
		t.Fatalf("stderr %q, want only the Log call's line", s)
	}
}

func TestSidecarNoCookie(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t, false)
	if code := sc.waitExit(); code != 1 {
		t.Fatalf("exit status %d, want 1", code)
	}
	if s := sc.stderr.String(); !strings.Contains(s, "-standalone") {
		t.Fatalf("no usage hint on stderr: %q", s)
	}
	if b, _ := sc.stdout.ReadString('\n'); b != "" {
		t.Fatalf("stdout not empty: %q", b)
	}
}

func TestSidecarStandalone(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "s.sock")
	sc := startSidecar(t, false, "-standalone", "-address", path)
	if sc.transport != "unix" || sc.address != path {
		t.Fatalf("handshake %s|%s", sc.transport, sc.address)
	}
	var pid int
	if err := sc.client().call("App.Pid", nil, &pid); err != nil || pid != sc.cmd.Process.Pid {
		t.Fatalf("Pid: %d %v", pid, err)
	}
	// Started by hand, SIGINT shuts it down too.
	sc.cmd.Process.Signal(os.Interrupt)
	if code := sc.waitExit(); code != 0 {
		t.Fatalf("exit status %d after SIGINT", code)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("socket file left behind: %v", err)
	}
}

func TestSidecarHostileInput(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t, true)
	inputs := []struct {
		name      string
		data      []byte
		halfClose bool // end the stream after data, so a short frame is truncated
	}{
		{"random", []byte("\x00\x00\x00\x10\xc1\x9a\x17\xfe\x03\x88garbage!!"), true},
		{"truncated", []byte{0, 0, 0, 9, 0x94, 0x00}, true},
		{"4GiB", []byte{0xff, 0xff, 0xff, 0xff}, false},
		{"bad_message", []byte{0, 0, 0, 1, 0x07}, false},
		{"response", []byte{0, 0, 0, 5, 0x94, 0x01, 0x01, 0xc0, 0xc0}, false},
		{"type 3", frameOf(t, []any{3, 1, "App.Hi", "x", nil}), false},
		{"item", frameOf(t, []any{3, 1, 0}), false},
		{"negative type", frameOf(t, []any{-1, 1, "App.Hi", "x", nil}), false},
		{"short request", frameOf(t, []any{0, 1, "App.Hi"}), false},
		{"long request", frameOf(t, []any{0, 1, "App.Hi", "x", nil, nil}), false},
		{"negative msgid", frameOf(t, []any{0, -1, "App.Hi", "x", nil}), false},
		{"msgid 2^32", frameOf(t, []any{0, uint64(1) << 32, "App.Hi", "x", nil}), false},
		{"method not a string", frameOf(t, []any{0, 1, []byte("App.Hi"), "x", nil}), false},
		{"meta a string", frameOf(t, []any{0, 1, "App.Hi", "x", "timeout"}), false},
		{"short notification", frameOf(t, []any{2, "$cancel"}), false},
		{"empty array", frameOf(t, []any{}), false},
		{"trailing bytes", append([]byte{0, 0, 0, 2}, 0x90, 0xc0), false},
		{"deep nesting", deepRequest(100000), false},
	}
	for i, in := range inputs {
		conn := sc.dial().(*net.UnixConn)
		good := sc.client() // opened before, used after: unaffected
		if _, err := conn.Write(in.data); err != nil {
			t.Fatal(err)
		}
		if in.halfClose {
			conn.CloseWrite()
		}
		// The connection may have sent its $hello before it read the bad input,
		// and nothing else.
		conn.SetReadDeadline(time.Now().Add(hangGuard))
		if payload, err := readFrame(conn, DefaultMaxFrameSize); err == nil {
			if m, err := parseMessage(payload); err != nil || m.method != "$hello" {
				t.Fatalf("%s: the sidecar sent %+v %v", in.name, m, err)
			}
		}
		if n, err := conn.Read(make([]byte, 1)); err == nil || n != 0 {
			t.Fatalf("%s: connection not closed: %d %v", in.name, n, err)
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("%s: connection not closed", in.name)
		}
		var hi map[string]any
		if err := good.call("App.Hi", in.name, &hi); err != nil || hi["hello"] != in.name {
			t.Fatalf("%s: other connection: %v %v", in.name, hi, err)
		}
		// Exactly one line logged per closed connection.
		deadline := time.Now().Add(hangGuard)
		for strings.Count(sc.stderr.String(), "closing connection") < i+1 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: no log line; stderr: %s", in.name, sc.stderr.String())
			}
			time.Sleep(5 * time.Millisecond) // polling a log written by another process
		}
	}
	if n := strings.Count(sc.stderr.String(), "\n"); n != len(inputs) {
		t.Fatalf("%d stderr lines for %d bad connections:\n%s", n, len(inputs), sc.stderr.String())
	}
	var hi map[string]any
	if err := sc.client().call("App.Hi", "after", &hi); err != nil {
		t.Fatal(err)
	}
}

// checkCalls runs every example method once over c.
func checkCalls(t *testing.T, c *testClient) {
	t.Helper()
	var hi map[string]any
	if err := c.call("App.Hi", "Reasno", &hi); err != nil || !reflect.DeepEqual(hi, map[string]any{"hello": "Reasno"}) {
		t.Fatalf("Hi: %v %v", hi, err)
	}
	// Echo round-trips every value of the vectors, bin and int keys included.
	for _, v := range loadVectors(t, "values.json") {
		want := fromJSON(t, v.Value)
		var got any
		if err := c.call("App.Echo", want, &got); err != nil {
			t.Fatalf("Echo %s: %v", v.Name, err)
		}
		if !reflect.DeepEqual(normalize(got), normalize(want)) {
			t.Fatalf("Echo %s: got %#v, want %#v", v.Name, got, want)
		}
	}
	var rev []byte
	if err := c.call("App.Bytes", []byte{1, 2, 3}, &rev); err != nil || !bytes.Equal(rev, []byte{3, 2, 1}) {
		t.Fatalf("Bytes: %v %v", rev, err)
	}
	if err := c.call("App.Bytes", "abc", &rev); errType(err) != "bad_params" {
		t.Fatalf("Bytes given a str: %v, want bad_params", err)
	}
	var large []byte
	if err := c.call("App.Large", 3<<20, &large); err != nil || len(large) != 3<<20 || large[257] != 1 {
		t.Fatalf("Large: %d %v", len(large), err)
	}
	var sum int
	if err := c.call("App.Add", map[string]int{"a": 1, "b": 2}, &sum); err != nil || sum != 3 {
		t.Fatalf("Add: %v %v", sum, err)
	}
	if err := c.call("App.Add", "nope", &sum); errType(err) != "bad_params" {
		t.Fatalf("Add given a str: %v, want bad_params", err)
	}
	var im map[int]string
	if err := c.call("App.IntMap", map[int]string{1: "one", -2: "two"}, &im); err != nil || !reflect.DeepEqual(im, map[int]string{1: "ONE", -2: "TWO"}) {
		t.Fatalf("IntMap: %v %v", im, err)
	}
	var now time.Time
	if err := c.call("App.Now", nil, &now); err != nil || time.Since(now).Abs() > time.Minute {
		t.Fatalf("Now: %v %v", now, err)
	}
	if err := c.call("App.Fail", "boom", nil); errType(err) != "error" || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("Fail: %v", err)
	}
	err := c.call("App.Panic", "oops", nil)
	var re *remoteError
	if errType(err) != "panic" || !strings.Contains(err.Error(), "oops") {
		t.Fatalf("Panic: %v", err)
	}
	errors.As(err, &re)
	if !strings.Contains(re.Stack, "Panic") || strings.Count(re.Stack, "\n") > 12 {
		t.Fatalf("panic stack: %q", re.Stack)
	}
	if err := c.call("App.Hi", "again", &hi); err != nil {
		t.Fatalf("Hi after a panic: %v", err)
	}
	for _, name := range []string{"App.Nope", "Nope.Hi", "Hi", ""} {
		if err := c.call(name, nil, nil); errType(err) != "not_found" {
			t.Fatalf("%q: %v, want not_found", name, err)
		}
	}
	// Timeouts of which no machine uses up half during the call.
	var left float64
	if err := c.callMeta("App.Deadline", nil, map[string]any{"timeout": 3600.0}, &left); err != nil || left <= 1800 || left > 3600 {
		t.Fatalf("Deadline with timeout 3600: %v %v", left, err)
	}
	if err := c.callMeta("App.Deadline", nil, map[string]any{"timeout": 600}, &left); err != nil || left <= 300 || left > 600 {
		t.Fatalf("Deadline with int timeout 600: %v %v", left, err)
	}
	if err := c.callMeta("App.Deadline", nil, map[string]any{"future": true}, &left); err != nil || left != -1 {
		t.Fatalf("Deadline without timeout: %v %v", left, err)
	}
	// An hour of work: the deadline always comes first.
	if err := c.callMeta("App.Slow", 3_600_000, map[string]any{"timeout": 0.05}, nil); errType(err) != "deadline_exceeded" {
		t.Fatalf("Slow with timeout: %v, want deadline_exceeded", err)
	}
	if err := c.callMeta("App.Slow", 3_600_000, map[string]any{"timeout": -1}, nil); errType(err) != "deadline_exceeded" {
		t.Fatalf("Slow with timeout already passed: %v, want deadline_exceeded", err)
	}
	if err := c.call("App.Log", "a log line", nil); err != nil {
		t.Fatal(err)
	}
}

// checkCancel cancels a Slow call with $cancel and sees the handler's context end.
func checkCancel(t *testing.T, c *testClient) {
	t.Helper()
	var before int64
	if err := c.call("App.WaitCancelled", 0, &before); err != nil {
		t.Fatal(err)
	}
	id, slow := c.start("App.Slow", 3_600_000, nil) // ends only when cancelled
	_, waiter := c.start("App.WaitCancelled", before+1, nil)
	if err := c.cancel(id); err != nil {
		t.Fatal(err)
	}
	if err := c.cancel(999999); err != nil { // unknown msgid: ignored
		t.Fatal(err)
	}
	if err := c.wait(slow, nil); errType(err) != "cancelled" {
		t.Fatalf("cancelled Slow: %v, want cancelled", err)
	}
	var after int64
	if err := c.wait(waiter, &after); err != nil || after < before+1 {
		t.Fatalf("WaitCancelled: %d %v", after, err)
	}
}

// checkConcurrent runs many calls at once on one connection; replies come back
// out of order and are matched by msgid.
func checkConcurrent(t *testing.T, c *testClient) {
	t.Helper()
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ms := (n - i) % 20
			var got int
			if err := c.call("App.Slow", ms, &got); err != nil || got != ms {
				errs <- fmt.Errorf("Slow(%d) = %d, %v", ms, got, err)
			}
			var sum int
			if err := c.call("App.Add", map[string]int{"a": i, "b": math.MaxInt32}, &sum); err != nil || sum != i+math.MaxInt32 {
				errs <- fmt.Errorf("Add(%d) = %d, %v", i, sum, err)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
