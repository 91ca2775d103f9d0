package gotask

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// writeCert writes a fresh self-signed ECDSA certificate for 127.0.0.1 and
// localhost, and its key, as PEM files.
func writeCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "gotask test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// checkNoSecret fails if the sidecar's standard error holds a secret.
func checkNoSecret(t *testing.T, sc *sidecar, secrets ...string) {
	t.Helper()
	s := sc.stderr.String()
	for _, secret := range secrets {
		if strings.Contains(s, secret) {
			t.Fatalf("stderr contains the secret %q:\n%s", secret, s)
		}
	}
}

func TestSidecarSecret(t *testing.T) {
	t.Parallel()
	for _, address := range []string{"", "127.0.0.1:0"} {
		args := []string{}
		if address != "" {
			args = append(args, "-address", address)
		}
		sc := startSidecarEnv(t, []string{secretEnv + "=" + goodSecret}, true, args...)
		good := authClient(t, sc.dial(), goodSecret)
		checkCalls(t, good)
		lines := 1 // the Log call's line
		waitLines(t, sc.stderr.String, lines, "App.Log")
		for i, bad := range badFirstFrames {
			conn := sc.dial()
			if _, err := conn.Write(bad.data(t)); err != nil {
				t.Fatal(err)
			}
			if bad.halfClose {
				conn.(interface{ CloseWrite() error }).CloseWrite()
			}
			if told := expectClosed(t, conn, hangGuard, sc.transport+" "+bad.name); !strings.Contains(told, bad.reason) {
				t.Errorf("%s %s: told %q", sc.transport, bad.name, told)
			}
			if i == 0 {
				// The first failure is logged in full; the others are counted.
				lines++
				waitLines(t, sc.stderr.String, lines, sc.transport+" "+bad.name)
				if last := lastLine(sc.stderr.String()); !strings.Contains(last, bad.reason) || !strings.Contains(last, "refusing connection") {
					t.Errorf("%s %s: log line %q", sc.transport, bad.name, last)
				}
			}
			var hi map[string]any
			if err := good.call("App.Hi", bad.name, &hi); err != nil || hi["hello"] != bad.name {
				t.Fatalf("%s %s: authenticated connection: %v %v", sc.transport, bad.name, hi, err)
			}
		}
		if n := strings.Count(sc.stderr.String(), "\n"); n != lines {
			t.Fatalf("%d stderr lines, want %d:\n%s", n, lines, sc.stderr.String())
		}
		// Shutdown reports what was counted.
		good.rwc.Close()
		sc.cmd.Process.Signal(syscall.SIGTERM)
		if code := sc.waitExit(); code != 0 {
			t.Fatalf("exit status %d after SIGTERM", code)
		}
		want := fmt.Sprintf("%d more failed authentications from 1 address", len(badFirstFrames)-1)
		if last := lastLine(sc.stderr.String()); !strings.Contains(last, want) {
			t.Errorf("%s: last log line %q, want %q", sc.transport, last, want)
		}
		checkNoSecret(t, sc, goodSecret, wrongSecret, goodSecret[:10])
	}
}

// TestSidecarSecretPipe: the pipe, private to the parent, needs no $auth.
func TestSidecarSecretPipe(t *testing.T) {
	t.Parallel()
	sc := startSidecarEnv(t, []string{secretEnv + "=" + goodSecret}, true, "-listen-on-pipe")
	var hi map[string]any
	if err := sc.pipeClient().call("App.Hi", "pipe", &hi); err != nil || hi["hello"] != "pipe" {
		t.Fatalf("Hi over the pipe: %v %v", hi, err)
	}
}

// TestSidecarSilentClient: a client that connects and sends nothing holds up
// nobody, and is closed after -handshake-timeout, with or without a secret; a
// client that sent its $hello is not.
func TestSidecarSilentClient(t *testing.T) {
	t.Parallel()
	for _, secret := range []string{"", goodSecret} {
		var env []string
		if secret != "" {
			env = []string{secretEnv + "=" + secret}
		}
		sc := startSidecarEnv(t, env, true, "-address", "127.0.0.1:0", "-handshake-timeout", "300ms")
		var good *testClient
		if secret != "" {
			good = authClient(t, sc.dial(), secret)
		} else {
			good = sc.client()
		}
		var hi map[string]any
		if err := good.call("App.Hi", "x", &hi); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		silent := sc.dial()
		if secret == "" {
			if m := readAny(t, silent); m.method != "$hello" {
				t.Fatalf("silent connection: first frame %+v, want the $hello", m)
			}
		}
		told := expectClosed(t, silent, hangGuard, "silent")
		// The deadline started after start: this holds on any machine.
		if d := time.Since(start); d < 300*time.Millisecond {
			t.Fatalf("silent connection closed after %v, before -handshake-timeout", d)
		}
		want := "no $hello or other frame within 300ms (-handshake-timeout)"
		if secret != "" {
			want = "no $auth frame within 300ms (-handshake-timeout)"
			if told != want {
				t.Errorf("silent, with a secret: told %q", told)
			}
		}
		waitLines(t, sc.stderr.String, 1, "silent")
		if s := sc.stderr.String(); !strings.Contains(s, "refusing connection") || !strings.Contains(s, want) {
			t.Fatalf("stderr %q", s)
		}
		if err := good.call("App.Hi", "after", &hi); err != nil {
			t.Fatalf("a connection that opened, after the timeout: %v", err)
		}
	}
}

func TestSidecarSocketMode(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{nil, {"-address", filepath.Join(t.TempDir(), "s.sock")}} {
		sc := startSidecar(t, true, args...)
		fi, err := os.Stat(sc.address)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
			t.Fatalf("socket %s has mode %v, want 0600", sc.address, fi.Mode())
		}
	}
}

func TestSidecarTLS(t *testing.T) {
	t.Parallel()
	certFile, keyFile := writeCert(t)
	sc := startSidecarEnv(t, []string{secretEnv + "=" + goodSecret}, true,
		"-address", "127.0.0.1:0", "-tls-cert", certFile, "-tls-key", keyFile)
	if sc.transport != "tcp" {
		t.Fatalf("transport %q", sc.transport)
	}
	pemCert, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pemCert)
	dialTLS := func(cfg *tls.Config) (*tls.Conn, error) {
		cfg.RootCAs = roots
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: hangGuard}, "tcp", sc.address, cfg)
		if err == nil {
			t.Cleanup(func() { conn.Close() })
		}
		return conn, err
	}
	conn, err := dialTLS(&tls.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if v := conn.ConnectionState().Version; v < tls.VersionTLS12 {
		t.Fatalf("TLS version %x", v)
	}
	c := authClient(t, conn, goodSecret)
	var hi map[string]any
	if err := c.call("App.Hi", "tls", &hi); err != nil || hi["hello"] != "tls" {
		t.Fatalf("Hi over TLS: %v %v", hi, err)
	}
	var large []byte
	if err := c.call("App.Large", 3<<20, &large); err != nil || len(large) != 3<<20 {
		t.Fatalf("Large over TLS: %d %v", len(large), err)
	}

	// $auth still applies inside TLS.
	noAuth, err := dialTLS(&tls.Config{})
	if err != nil {
		t.Fatal(err)
	}
	noAuth.Write(frameOf(t, []any{0, 1, "App.Hi", "x", nil}))
	expectClosed(t, noAuth, hangGuard, "TLS without $auth")
	waitLines(t, sc.stderr.String, 1, "TLS without $auth")

	// A plain client is disconnected.
	plain := sc.dial()
	plain.Write(authFrame(t, goodSecret))
	expectClosed(t, plain, hangGuard, "plain client")
	waitLines(t, sc.stderr.String, 2, "plain client")
	if last := lastLine(sc.stderr.String()); !strings.Contains(last, "TLS handshake failed") {
		t.Errorf("plain client: log line %q", last)
	}

	// TLS older than 1.2 is refused.
	if old, err := dialTLS(&tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}); err == nil {
		old.Write(authFrame(t, goodSecret))
		expectClosed(t, old, hangGuard, "TLS 1.1")
	}
	waitLines(t, sc.stderr.String, 3, "TLS 1.1")

	// A readiness probe (connect, close) is not logged: the count below stays 3.
	probe := sc.dial()
	probe.(interface{ CloseWrite() error }).CloseWrite()
	expectClosed(t, probe, hangGuard, "probe")

	if err := c.call("App.Hi", "still", &hi); err != nil || hi["hello"] != "still" {
		t.Fatalf("Hi after the bad clients: %v %v", hi, err)
	}
	if n := strings.Count(sc.stderr.String(), "\n"); n != 3 {
		t.Fatalf("%d stderr lines, want 3:\n%s", n, sc.stderr.String())
	}
	checkNoSecret(t, sc, goodSecret)
}

func TestSidecarTLSNeedsTCP(t *testing.T) {
	t.Parallel()
	certFile, keyFile := writeCert(t)
	for _, args := range [][]string{
		{"-address", filepath.Join(t.TempDir(), "s.sock")},
		{"-listen-on-pipe"},
		{"-address", "127.0.0.1:0", "-tls-key", keyFile},
	} {
		cmd := exec.Command(exampleBin, append(args, "-standalone", "-tls-cert", certFile)...)
		if !contains(args, "-tls-key") {
			cmd.Args = append(cmd.Args, "-tls-key", keyFile)
		} else {
			cmd.Args = cmd.Args[:len(cmd.Args)-2] // only -tls-key
		}
		var stdout strings.Builder
		cmd.Stdout = &stdout
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(stderr).ReadString('\n')
		err = cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || stdout.Len() != 0 || !strings.Contains(line, "-tls-") {
			t.Errorf("%v: %v, stdout %q, stderr %q", cmd.Args[1:], err, stdout.String(), line)
		}
	}
}

// rss returns the resident memory of process pid in bytes.
func rss(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Skip("no /proc:", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Skip("no VmRSS")
	return 0
}

// TestSidecarBackpressure: a client that sends requests for 1 MiB replies and
// never reads them makes the sidecar stop reading from it; its memory stays
// bounded, others are served, and closing the client frees it.
func TestSidecarBackpressure(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t, true, "-max-inflight", "4")
	pid := sc.cmd.Process.Pid
	c := sc.client()
	greedy := sc.dial()
	var batch []byte
	for i := 0; i < 100; i++ {
		batch = append(batch, frameOf(t, []any{0, i, "App.Large", 1 << 20, nil})...)
	}
	// Up to a million requests, a terabyte of replies.
	if !writeUntilBlocked(t, greedy, batch, 10000, 300*time.Millisecond) {
		t.Fatal("the sidecar kept reading requests whose replies nobody read")
	}
	var hi map[string]any
	if err := c.call("App.Hi", "beside", &hi); err != nil {
		t.Fatalf("other connection: %v", err)
	}
	// 4 calls plus 20 queued replies of 1 MiB, and buffers: far below this.
	if m := rss(t, pid); m > 200<<20 {
		t.Fatalf("sidecar resident memory %d MiB", m>>20)
	}
	greedy.Close()
	for i := 0; i < 20; i++ {
		var large []byte
		if err := c.call("App.Large", 1<<20, &large); err != nil || len(large) != 1<<20 {
			t.Fatalf("other connection after the greedy one closed: %v", err)
		}
	}
	if s := sc.stderr.String(); s != "" {
		t.Fatalf("stderr %q", s)
	}
}
