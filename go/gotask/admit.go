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
)

// defaultAuthTimeout bounds the TLS handshake and the $auth frame (protocol.md
// section 5, Security).
const defaultAuthTimeout = 10 * time.Second

// admitError is why a connection accepted by Serve was turned away before its
// first request. Its text never contains a secret. tell says the reason may be
// sent to the peer in a $refused notification (it speaks our framing).
type admitError struct {
	reason string
	tell   bool
}

func (e *admitError) Error() string { return e.reason }

// errProbe ends a connection accepted by Serve that closed before sending a
// byte: what a TCP readiness or liveness probe does (Kubernetes' tcpSocket,
// a load balancer's health check). It is not logged: one line per probe
// would bury the lines that matter.
var errProbe = errors.New("gotask: the connection closed before sending anything")

// admit runs the TLS handshake, if the connection is TLS, and reads the $auth
// frame, if the server has a secret, both within the server's authTimeout.
// Nothing else is read before it returns nil.
func (c *conn) admit(br *bufio.Reader) error {
	secret := c.srv.Secret
	tc, isTLS := c.rwc.(*tls.Conn)
	if !isTLS && secret == "" {
		return nil
	}
	timeout := c.srv.authTimeout
	if timeout <= 0 {
		timeout = defaultAuthTimeout
	}
	nc, _ := c.rwc.(net.Conn)
	if nc != nil {
		nc.SetDeadline(time.Now().Add(timeout))
	}
	if isTLS {
		if err := tc.Handshake(); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return err // we closed it: Shutdown
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return &admitError{fmt.Sprintf("no TLS handshake within %v", timeout), false}
			}
			if err == io.EOF {
				return errProbe
			}
			return &admitError{"TLS handshake failed: " + err.Error(), false}
		}
	}
	if secret != "" {
		if err := c.authenticate(br, secret, timeout); err != nil {
			return err
		}
	}
	if nc != nil {
		nc.SetDeadline(time.Time{})
	}
	return nil
}

func (c *conn) isTLS() bool {
	_, ok := c.rwc.(*tls.Conn)
	return ok
}

// authenticate reads the first frame and checks that it is [2, "$auth", secret].
func (c *conn) authenticate(br *bufio.Reader, secret string, timeout time.Duration) error {
	// A longer frame cannot be $auth: do not let an unauthenticated peer make
	// us allocate up to MaxFrameSize.
	limit := uint32(min(len(secret)+64, int(c.maxFrame)))
	payload, err := readFrame(br, limit)
	switch {
	case err == nil:
	case err == io.EOF && c.isTLS():
		return &admitError{"connection closed before authenticating", false}
	case err == io.EOF:
		return errProbe
	case errors.Is(err, net.ErrClosed):
		return err // we closed it: Shutdown
	case errors.Is(err, os.ErrDeadlineExceeded):
		return &admitError{fmt.Sprintf("no $auth frame within %v", timeout), true}
	case errorCode(err) == codeTooLarge:
		return &admitError{"authentication failed: the first frame is too long to be $auth", true}
	default:
		return &admitError{"authentication failed: " + err.Error(), true}
	}
	m, err := parseMessage(payload)
	if err != nil {
		return &admitError{"authentication failed: " + err.Error(), true}
	}
	if m.typ != typeNotification || m.method != "$auth" {
		return &admitError{"authentication failed: the sidecar requires a secret, and the first frame is not an $auth notification", true}
	}
	cur := cursor{b: m.params}
	got, ok := cur.str()
	if !ok {
		return &admitError{"authentication failed: the $auth secret is not a string", true}
	}
	// Hashing first makes the comparison take the same time whatever the
	// lengths; ConstantTimeCompare alone returns early when they differ.
	gotSum, wantSum := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(secret))
	if subtle.ConstantTimeCompare(gotSum[:], wantSum[:]) != 1 {
		return &admitError{"authentication failed: wrong secret", true}
	}
	return nil
}

// hello queues the connection's first frame, the $hello announcing its limits.
func (c *conn) hello() {
	e := getEncBuf()
	e.appendHello(c.maxFrame, c.maxInflight)
	e.frame()
	c.send(e)
}

// refuse tells a peer turned away at admission why, in a $refused
// notification, before the connection is closed. Nothing else has been
// written to the connection yet.
func (c *conn) refuse(reason string) {
	e := getEncBuf()
	defer putEncBuf(e)
	e.appendNotification("$refused", reason)
	b, _ := e.frame()
	if nc, ok := c.rwc.(net.Conn); ok {
		nc.SetWriteDeadline(time.Now().Add(time.Second))
	}
	c.rwc.Write(b)
}
