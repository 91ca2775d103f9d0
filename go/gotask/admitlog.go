package gotask

import (
	"fmt"
	"net"
	"sync"
	"time"
)

// admitKind sorts the connections turned away at admission, and the accept
// errors, for admitLog.
type admitKind int

const (
	admitAuth    admitKind = iota // a missing or wrong secret
	admitTimeout                  // the opening not finished within the handshake timeout
	admitTLS                      // a failed TLS handshake
	admitLimit                    // refused at MaxConns
	admitAccept                   // Accept failed (out of descriptors, say)
	numAdmitKinds
)

var admitNouns = [numAdmitKinds]string{
	admitAuth:    "failed authentications",
	admitTimeout: "connections closed for not finishing their opening within -handshake-timeout",
	admitTLS:     "failed TLS handshakes",
	admitLimit:   "connections refused at -max-conns",
	admitAccept:  "accept errors",
}

// defaultAdmitLogInterval is how often admitLog reports what it counted.
const defaultAdmitLogInterval = time.Minute

// maxAdmitHosts bounds the addresses admitLog keeps per kind and interval.
const maxAdmitHosts = 1024

// admitLog keeps the log of admission failures short, whatever their number:
// the first of a kind is logged at once, in full; those that follow it are
// counted, and once per interval one line per kind says how many there were,
// from how many addresses, and the last reason. A kind with none in an
// interval goes quiet, and its next failure is logged in full again. Nothing
// it logs contains a secret: the reasons never do.
type admitLog struct {
	logf     func(format string, args ...any)
	interval time.Duration // zero: defaultAdmitLogInterval; tests shorten it

	mu     sync.Mutex
	counts [numAdmitKinds]*admitCount // nil: quiet
	timer  *time.Timer                // reports; nil when every kind is quiet
}

// admitCount is what admitLog counted of one kind since its last report.
type admitCount struct {
	since time.Time
	n     int
	hosts map[string]struct{}
	last  string
}

func (l *admitLog) every() time.Duration {
	if l.interval > 0 {
		return l.interval
	}
	return defaultAdmitLogInterval
}

// fail records one failure of kind from addr (nil for none): line is what to
// log if it is the first, reason what a count line quotes as the last.
func (l *admitLog) fail(kind admitKind, addr net.Addr, line, reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.counts[kind]
	if c == nil {
		l.counts[kind] = &admitCount{since: time.Now(), hosts: make(map[string]struct{})}
		l.logf("%s (more like it are counted, and reported every %v)", line, l.every())
		if l.timer == nil {
			l.timer = time.AfterFunc(l.every(), l.tick)
		}
		return
	}
	c.n++
	c.last = reason
	if addr != nil && len(c.hosts) <= maxAdmitHosts {
		c.hosts[hostOf(addr)] = struct{}{}
	}
}

// hostOf is the host part of addr: the IP for TCP, the address itself for
// others (empty for a Unix socket client).
func hostOf(addr net.Addr) string {
	if a, ok := addr.(*net.TCPAddr); ok {
		return a.IP.String()
	}
	return addr.String()
}

func (l *admitLog) tick() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.timer == nil {
		return // flushed meanwhile
	}
	if l.report(false) {
		l.timer.Reset(l.every())
	} else {
		l.timer = nil
	}
}

// report logs what was counted, and says whether a kind is still counting.
// A kind that counted nothing goes quiet; with all, every kind does.
func (l *admitLog) report(all bool) (counting bool) {
	now := time.Now()
	for kind, c := range l.counts {
		if c == nil {
			continue
		}
		if c.n > 0 {
			from := ""
			if len(c.hosts) > maxAdmitHosts {
				from = fmt.Sprintf(" from more than %d addresses", maxAdmitHosts)
			} else if len(c.hosts) == 1 {
				from = " from 1 address"
			} else if len(c.hosts) > 1 {
				from = fmt.Sprintf(" from %d addresses", len(c.hosts))
			}
			l.logf("%d more %s%s in the last %v (the last: %s)", c.n, admitNouns[kind], from, roundDuration(now.Sub(c.since)), c.last)
		}
		if c.n == 0 || all {
			l.counts[kind] = nil
			continue
		}
		l.counts[kind] = &admitCount{since: now, hosts: make(map[string]struct{})}
		counting = true
	}
	return counting
}

// flush logs what was counted and makes every kind quiet: Shutdown calls it,
// so that the log is complete when the program exits.
func (l *admitLog) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	l.report(true)
}

func roundDuration(d time.Duration) time.Duration {
	if d >= time.Second {
		return d.Round(time.Second)
	}
	return d.Round(time.Millisecond)
}

// describeConn names a connection for the log: the peer's address, or ours
// when the peer has none (a Unix socket client), or nothing if it is not a
// net.Conn (a pipe).
func describeConn(rwc any) string {
	if nc, ok := rwc.(net.Conn); ok && nc.RemoteAddr() != nil {
		if a := nc.RemoteAddr().String(); a != "" && a != "@" {
			return " from " + a
		}
		return " on " + nc.LocalAddr().String()
	}
	return ""
}

// remoteAddr is the peer's address of a net.Conn, else nil.
func remoteAddr(rwc any) net.Addr {
	if nc, ok := rwc.(net.Conn); ok {
		return nc.RemoteAddr()
	}
	return nil
}
