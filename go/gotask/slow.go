package gotask

import (
	"bufio"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"time"
)

// DefaultFrameTimeout is how long a frame may take to arrive once its first
// byte has, unless Server.FrameTimeout says otherwise.
const DefaultFrameTimeout = 30 * time.Second

// DefaultWriteTimeout is how long a write to a client may make no progress
// before the connection is closed, unless Server.WriteTimeout says otherwise.
const DefaultWriteTimeout = 30 * time.Second

// defaultReplyQueueLimit is how many bytes of frames may wait for the writer
// before the reader stops reading (see conn.waitForRoom).
const defaultReplyQueueLimit = 4 << 20

// writeChunk is the most written under one write deadline: a client that
// reads this much per WriteTimeout keeps its connection, however long the
// frame.
const writeChunk = 1 << 20

// timeouts returns the connection's frame and write timeouts, zero for none:
// a connection that is not a net.Conn (standard input and output) has no
// deadlines.
func (s *Server) timeouts(rwc any) (frame, write time.Duration) {
	if _, ok := rwc.(net.Conn); !ok {
		return 0, 0
	}
	pick := func(d, def time.Duration) time.Duration {
		switch {
		case d == 0:
			return def
		case d < 0:
			return 0
		}
		return d
	}
	return pick(s.FrameTimeout, DefaultFrameTimeout), pick(s.WriteTimeout, DefaultWriteTimeout)
}

// readFrame reads the connection's next frame. Between frames there is no
// deadline (an idle client is the keepalive's business); once a frame's first
// byte has arrived, the rest must arrive within the frame timeout. A frame
// already buffered whole is read without touching the deadline.
func (c *conn) readFrame(br *bufio.Reader) ([]byte, error) {
	if c.frameTimeout <= 0 {
		return readFrame(br, c.maxFrame)
	}
	if _, err := br.Peek(1); err != nil {
		return nil, err // io.EOF between frames, as readFrame says it
	}
	if br.Buffered() >= 4 {
		hdr, _ := br.Peek(4)
		if n := binary.BigEndian.Uint32(hdr); n == 0 || n > c.maxFrame || br.Buffered()-4 >= int(n) {
			return readFrame(br, c.maxFrame) // all there, or refused unread
		}
	}
	nc := c.rwc.(net.Conn)
	deadline := time.Now().Add(c.frameTimeout)
	// An opening's deadline (admission's, if it set openDeadline) stands: a
	// frame deadline does not extend it, and it is set again after the frame.
	opening := !c.openDeadline.IsZero() && c.openDeadline.Before(deadline)
	if opening {
		deadline = c.openDeadline
	}
	nc.SetReadDeadline(deadline)
	payload, err := readFrame(br, c.maxFrame)
	if errors.Is(err, os.ErrDeadlineExceeded) && !opening {
		return nil, protoErr(codeTruncated, "a frame did not arrive whole within %v (-frame-timeout): %v", c.frameTimeout, err)
	}
	nc.SetReadDeadline(c.openDeadline)
	return payload, err
}

// waitForRoom returns once fewer than the reply queue limit's bytes of frames
// wait for the writer, or false if the connection ended first. The reader
// calls it before each frame: a client that does not read its replies stops
// getting requests read, and so started. Its $cancel notifications wait too;
// the client is stalling itself, and once it reads, they arrive. (Reading on
// and refusing requests would not help: the refusals are replies too.)
func (c *conn) waitForRoom() bool {
	for c.queued.Load() > c.queueLimit {
		select {
		case <-c.room:
		case <-c.ctx.Done():
			return false
		case <-c.writerDone:
			return false
		}
	}
	return true
}

// dequeued counts n bytes of frames as taken by the writer, and wakes the
// reader if it waits for room.
func (c *conn) dequeued(n int) {
	if c.queued.Add(-int64(n)) <= c.queueLimit {
		select {
		case c.room <- struct{}{}:
		default:
		}
	}
}

// deadlineWriter writes to a net.Conn in chunks of at most writeChunk bytes,
// each under a deadline of timeout from its start. A deadline per chunk
// rather than per frame: a 64 MiB reply to a slow but reading client is not
// cut off, while a client that reads nothing for timeout is. A timeout makes
// the connection unusable (a TLS connection's state is lost): the writer
// closes it.
type deadlineWriter struct {
	nc      net.Conn
	timeout time.Duration
}

func (w deadlineWriter) Write(p []byte) (int, error) {
	written := 0
	for written < len(p) {
		chunk := p[written:min(len(p), written+writeChunk)]
		w.nc.SetWriteDeadline(time.Now().Add(w.timeout))
		n, err := w.nc.Write(chunk)
		written += n
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// writeTimedOut logs why a connection whose client stopped reading is closed.
func (c *conn) writeTimedOut() {
	c.srv.logf("closing connection%s: the client read nothing for %v while replies waited (-write-timeout)", c.describe(), c.writeTimeout)
}
