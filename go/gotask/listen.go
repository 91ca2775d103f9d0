package gotask

import (
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

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
