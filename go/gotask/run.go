package gotask

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// MagicCookieKey and MagicCookieValue mark a sidecar launched by a client.
const (
	MagicCookieKey   = "GOTASK_MAGIC_COOKIE"
	MagicCookieValue = "d3a1c2b7e6f54a09"
)

// secretEnv names the environment variable that carries Server.Secret.
const secretEnv = "GOTASK_SECRET"

// DefaultGrace is how long calls in flight may finish at shutdown unless
// Options.Grace (the -grace flag) says otherwise.
const DefaultGrace = 5 * time.Second

// Options configure RunWith; each field has a flag of the same meaning, which
// AddFlags defines. The zero value is Run with no flags: a sidecar started by
// trio_gotask, serving DefaultServer on a Unix socket in a new private
// directory.
type Options struct {
	// Address is host:port for TCP (port 0 picks a free port; an IPv6 host
	// goes in brackets, [::1]:0), or else a Unix socket path, which a '/'
	// marks as one (./app.sock); empty means a Unix socket in a new private
	// directory. protocol.md section 5 (Addresses) has the rule. Flag
	// -address.
	Address string
	// ListenOnPipe serves one connection over standard input and output.
	// Flag -listen-on-pipe.
	ListenOnPipe bool
	// Standalone serves a program started by hand: no launching client, and
	// no watch on the parent process. Flag -standalone.
	Standalone bool
	// MaxFrameSize and MaxInflight, when not zero, replace the Server's own.
	// Flags -max-frame-size and -max-inflight.
	MaxFrameSize uint32
	MaxInflight  int
	// Grace is how long calls in flight may finish at shutdown before their
	// contexts are cancelled: zero means DefaultGrace, and a negative Grace
	// cancels them at once. Flag -grace (where 0 cancels them at once).
	Grace time.Duration
	// HandshakeTimeout and MaxConns, when not zero, replace the Server's own:
	// how long a connection may take to open, and how many may be open at
	// once. Flags -handshake-timeout and -max-conns.
	HandshakeTimeout time.Duration
	MaxConns         int
	// MaxCalls, when not zero, replaces the Server's own: the calls in flight
	// over all connections. Flag -max-calls.
	MaxCalls int
	// FrameTimeout and WriteTimeout, when not zero, replace the Server's own
	// (see Server.FrameTimeout and Server.WriteTimeout); a negative value
	// means no deadline. Flags -frame-timeout and -write-timeout (where 0
	// means no deadline).
	FrameTimeout time.Duration
	WriteTimeout time.Duration
	// TLSCert and TLSKey name the PEM files of a certificate and its private
	// key: a TCP sidecar then speaks TLS. Flags -tls-cert and -tls-key.
	TLSCert, TLSKey string
	// Server is the server to run; nil means DefaultServer.
	Server *Server
}

// AddFlags defines the sidecar's flags on fs, storing their values in o; the
// values already in o are the defaults. A program with flags of its own adds
// these to its FlagSet, parses once, and passes o to RunWith. Like any flag
// definition, AddFlags panics if fs already has a flag of one of these names:
// a program whose own flag takes one of them puts these on a FlagSet of their
// own.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Address, "address", o.Address, "serve on this Unix socket `path`, or on TCP at host:port (port 0 picks a free port)")
	fs.BoolVar(&o.ListenOnPipe, "listen-on-pipe", o.ListenOnPipe, "serve one connection over standard input and output")
	fs.BoolVar(&o.Standalone, "standalone", o.Standalone, "serve without a launching client; do not watch the parent process")
	frame := o.MaxFrameSize
	if frame == 0 {
		frame = DefaultMaxFrameSize
	}
	fs.Func("max-frame-size", fmt.Sprintf("the largest frame accepted, in `bytes` (default %d)", frame), func(s string) error {
		n, err := strconv.ParseUint(s, 0, 32)
		if err != nil || n < MinMaxFrameSize {
			return fmt.Errorf("want a number of bytes from %d to %d", MinMaxFrameSize, uint32(math.MaxUint32))
		}
		o.MaxFrameSize = uint32(n)
		return nil
	})
	inflight := o.MaxInflight
	if inflight == 0 {
		inflight = DefaultMaxInflight
	}
	fs.Func("max-inflight", fmt.Sprintf("the most `calls` running at once on one connection (default %d)", inflight), func(s string) error {
		n, err := strconv.ParseInt(s, 0, strconv.IntSize)
		if err != nil || n < 1 {
			return errors.New("want a number of calls, at least 1")
		}
		o.MaxInflight = int(n)
		return nil
	})
	grace := o.Grace
	if grace == 0 {
		grace = DefaultGrace
	} else if grace < 0 {
		grace = 0
	}
	fs.Func("grace", fmt.Sprintf("how long calls in flight may finish at shutdown, a `duration`; 0 cancels them at once (default %v)", grace), func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return errors.New("want a duration of 0 or more, such as 5s")
		}
		if d == 0 {
			d = -1 // Options.Grace's "at once"; its zero is the default
		}
		o.Grace = d
		return nil
	})
	handshake := o.HandshakeTimeout
	if handshake == 0 {
		handshake = DefaultHandshakeTimeout
	}
	fs.Func("handshake-timeout", fmt.Sprintf("close a connection that has not finished its opening (TLS, $auth, the client's $hello) within this `duration` (default %v)", handshake), func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return errors.New("want a duration above 0, such as 10s")
		}
		o.HandshakeTimeout = d
		return nil
	})
	conns := o.MaxConns
	if conns == 0 {
		conns = DefaultMaxConns()
	}
	fs.Func("max-conns", fmt.Sprintf("the most `connections` open at once; more are refused (default %d, three quarters of the descriptor limit)", conns), func(s string) error {
		n, err := strconv.ParseInt(s, 0, strconv.IntSize)
		if err != nil || n < 1 {
			return errors.New("want a number of connections, at least 1")
		}
		o.MaxConns = int(n)
		return nil
	})
	fs.Func("max-calls", fmt.Sprintf("the most `calls` in flight over all connections (running, or with a reply the client has not read); more are answered busy (default %d: no bound)", o.MaxCalls), func(s string) error {
		n, err := strconv.ParseInt(s, 0, strconv.IntSize)
		if err != nil || n < 0 {
			return errors.New("want a number of calls, 0 for no bound")
		}
		o.MaxCalls = int(n)
		return nil
	})
	timeoutFlag(fs, &o.FrameTimeout, DefaultFrameTimeout, "frame-timeout",
		"how long a frame may take to arrive once its first byte has, a `duration`; 0: no limit")
	timeoutFlag(fs, &o.WriteTimeout, DefaultWriteTimeout, "write-timeout",
		"how long a client may read nothing of a reply before it is disconnected, a `duration`; 0: no limit")
	fs.StringVar(&o.TLSCert, "tls-cert", o.TLSCert, "serve TCP over TLS with the certificate in this PEM `file` (needs -tls-key)")
	fs.StringVar(&o.TLSKey, "tls-key", o.TLSKey, "the PEM `file` holding the private key of -tls-cert")
}

// timeoutFlag defines a flag that sets *d to a duration, where 0 on the
// command line means none (a negative *d) and the zero *d means def.
func timeoutFlag(fs *flag.FlagSet, d *time.Duration, def time.Duration, name, usage string) {
	shown := fmt.Sprint(*d)
	switch {
	case *d == 0:
		shown = fmt.Sprint(def)
	case *d < 0:
		shown = "0"
	}
	fs.Func(name, fmt.Sprintf("%s (default %s)", usage, shown), func(s string) error {
		v, err := time.ParseDuration(s)
		if err != nil || v < 0 {
			return errors.New("want a duration of 0 or more, such as 30s")
		}
		if v == 0 {
			v = -1 // the Options field's "none"; its zero is the default
		}
		*d = v
		return nil
	})
}

// Run serves DefaultServer as a sidecar and exits the program when done; call
// it at the end of main, after Register. It defines the sidecar's flags on
// flag.CommandLine, parses the command line, listens, prints the handshake
// line on standard output, and serves until its client goes away or it
// receives SIGTERM. See the package documentation for the flags.
//
// A program that parses the command line itself, or has a flag of one of
// these names, calls RunWith instead, with AddFlags. Run detects both cases:
// it then says so on standard error and exits with status 1.
func Run() {
	var o Options
	if err := o.addToCommandLine(); err != nil {
		fmt.Fprintf(os.Stderr, "gotask: %v\n", err)
		os.Exit(1)
	}
	flag.Parse()
	RunWith(o)
}

const parsedAdvice = `Run found the command line already parsed (flag.Parse was called first),
before it could define the sidecar's flags (-address and the others). Let Run parse
the command line, or add the flags before parsing and call RunWith:

	var options gotask.Options
	options.AddFlags(flag.CommandLine)
	flag.Parse()
	gotask.RunWith(options)`

const takenAdvice = `Run cannot define the sidecar's flags on flag.CommandLine: the program
already has %s. Put the sidecar's flags on a FlagSet of their own and call
RunWith:

	var options gotask.Options
	fs := flag.NewFlagSet(os.Args[0], flag.ExitOnError)
	options.AddFlags(fs)
	fs.Parse(os.Args[1:])
	gotask.RunWith(options)`

// addToCommandLine defines o's flags on flag.CommandLine, or says why it
// cannot without a panic or a wrong result.
func (o *Options) addToCommandLine() error {
	if flag.Parsed() {
		return errors.New(parsedAdvice)
	}
	ours := flag.NewFlagSet("", flag.ContinueOnError)
	o.AddFlags(ours)
	var taken []string
	ours.VisitAll(func(f *flag.Flag) {
		if flag.Lookup(f.Name) != nil {
			taken = append(taken, "-"+f.Name)
		}
	})
	if len(taken) > 0 {
		have := "a flag " + taken[0]
		if len(taken) > 1 {
			have = "flags " + strings.Join(taken, ", ")
		}
		return fmt.Errorf(takenAdvice, have)
	}
	o.AddFlags(flag.CommandLine)
	return nil
}

// RunWith serves o.Server as a sidecar configured by o, without reading any
// flag, and exits the program when done; it is Run for programs that parse
// their own command line (see AddFlags) or configure the sidecar in code.
//
// Standard output belongs to the protocol: RunWith moves it aside, so that
// what the program prints there from then on (with fmt.Println, say) goes to
// standard error. The handshake, and with ListenOnPipe the frames, travel on
// the original standard output.
func RunWith(o Options) {
	srv := o.Server
	if srv == nil {
		srv = DefaultServer
	}
	describeIfAsked(srv) // GOTASK_DESCRIBE=1: print the services as JSON and exit (trio-gotask stubs)
	runServer.Store(srv)
	launched := os.Getenv(MagicCookieKey) == MagicCookieValue
	if secret := os.Getenv(secretEnv); secret != "" {
		srv.Secret = secret
		// Keep it from the processes that methods may start.
		os.Unsetenv(secretEnv)
	}
	ctx, stop := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	if launched {
		// Ctrl-C reaches the whole process group; the client shuts us down in order.
		signal.Ignore(os.Interrupt)
	} else {
		signal.Notify(sigs, os.Interrupt)
	}
	go func() {
		<-sigs
		stop()
	}()
	surviveClosedPipes()
	var stdin io.Reader = os.Stdin
	if o.ListenOnPipe {
		in, err := takeStdin()
		if err != nil {
			fmt.Fprintf(os.Stderr, "gotask: moving standard input aside: %v\n", err)
			os.Exit(1)
		}
		stdin = in
	}
	stdout, err := takeStdout(o.ListenOnPipe)
	if err != nil {
		fmt.Fprintf(os.Stderr, "gotask: moving standard output aside: %v\n", err)
		os.Exit(1)
	}
	os.Exit(run(ctx, srv, o, launched, stdin, stdout, os.Stderr))
}

const usage = `gotask: this program is a trio-gotask sidecar; the Python package
trio_gotask normally starts it. To run it by hand, pass -standalone and an address:

    %[1]s -standalone -address /tmp/%[2]s.sock
    %[1]s -standalone -address 127.0.0.1:0

Run %[1]s -help for all flags.
`

// run is RunWith without the process: ctx ends to ask for shutdown (a
// signal), and it returns the exit status. In socket modes it closes stdout
// (if it is an io.Closer) once the handshake is written: nothing else may go
// there.
func run(ctx context.Context, srv *Server, o Options, launched bool, stdin io.Reader, stdout, stderr io.Writer) int {
	prog := filepath.Base(os.Args[0])
	if !launched && !o.Standalone {
		fmt.Fprintf(stderr, usage, prog, prog)
		return 1
	}
	fail := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "gotask: "+format+"\n", args...)
		return 1
	}
	if o.MaxFrameSize != 0 && o.MaxFrameSize < MinMaxFrameSize {
		return fail("-max-frame-size (Options.MaxFrameSize) must be at least %d", MinMaxFrameSize)
	}
	if o.MaxInflight < 0 {
		return fail("-max-inflight (Options.MaxInflight) must be at least 1")
	}
	if o.HandshakeTimeout < 0 {
		return fail("-handshake-timeout (Options.HandshakeTimeout) must be above 0")
	}
	if o.MaxConns < 0 {
		return fail("-max-conns (Options.MaxConns) must be at least 1")
	}
	grace := o.Grace
	if grace == 0 {
		grace = DefaultGrace
	}
	addr, err := parseAddress(o.Address)
	if err != nil {
		return fail("-address %s: %v", printable(o.Address), err)
	}
	var tlsConfig *tls.Config
	if o.TLSCert != "" || o.TLSKey != "" {
		if o.TLSCert == "" || o.TLSKey == "" {
			return fail("-tls-cert and -tls-key go together: pass both or neither")
		}
		if o.ListenOnPipe || addr.network != "tcp" {
			return fail("-tls-cert and -tls-key need a TCP -address (host:port); TLS is not available with -listen-on-pipe or a Unix socket")
		}
		cert, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
		if err != nil {
			return fail("loading -tls-cert and -tls-key: %v", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if o.MaxFrameSize != 0 {
		srv.MaxFrameSize = o.MaxFrameSize
	}
	if o.MaxInflight != 0 {
		srv.MaxInflight = o.MaxInflight
	}
	if o.HandshakeTimeout != 0 {
		srv.HandshakeTimeout = o.HandshakeTimeout
	}
	if o.MaxConns != 0 {
		srv.MaxConns = o.MaxConns
	}
	if o.MaxCalls != 0 {
		srv.MaxCalls = o.MaxCalls
	}
	if o.FrameTimeout != 0 {
		srv.FrameTimeout = o.FrameTimeout
	}
	if o.WriteTimeout != 0 {
		srv.WriteTimeout = o.WriteTimeout
	}

	// ctx ends when the sidecar should stop: on a signal (the caller's ctx)
	// or, for a launched sidecar, when its parent is gone: a new parent
	// process (watchParent) or, in socket modes, EOF on standard input.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	if launched && !o.Standalone {
		// Read here, not in the goroutine: it may first run after the handshake, by which time
		// the parent may be gone, and the new parent would look like the first.
		go watchParent(ctx, os.Getppid(), stop)
	}

	if o.ListenOnPipe {
		if o.Address != "" {
			return fail("-listen-on-pipe and -address exclude each other")
		}
		hooks := startHooks(ctx, srv.takeHooks(), grace, stderr)
		if hooks == nil {
			return 1
		}
		if _, err := fmt.Fprintf(stdout, "gotask|%d|pipe|-\n", ProtocolVersion); err != nil {
			code := fail("writing the handshake: %v", err)
			shutdown(srv, grace, hooks, stderr)
			return code
		}
		done := make(chan struct{})
		go func() {
			srv.ServeConn(pipeConn{stdin, stdout})
			close(done)
		}()
		hooks.run()
		select {
		case <-done: // standard input reached EOF: the only connection ended
		case <-ctx.Done():
		case <-hooks.failed:
			hooks.reportFailure(stderr)
		}
		return shutdown(srv, grace, hooks, stderr)
	}

	l, cleanup, err := listen(addr)
	if err != nil {
		return fail("%v", err)
	}
	defer cleanup()
	if tlsConfig != nil {
		l = tls.NewListener(l, tlsConfig)
	}
	hooks := startHooks(ctx, srv.takeHooks(), grace, stderr)
	if hooks == nil {
		l.Close()
		return 1
	}
	if _, err := fmt.Fprintf(stdout, "gotask|%d|%s|%s\n", ProtocolVersion, addr.network, l.Addr()); err != nil {
		l.Close()
		code := fail("writing the handshake: %v", err)
		shutdown(srv, grace, hooks, stderr)
		return code
	}
	if c, ok := stdout.(io.Closer); ok {
		c.Close()
	}
	if launched {
		// The client keeps our standard input open; EOF means it is gone.
		go func() {
			io.Copy(io.Discard, stdin)
			stop()
		}()
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	hooks.run()
	select {
	case err := <-served:
		if !errors.Is(err, ErrServerClosed) {
			fmt.Fprintf(stderr, "gotask: serve: %v\n", err)
			shutdown(srv, grace, hooks, stderr)
			return 1
		}
	case <-ctx.Done():
	case <-hooks.failed:
		hooks.reportFailure(stderr)
	}
	return shutdown(srv, grace, hooks, stderr)
}

// printable is s as an error message shows it: quoted if it holds a byte a
// terminal would not show as itself.
func printable(s string) string {
	if q := strconv.Quote(s); q[1:len(q)-1] != s {
		return q
	}
	return s
}

// shutdown shuts srv down, letting the calls in flight finish within grace,
// then stops the hooks within what is left of it. It returns the exit status:
// 1 if a hook failed, 0 otherwise.
func shutdown(srv *Server, grace time.Duration, hooks *hookSet, stderr io.Writer) int {
	ctx, cancel := graceContext(grace)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		fmt.Fprintf(stderr, "gotask: calls still running after the %v grace period were cancelled\n", grace)
	}
	if hooks.stop(ctx, stderr) {
		return 1
	}
	return 0
}

// watchParent calls stop when the parent process is no longer ppid (it died
// and we were re-parented).
func watchParent(ctx context.Context, ppid int, stop func()) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	watchParentTicks(ctx, ppid, stop, t.C)
}

// watchParentTicks is watchParent comparing at each tick; tests tick it.
func watchParentTicks(ctx context.Context, ppid int, stop func(), tick <-chan time.Time) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
			if os.Getppid() != ppid {
				stop()
				return
			}
		}
	}
}

// pipeConn joins standard input and output into one connection.
type pipeConn struct {
	io.Reader
	io.Writer
}

// Close closes both halves if they can be closed.
func (p pipeConn) Close() error {
	if c, ok := p.Reader.(io.Closer); ok {
		c.Close()
	}
	if c, ok := p.Writer.(io.Closer); ok {
		c.Close()
	}
	return nil
}
