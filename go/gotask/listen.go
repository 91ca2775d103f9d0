package gotask

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// listenAddr is where a sidecar listens.
type listenAddr struct {
	network string // "unix" or "tcp"
	path    string // unix: the socket file, or "" for one in a new private directory
	host    string // tcp: "" for every interface
	port    int    // tcp: 0 picks a free port
}

// parseAddress reads an -address by the rule of protocol.md section 5
// (Addresses); "" means a Unix socket in a new private directory. An address
// of the host:port form that breaks that form's rules is an error, which says
// why and how to write what was likely meant.
func parseAddress(address string) (listenAddr, error) {
	if strings.IndexByte(address, 0) >= 0 {
		return listenAddr{}, errors.New("an address cannot contain a NUL byte")
	}
	unix := listenAddr{network: "unix", path: address}
	if strings.IndexByte(address, '/') >= 0 {
		return unix, nil
	}
	colon := strings.LastIndexByte(address, ':')
	if colon < 0 {
		return unix, nil
	}
	host, digits := address[:colon], address[colon+1:]
	if digits == "" || strings.Trim(digits, "0123456789") != "" {
		return unix, nil
	}
	invalid := func(format string, args ...any) (listenAddr, error) {
		why := fmt.Sprintf(format, args...)
		return listenAddr{}, fmt.Errorf("%s (for a Unix socket of that name, write ./%s)", why, address)
	}
	port, err := strconv.ParseUint(digits, 10, 16)
	if err != nil {
		return invalid("port %s is above 65535", digits)
	}
	if strings.HasPrefix(host, "[") {
		end := strings.IndexByte(host, ']')
		if end < 0 {
			return invalid("'[' without a closing ']'")
		}
		if end != len(host)-1 {
			return invalid("nothing may come between ']' and ':'")
		}
		host = host[1:end]
	} else if strings.IndexByte(host, ':') >= 0 {
		return invalid("an IPv6 host goes in brackets, [%s]:%s", host, digits)
	}
	return listenAddr{network: "tcp", host: host, port: int(port)}, nil
}

// listen opens the listener for addr and returns a function that removes
// what it created.
func listen(addr listenAddr) (l net.Listener, cleanup func(), err error) {
	if addr.network == "tcp" {
		l, err = net.Listen("tcp", net.JoinHostPort(addr.host, strconv.Itoa(addr.port)))
		if err != nil {
			return nil, nil, err
		}
		return l, func() { l.Close() }, nil
	}
	dir := ""
	path := addr.path
	if path == "" {
		dir, path, err = privateSocket(os.TempDir())
		if err == nil && len(path) > maxSocketPath && os.TempDir() != "/tmp" {
			// A deep $TMPDIR: the socket would not fit in sun_path. /tmp always does.
			os.Remove(dir)
			dir, path, err = privateSocket("/tmp")
		}
		if err != nil {
			return nil, nil, err
		}
	} else if len(path) > maxSocketPath {
		return nil, nil, fmt.Errorf("the socket path %s is %d bytes, and a Unix socket path holds at most %d: give a shorter -address", path, len(path), maxSocketPath)
	} else if err := removeStaleSocket(path); err != nil {
		return nil, nil, err
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
		return nil, nil, err
	}
	return l, func() {
		l.Close()
		os.Remove(path)
		if dir != "" {
			os.Remove(dir)
		}
	}, nil
}

// maxSocketPath is the longest Unix socket path that fits everywhere: sun_path
// holds 108 bytes on Linux and 104 on macOS, with the terminating NUL.
const maxSocketPath = 103

// privateSocket makes a private directory in parent and returns it with the
// path of a socket in it.
func privateSocket(parent string) (dir, path string, err error) {
	dir, err = os.MkdirTemp(parent, "gotask-")
	if err != nil {
		return "", "", err
	}
	return dir, filepath.Join(dir, "gotask.sock"), nil
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
