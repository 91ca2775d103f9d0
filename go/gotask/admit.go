package gotask

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/trio-gotask/trio-gotask/go/gotask/internal/scan"
)

// DefaultHandshakeTimeout bounds the opening of a connection accepted by
// Serve unless Server.HandshakeTimeout says otherwise (protocol.md section 5,
// Admission).
const DefaultHandshakeTimeout = 10 * time.Second

// admitError is why a connection accepted by Serve was turned away before its
// opening was complete. Its text never contains a secret. tell says the reason
// may be sent to the peer in a $refused notification (it speaks our framing,
// and has not had our $hello).
type admitError struct {
	kind   admitKind
	reason string
	tell   bool
}

func (e *admitError) Error() string { return e.reason }

// errProbe ends a connection accepted by Serve that closed before sending a
// byte: what a TCP readiness or liveness probe does (Kubernetes' tcpSocket,
// a load balancer's health check). It is not logged: one line per probe
// would bury the lines that matter.
var errProbe = errors.New("gotask: the connection closed before sending anything")

func (s *Server) handshakeTimeout() time.Duration {
	if s.HandshakeTimeout > 0 {
		return s.HandshakeTimeout
	}
	return DefaultHandshakeTimeout
}

// admit starts the opening of a connection accepted by Serve: it runs the TLS
// handshake, if the connection is TLS, and reads the $auth frame, if the
// server has a secret. The whole opening, up to the client's first frame after
// these (its $hello), must end within the server's handshake timeout: admit
// leaves the read deadline set, and firstFrame lifts it. Nothing but $auth is
// read before admit returns nil.
func (c *conn) admit(br *bufio.Reader) error {
	c.opening = true
	c.openTimeout = c.srv.handshakeTimeout()
	deadline := time.Now().Add(c.openTimeout)
	nc, _ := c.rwc.(net.Conn)
	if nc != nil {
		c.openDeadline = deadline
		nc.SetReadDeadline(deadline)
	}
	if tc, isTLS := c.rwc.(*tls.Conn); isTLS {
		nc.SetWriteDeadline(deadline) // the handshake writes too
		if err := tc.Handshake(); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return err // we closed it: Shutdown
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return &admitError{admitTimeout, fmt.Sprintf("no TLS handshake within %v (-handshake-timeout)", c.openTimeout), false}
			}
			if err == io.EOF {
				return errProbe
			}
			return &admitError{admitTLS, "TLS handshake failed: " + err.Error(), false}
		}
		// Nothing is queued for the writer before admit returns: this lifts
		// the handshake's deadline, not one of the writer's.
		nc.SetWriteDeadline(time.Time{})
	}
	if secret := c.srv.Secret; secret != "" {
		if err := c.authenticate(br, secret); err != nil {
			return err
		}
	}
	return nil
}

// firstFrame ends the opening once the client's first frame after admission
// was read (err is readFrame's): it lifts the handshake deadline, or says why
// the opening failed. The frame itself must still parse for the opening to be
// complete (readLoop clears c.opening then).
func (c *conn) firstFrame(err error) error {
	switch {
	case err == nil:
		if nc, ok := c.rwc.(net.Conn); ok {
			c.openDeadline = time.Time{}
			nc.SetReadDeadline(time.Time{})
		}
		return nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		// Our $hello is on its way: a $refused after it would be ignored.
		return &admitError{admitTimeout, fmt.Sprintf("no $hello or other frame within %v (-handshake-timeout)", c.openTimeout), false}
	}
	return err // EOF (the client left: no line), a protocol error, or Shutdown's close
}

func (c *conn) isTLS() bool {
	_, ok := c.rwc.(*tls.Conn)
	return ok
}

// authenticate reads the first frame and checks that it is [2, "$auth", secret].
func (c *conn) authenticate(br *bufio.Reader, secret string) error {
	// A longer frame cannot be $auth: do not let an unauthenticated peer make
	// us allocate up to MaxFrameSize.
	limit := uint32(min(len(secret)+64, int(c.maxFrame)))
	payload, err := readFrame(br, limit)
	switch {
	case err == nil:
	case err == io.EOF && c.isTLS():
		return &admitError{admitAuth, "connection closed before authenticating", false}
	case err == io.EOF:
		return errProbe
	case errors.Is(err, net.ErrClosed):
		return err // we closed it: Shutdown
	case errors.Is(err, os.ErrDeadlineExceeded):
		return &admitError{admitTimeout, fmt.Sprintf("no $auth frame within %v (-handshake-timeout)", c.openTimeout), true}
	case errorCode(err) == codeTooLarge:
		return &admitError{admitAuth, "authentication failed: the first frame is too long to be $auth", true}
	default:
		return &admitError{admitAuth, "authentication failed: " + err.Error(), true}
	}
	m, err := parseMessage(payload)
	if err != nil {
		return &admitError{admitAuth, "authentication failed: " + err.Error(), true}
	}
	if m.typ != typeNotification || m.method != "$auth" {
		return &admitError{admitAuth, "authentication failed: the sidecar requires a secret, and the first frame is not an $auth notification", true}
	}
	cur := scan.Cursor{B: m.params}
	got, ok := cur.Str()
	if !ok {
		return &admitError{admitAuth, "authentication failed: the $auth secret is not a string", true}
	}
	// Hashing first makes the comparison take the same time whatever the
	// lengths; ConstantTimeCompare alone returns early when they differ.
	gotSum, wantSum := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(secret))
	if subtle.ConstantTimeCompare(gotSum[:], wantSum[:]) != 1 {
		return &admitError{admitAuth, "authentication failed: wrong secret", true}
	}
	return nil
}

// hello queues the connection's first frame, the $hello announcing its limits.
func (c *conn) hello() {
	e := getEncBuf()
	e.appendHello(c.maxFrame, c.maxInflight)
	e.frame()
	c.send(c.out, e)
}

// refuse tells a peer turned away at admission why, in a $refused
// notification, before the connection is closed. Nothing else has been
// written to the connection yet.
func (c *conn) refuse(reason string) { writeRefused(c.rwc, reason) }

// writeRefused writes [2, "$refused", reason] on a connection nothing else
// writes to, giving up after a second.
func writeRefused(w io.Writer, reason string) {
	e := getEncBuf()
	defer putEncBuf(e)
	e.appendNotification("$refused", reason)
	b, _ := e.frame()
	if nc, ok := w.(net.Conn); ok {
		nc.SetWriteDeadline(time.Now().Add(time.Second))
	}
	w.Write(b)
}

// refuseAtLimit turns away a connection accepted past MaxConns, without
// reading from it: a plain one is told why in a $refused notification, which
// fits in the empty send buffer of a new socket, so the write does not block
// the accept loop; a TLS one is closed before its handshake, whose cost is
// the server's as much as the client's.
func (s *Server) refuseAtLimit(rwc net.Conn, limit int) {
	reason := fmt.Sprintf("too many connections: the sidecar's -max-conns limit of %d is reached", limit)
	if _, isTLS := rwc.(*tls.Conn); !isTLS {
		writeRefused(rwc, reason)
	}
	rwc.Close()
	s.admitLog.fail(admitLimit, rwc.RemoteAddr(), "refusing connection"+describeConn(rwc)+": "+reason, reason)
}
