package gotask

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildProgram builds the main package testdata/name and returns its path.
func buildProgram(t *testing.T, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	out, err := exec.Command("go", "build", "-o", bin, "./testdata/"+name).CombinedOutput()
	if err != nil {
		t.Fatalf("building testdata/%s: %v\n%s", name, err, out)
	}
	return bin
}

func TestAddFlags(t *testing.T) {
	parse := func(o *Options, args ...string) error {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		o.AddFlags(fs)
		return fs.Parse(args)
	}
	var o Options
	if err := parse(&o); err != nil || o != (Options{}) {
		t.Fatalf("no flags: %+v %v", o, err)
	}
	err := parse(&o, "-address", "127.0.0.1:0", "-standalone", "-max-frame-size", "4096",
		"-max-inflight", "3", "-grace", "2s", "-tls-cert", "c.pem", "-tls-key", "k.pem")
	want := Options{Address: "127.0.0.1:0", Standalone: true, MaxFrameSize: 4096, MaxInflight: 3,
		Grace: 2 * time.Second, TLSCert: "c.pem", TLSKey: "k.pem"}
	if err != nil || o != want {
		t.Fatalf("got %+v %v, want %+v", o, err, want)
	}
	// -grace 0 cancels at once, which Options.Grace says with a negative value.
	o = Options{}
	if err := parse(&o, "-grace", "0", "-listen-on-pipe"); err != nil || o.Grace >= 0 || !o.ListenOnPipe {
		t.Fatalf("-grace 0: %+v %v", o, err)
	}
	for _, args := range [][]string{
		{"-max-frame-size", "0"}, {"-max-frame-size", "4294967296"}, {"-max-inflight", "0"},
		{"-max-inflight", "-1"}, {"-grace", "-1s"}, {"-grace", "soon"},
	} {
		o = Options{}
		if err := parse(&o, args...); err == nil || !strings.Contains(err.Error(), args[0]) {
			t.Errorf("%v: %v, want an error naming the flag", args, err)
		}
	}
	// Values already set are the defaults, and show as such in the help.
	o = Options{Address: "/run/app.sock", Grace: time.Minute}
	var help strings.Builder
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(&help)
	o.AddFlags(fs)
	fs.PrintDefaults()
	if err := fs.Parse(nil); err != nil || o.Address != "/run/app.sock" || o.Grace != time.Minute {
		t.Fatalf("defaults: %+v %v", o, err)
	}
	for _, s := range []string{`(default "/run/app.sock")`, "(default 1m0s)", "(default 1024)", "(default 67108864)"} {
		if !strings.Contains(help.String(), s) {
			t.Errorf("help lacks %s:\n%s", s, help.String())
		}
	}
}

// TestRunWithOwnFlags: a program whose own -address is on flag.CommandLine
// puts the sidecar's flags, and one of its own, on a FlagSet of its own, and
// serves with RunWith.
func TestRunWithOwnFlags(t *testing.T) {
	t.Parallel()
	bin := buildProgram(t, "ownflags")
	sc := startProgram(t, bin, nil, true, "-greeting", "hi", "-address", "127.0.0.1:0", "-grace", "0")
	if sc.transport != "tcp" {
		t.Fatalf("transport %q, want tcp", sc.transport)
	}
	var got string
	if err := sc.client().call("Greeter.Hi", "gopher", &got); err != nil || got != "hi gopher, database db.internal:5432" {
		t.Fatalf("Greeter.Hi: %q %v", got, err)
	}
	sc.stdin.Close()
	if code := sc.waitExit(); code != 0 {
		t.Fatalf("exit status %d", code)
	}
}

// TestRunMisuse: Run in a program that already has a flag of one of the
// sidecar's names, or parsed the command line before Run, says what to do
// instead and exits with status 1, without a panic.
func TestRunMisuse(t *testing.T) {
	t.Parallel()
	bin := buildProgram(t, "runmisuse")
	for misuse, want := range map[string]string{
		"taken":  "already has a flag -address",
		"parsed": "already parsed",
	} {
		env := []string{"GOTASK_TEST_MISUSE=" + misuse, MagicCookieKey + "=" + MagicCookieValue}
		sc := startProgram(t, bin, env, false)
		code := sc.waitExit()
		stderr := sc.stderr.String()
		if code != 1 || !strings.Contains(stderr, want) || !strings.Contains(stderr, "gotask.RunWith(options)") ||
			!strings.Contains(stderr, "options.AddFlags(") || strings.Contains(stderr, "panic") {
			t.Errorf("%s: exit %d, stderr:\n%s", misuse, code, stderr)
		}
		if line, _ := sc.stdout.ReadString('\n'); line != "" {
			t.Errorf("%s: stdout %q", misuse, line)
		}
	}
}

// TestRunFlags: Run still defines its flags on flag.CommandLine, where -help
// lists them and a bad value is refused by name.
func TestRunFlags(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t, false, "-help")
	if code := sc.waitExit(); code != 0 {
		t.Fatalf("-help: exit %d", code)
	}
	for _, name := range []string{"address", "listen-on-pipe", "standalone", "max-frame-size", "max-inflight", "grace", "tls-cert", "tls-key"} {
		if !strings.Contains(sc.stderr.String(), "  -"+name+" ") && !strings.Contains(sc.stderr.String(), "  -"+name+"\n") {
			t.Errorf("-help does not list -%s:\n%s", name, sc.stderr.String())
		}
	}
	sc = startSidecarEnv(t, []string{MagicCookieKey + "=" + MagicCookieValue}, false, "-max-frame-size", "0")
	if code := sc.waitExit(); code != 2 || !strings.Contains(sc.stderr.String(), "-max-frame-size") {
		t.Fatalf("-max-frame-size 0: exit %d, stderr %s", code, sc.stderr.String())
	}
}

// TestStrayStdout: what a method prints to standard output reaches standard
// error, in every mode; in socket modes standard output ends after the
// handshake.
func TestStrayStdout(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{nil, {"-listen-on-pipe"}} {
		sc := startSidecar(t, true, args...)
		var c *testClient
		if sc.transport == "pipe" {
			c = sc.pipeClient()
		} else {
			c = sc.client()
			// Bounds the wait of a failing test: a stdout still open never ends.
			sc.stdoutF.SetReadDeadline(time.Now().Add(hangGuard))
			if b, err := sc.stdout.ReadByte(); err != io.EOF {
				t.Fatalf("stdout after the handshake: %q %v, want EOF", b, err)
			}
		}
		var n int
		if err := c.call("App.Print", 1000, &n); err != nil || n != 1000 {
			t.Fatalf("%s: Print: %d %v", sc.transport, n, err)
		}
		var hi map[string]any
		if err := c.call("App.Hi", "after", &hi); err != nil || hi["hello"] != "after" {
			t.Fatalf("%s: Hi after Print: %v %v", sc.transport, hi, err)
		}
		sc.stdin.Close()
		if code := sc.waitExit(); code != 0 {
			t.Fatalf("%s: exit %d", sc.transport, code)
		}
		if s := sc.stderr.String(); strings.Count(s, " from a method\n") != 1000 || !strings.Contains(s, "stray line 999 from a method\n") {
			t.Fatalf("%s: stderr %q", sc.transport, s)
		}
	}
}

// TestClosedStderr: a sidecar whose host died while it logged (the reading
// end of its standard error closed, then its standard input) is not killed
// by SIGPIPE: it shuts down in order, removes its socket and exits 0.
func TestClosedStderr(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(exampleBin)
	cmd.Env = append(os.Environ(), MagicCookieKey+"="+MagicCookieValue)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = errW
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	errW.Close()
	exited := make(chan struct{})
	var waitErr error
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	parts := strings.Split(strings.TrimSuffix(line, "\n"), "|")
	if err != nil || len(parts) != 4 || parts[2] != "unix" {
		t.Fatalf("handshake %q %v", line, err)
	}
	conn, err := net.Dial("unix", parts[3])
	if err != nil {
		t.Fatal(err)
	}
	c := newTestClient(t, conn)
	c.start("App.LogUntilCancelled", "still here", nil)
	if got, err := bufio.NewReader(errR).ReadString('\n'); got != "still here\n" {
		t.Fatalf("stderr %q %v", got, err)
	}
	// The host dies: its ends of our pipes and its connection close, the
	// stderr reader first, so that the sidecar writes to a closed pipe.
	errR.Close()
	stdin.Close()
	conn.Close()
	select {
	case <-exited:
		var exit *exec.ExitError
		if errors.As(waitErr, &exit) {
			if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				t.Fatalf("killed by %v", ws.Signal())
			}
		}
		if waitErr != nil {
			t.Fatalf("exit: %v", waitErr)
		}
	case <-time.After(hangGuard):
		t.Fatal("the sidecar did not exit")
	}
	if _, err := os.Stat(parts[3]); !os.IsNotExist(err) {
		t.Fatalf("socket file left behind: %v", err)
	}
	if _, err := os.Stat(filepath.Dir(parts[3])); !os.IsNotExist(err) {
		t.Fatalf("private directory left behind: %v", err)
	}
}

// watchParent stops the sidecar once its parent is not the one it was given,
// and not while it is: the parent read before the handshake is the one that
// counts, even if the watch starts after the parent died.
func TestWatchParentComparesWithTheParentReadBeforeIt(t *testing.T) {
	stopped := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go watchParent(ctx, os.Getppid()+1, func() { close(stopped) }) // a parent that is gone
	select {
	case <-stopped:
	case <-time.After(hangGuard):
		t.Fatal("watchParent did not stop for a parent that is no longer ours")
	}

	kept := make(chan struct{})
	done := make(chan struct{})
	tick := make(chan time.Time)
	go func() {
		watchParentTicks(ctx, os.Getppid(), func() { close(kept) }, tick)
		close(done)
	}()
	// Two ticks; the third is taken only once the second's comparison is done.
	for range 3 {
		select {
		case tick <- time.Now():
		case <-done:
			t.Fatal("watchParent stopped with the parent alive")
		}
	}
	if isClosed(kept) {
		t.Fatal("watchParent stopped with the parent alive")
	}
	cancel()
	<-done
}
