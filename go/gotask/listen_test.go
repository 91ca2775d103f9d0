package gotask

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunRefusesAnInvalidAddress: an -address of the host:port form that
// breaks its rules fails Run with a message naming the address and why,
// instead of serving on a Unix socket named after it.
func TestRunRefusesAnInvalidAddress(t *testing.T) {
	for address, why := range map[string]string{
		"host:70000":  "port 70000 is above 65535",
		"::1:6001":    "[::1]:6001",
		"[::1]x:6001": "between ']' and ':'",
		"bad\x00path": "NUL",
	} {
		srv, _ := newTestServer(t, newSvc())
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // should it serve after all, it stops at once
		var stdout, stderr bytes.Buffer
		o := Options{Address: address, Standalone: true}
		code := run(ctx, srv, o, false, nil, &stdout, &stderr)
		if code != 1 || !strings.Contains(stderr.String(), "-address ") || !strings.Contains(stderr.String(), why) || stdout.Len() != 0 {
			t.Errorf("-address %q: exit %d, stdout %q, stderr %q; want exit 1 and an error saying %q", address, code, stdout.String(), stderr.String(), why)
		}
		if _, err := os.Lstat(address); err == nil {
			os.Remove(address)
			t.Errorf("-address %q made a socket of that name", address)
		}
	}
}

// TestAddressVectors reads every address of the shared vectors by the rule of
// protocol.md section 5, as the Python client's tests do.
func TestAddressVectors(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(vectorDir, "addresses.json"))
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Addresses []struct {
			Address string `json:"address"`
			Kind    string `json:"kind"`
			Host    string `json:"host"`
			Port    int    `json:"port"`
		} `json:"addresses"`
	}
	if err := json.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	if len(file.Addresses) == 0 {
		t.Fatal("addresses.json: no vectors")
	}
	for _, v := range file.Addresses {
		addr, err := parseAddress(v.Address)
		switch v.Kind {
		case "invalid":
			if err == nil {
				t.Errorf("%q: read as %+v; want an error", v.Address, addr)
			}
		case "unix":
			if err != nil || addr != (listenAddr{network: "unix", path: v.Address}) {
				t.Errorf("%q: %+v, %v; want a Unix socket path", v.Address, addr, err)
			}
		case "tcp":
			if err != nil || addr != (listenAddr{network: "tcp", host: v.Host, port: v.Port}) {
				t.Errorf("%q: %+v, %v; want TCP host %q port %d", v.Address, addr, err, v.Host, v.Port)
			}
		default:
			t.Errorf("%q: unknown kind %q", v.Address, v.Kind)
		}
	}
}

// With no -address the socket goes in a private folder of $TMPDIR, or of /tmp
// when $TMPDIR is too deep for a socket path; an -address too long fails
// saying so, rather than with bind's "invalid argument".
func TestListenFitsTheSocketPath(t *testing.T) {
	deep := filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 60))
	if err := os.MkdirAll(deep, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", deep)
	l, cleanup, err := listen(listenAddr{network: "unix"})
	if err != nil {
		t.Fatalf("a deep TMPDIR: %v", err)
	}
	path := l.Addr().String()
	if !strings.HasPrefix(path, "/tmp/gotask-") || len(path) > maxSocketPath {
		t.Errorf("socket at %s", path)
	}
	cleanup()
	if _, err := os.Stat(filepath.Dir(path)); !os.IsNotExist(err) {
		t.Errorf("its folder is left behind: %v", err)
	}

	long := filepath.Join(deep, "s.sock")
	if _, _, err := listen(listenAddr{network: "unix", path: long}); err == nil || !strings.Contains(err.Error(), "give a shorter -address") {
		t.Errorf("an -address of %d bytes: %v", len(long), err)
	}
}
