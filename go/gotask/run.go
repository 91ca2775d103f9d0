package gotask

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
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

// options are the command-line flags of Run.
type options struct {
	address     string
	pipe        bool
	standalone  bool
	maxFrame    uint64
	maxInflight int
	grace       time.Duration
	tlsCert     string
	tlsKey      string
}

func (o *options) define(fs *flag.FlagSet) {
	fs.StringVar(&o.address, "address", "", "serve on this Unix socket `path`, or on TCP at host:port (port 0 picks a free port)")
	fs.BoolVar(&o.pipe, "listen-on-pipe", false, "serve one connection over standard input and output")
	fs.BoolVar(&o.standalone, "standalone", false, "do not watch the parent process")
	fs.Uint64Var(&o.maxFrame, "max-frame-size", DefaultMaxFrameSize, "the largest frame accepted, in `bytes`")
	fs.IntVar(&o.maxInflight, "max-inflight", DefaultMaxInflight, "the most calls running at once on one connection")
	fs.DurationVar(&o.grace, "grace", 5*time.Second, "how long in-flight calls may finish at shutdown")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "serve TCP over TLS with the certificate in this PEM `file` (needs -tls-key)")
	fs.StringVar(&o.tlsKey, "tls-key", "", "the PEM `file` holding the private key of -tls-cert")
}

var cmdline options

func init() { cmdline.define(flag.CommandLine) }

// Run serves DefaultServer as a sidecar and exits the program when done; call
// it at the end of main, after Register. It parses the command line (unless
// the program already called flag.Parse, so programs may add flags of their
// own), listens, prints the handshake line on standard output, and serves
// until its client goes away or it receives SIGTERM. See the package
// documentation for the flags.
func Run() {
	if !flag.Parsed() {
		flag.Parse()
	}
	launched := os.Getenv(MagicCookieKey) == MagicCookieValue
	if secret := os.Getenv(secretEnv); secret != "" {
		DefaultServer.Secret = secret
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
	var stdin io.Reader = os.Stdin
	var stdout io.Writer = os.Stdout
	if cmdline.pipe {
		// The calls travel over standard input and output, which nothing else may use.
		stdin, stdout = pollable(os.Stdin), pollable(os.Stdout)
	}
	os.Exit(run(ctx, DefaultServer, cmdline, launched, stdin, stdout, os.Stderr))
}

const usage = `gotask: this program is a trio-gotask sidecar; the Python package
trio_gotask normally starts it. To run it by hand, pass -standalone and an address:

    %[1]s -standalone -address /tmp/%[2]s.sock
    %[1]s -standalone -address 127.0.0.1:0

Run %[1]s -help for all flags.
`

// run is Run without the process: ctx ends to ask for shutdown (a signal), and
// it returns the exit status.
func run(ctx context.Context, srv *Server, o options, launched bool, stdin io.Reader, stdout, stderr io.Writer) int {
	prog := filepath.Base(os.Args[0])
	if !launched && !o.standalone {
		fmt.Fprintf(stderr, usage, prog, prog)
		return 1
	}
	fail := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "gotask: "+format+"\n", args...)
		return 1
	}
	if o.maxFrame < MinMaxFrameSize || o.maxFrame > math.MaxUint32 {
		return fail("-max-frame-size must be between %d and %d", MinMaxFrameSize, uint32(math.MaxUint32))
	}
	if o.maxInflight <= 0 {
		return fail("-max-inflight must be at least 1")
	}
	if o.grace < 0 {
		return fail("-grace must not be negative")
	}
	var tlsConfig *tls.Config
	if o.tlsCert != "" || o.tlsKey != "" {
		if o.tlsCert == "" || o.tlsKey == "" {
			return fail("-tls-cert and -tls-key go together: pass both or neither")
		}
		if o.pipe || !isTCPAddress(o.address) {
			return fail("-tls-cert and -tls-key need a TCP -address (host:port); TLS is not available with -listen-on-pipe or a Unix socket")
		}
		cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
		if err != nil {
			return fail("loading -tls-cert and -tls-key: %v", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	srv.MaxFrameSize = uint32(o.maxFrame)
	srv.MaxInflight = o.maxInflight

	// shutdown is closed when the sidecar should stop.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	if launched && !o.standalone {
		go watchParent(ctx, stop)
	}

	if o.pipe {
		if o.address != "" {
			return fail("-listen-on-pipe and -address exclude each other")
		}
		if _, err := fmt.Fprintf(stdout, "gotask|%d|pipe|-\n", ProtocolVersion); err != nil {
			return fail("writing the handshake: %v", err)
		}
		done := make(chan struct{})
		go func() {
			srv.ServeConn(pipeConn{stdin, stdout})
			close(done)
		}()
		select {
		case <-done: // standard input reached EOF: the only connection ended
			return shutdown(srv, o.grace, stderr)
		case <-ctx.Done():
			return shutdown(srv, o.grace, stderr)
		}
	}

	l, transport, cleanup, err := listen(o.address)
	if err != nil {
		return fail("%v", err)
	}
	defer cleanup()
	if tlsConfig != nil {
		l = tls.NewListener(l, tlsConfig)
	}
	addr := l.Addr().String()
	if _, err := fmt.Fprintf(stdout, "gotask|%d|%s|%s\n", ProtocolVersion, transport, addr); err != nil {
		l.Close()
		return fail("writing the handshake: %v", err)
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
	select {
	case err := <-served:
		if !errors.Is(err, ErrServerClosed) {
			fmt.Fprintf(stderr, "gotask: serve: %v\n", err)
			shutdown(srv, o.grace, stderr)
			return 1
		}
	case <-ctx.Done():
	}
	return shutdown(srv, o.grace, stderr)
}

func shutdown(srv *Server, grace time.Duration, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		fmt.Fprintf(stderr, "gotask: calls still running after the %v grace period were cancelled\n", grace)
	}
	return 0
}

// watchParent calls stop when the parent process changes (it died and we were
// re-parented).
func watchParent(ctx context.Context, stop func()) {
	ppid := os.Getppid()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if os.Getppid() != ppid {
				stop()
				return
			}
		}
	}
}

// isTCPAddress reports whether address has the form host:port with a numeric
// port and no slash; anything else names a Unix socket.
func isTCPAddress(address string) bool {
	for i := 0; i < len(address); i++ {
		if address[i] == '/' {
			return false
		}
	}
	_, port, err := net.SplitHostPort(address)
	if err != nil {
		return false
	}
	n, err := strconv.ParseUint(port, 10, 16)
	return err == nil && n <= math.MaxUint16
}

// listen opens the listener for address ("" means a Unix socket in a new
// private directory) and returns a function that removes what it created.
func listen(address string) (l net.Listener, transport string, cleanup func(), err error) {
	if address != "" && isTCPAddress(address) {
		l, err = net.Listen("tcp", address)
		if err != nil {
			return nil, "", nil, err
		}
		return l, "tcp", func() { l.Close() }, nil
	}
	dir := ""
	path := address
	if path == "" {
		dir, err = os.MkdirTemp("", "gotask-")
		if err != nil {
			return nil, "", nil, err
		}
		path = filepath.Join(dir, "gotask.sock")
	} else if err := removeStaleSocket(path); err != nil {
		return nil, "", nil, err
	}
	l, err = net.Listen("unix", path)
	if err == nil {
		// Connecting needs write permission on the file. Until this chmod the
		// umask decides it; under the usual 022 or 077 nobody else has it, and
		// with no -address the directory is private anyway.
		if err = os.Chmod(path, 0o600); err != nil {
			l.Close()
		}
	}
	if err != nil {
		if dir != "" {
			os.RemoveAll(dir)
		}
		return nil, "", nil, err
	}
	return l, "unix", func() {
		l.Close()
		os.Remove(path)
		if dir != "" {
			os.Remove(dir)
		}
	}, nil
}

// removeStaleSocket removes a socket file left at path by a sidecar that died,
// refusing to touch anything else or a socket someone still listens on.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil // nothing there (or we cannot tell; Listen will say)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("%s is in use by another process", path)
	}
	return os.Remove(path)
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
