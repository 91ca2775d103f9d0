package gotask

// This file holds a connection's state and its life: made (newConn), served
// (serveConn: the writer started, the reader run, then the teardown), read
// (readLoop) and written (writeLoop). What it does between is by concern:
// admission in admit.go, deadlines in slow.go, replies in reply.go, calls to
// the client in hostcall.go.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trio-gotask/trio-gotask/go/gotask/internal/scan"
)

// conn is one served connection. One goroutine reads (serveConn's, in
// readLoop), one writes (writeLoop), and each call runs on a worker goroutine
// of its own (see workers).
type conn struct {
	srv         *Server
	rwc         io.ReadWriteCloser
	maxFrame    uint32 // the largest frame we accept
	maxInflight int

	// frameTimeout and writeTimeout are the server's, or zero: no deadline
	// (not a net.Conn, or turned off). See slow.go.
	frameTimeout time.Duration
	writeTimeout time.Duration
	// openDeadline, when not zero, is the read deadline of the opening
	// (admit.go): readFrame's frame deadlines never extend it.
	openDeadline time.Time

	// queued counts the bytes of frames queued for the writer and not yet
	// written; the reader waits (waitForRoom) while it exceeds queueLimit,
	// and room wakes it.
	queued     atomic.Int64
	queueLimit int64
	room       chan struct{}

	// replyLimit is the largest frame the client accepts: what its $hello
	// announced, else maxFrame.
	replyLimit atomic.Uint32

	ctx    context.Context // cancelled when the connection ends
	cancel context.CancelFunc

	// out and items are the writer's two queues of encoded frames. out
	// holds replies, host calls and notifications; items holds what a stream
	// sends: its items, then its response, and $drained, which must follow
	// the streams' responses. The writer takes from items only when out is
	// empty, so that a reply does not wait behind a stream (see writeLoop).
	out        chan *encBuf
	items      chan *encBuf
	quit       chan struct{} // closed to make the writer flush and stop
	quitOnce   sync.Once
	writerDone chan struct{}
	closeOnce  sync.Once

	handlers sync.WaitGroup

	mu       sync.Mutex       // guards pending and inflight
	pending  map[uint32]*call // by msgid: the calls a $cancel can reach
	inflight int              // calls holding a slot: at most maxInflight
	returned bool             // the connection ended: its slots went back to the server (returnSlots)

	// Host calls, the client's handlers called by us (hostcall.go).
	hmu       sync.Mutex
	hostSlots chan struct{}        // one token per host call in flight, up to max_host_calls; nil: the client takes none
	hostCalls map[uint32]*hostCall // by msgid: sent and not yet answered
	hostNext  uint32               // the next msgid to try
	hostErr   error                // why the connection ended, once it did
	hostDone  chan struct{}        // closed when hostErr is set

	// opening says the connection, accepted by Serve, has not completed its
	// opening (admission and the client's first frame), within openTimeout.
	// The reader's alone (admit.go).
	opening     bool
	openTimeout time.Duration

	// clientPings records that the client's $hello announced "ping": it
	// answers a $ping (protocol.md, Keepalive). The sidecar sends none yet.
	clientPings atomic.Bool
}

// call is a running call, kept in pending for a $cancel (and, for a stream,
// a $credit) to reach.
type call struct {
	cancel context.CancelFunc
	stream *outStream // a stream's; nil for a call
}

func (s *Server) newConn(rwc io.ReadWriteCloser) *conn {
	s.composeOnce.Do(s.composeChains)
	maxFrame := s.MaxFrameSize
	if maxFrame == 0 {
		maxFrame = DefaultMaxFrameSize
	}
	maxFrame = max(maxFrame, MinMaxFrameSize)
	inflight := s.MaxInflight
	if inflight <= 0 {
		inflight = DefaultMaxInflight
	}
	c := &conn{
		srv:         s,
		rwc:         rwc,
		maxFrame:    maxFrame,
		maxInflight: inflight,
		out:         make(chan *encBuf, inflight+16),
		items:       make(chan *encBuf, inflight+16),
		quit:        make(chan struct{}),
		writerDone:  make(chan struct{}),
		pending:     make(map[uint32]*call),
		hostCalls:   make(map[uint32]*hostCall),
		hostDone:    make(chan struct{}),
	}
	c.replyLimit.Store(maxFrame)
	c.frameTimeout, c.writeTimeout = s.timeouts(rwc)
	c.queueLimit = s.replyQueueLimit
	if c.queueLimit <= 0 {
		c.queueLimit = defaultReplyQueueLimit
	}
	c.room = make(chan struct{}, 1)
	c.ctx, c.cancel = context.WithCancel(s.baseCtx)
	// Every call's context carries its connection, for CallHost.
	c.ctx = context.WithValue(c.ctx, connKey{}, c)
	return c
}

// describe names the connection for the log: the peer's address, or ours
// when the peer has none (a Unix socket client), or nothing if it is not a
// net.Conn (a pipe).
func (c *conn) describe() string { return describeConn(c.rwc) }

// goAway queues [2, "$goaway", "..."], telling the client to send no more
// calls here.
func (c *conn) goAway() {
	e := getEncBuf()
	e.appendGoAway()
	c.sendNow(c.out, e)
}

// drained queues [2, "$drained", "..."] after the replies of every call run
// on this connection (each queued its reply before it ended): requests the
// client has no reply for by then were not run, and will not be.
//
// It goes on the items queue, not on out, or it would overtake the response
// of a stream still queued behind its items. Shutdown calls it once no call
// is active: every call queued its response before it ended (endCall), so
// each response is in a queue, or written, before $drained is queued. A
// stream's response is on items, ahead of $drained in that FIFO (sendNow's
// goroutine, if items is full, queues it after them too); any other reply is
// on out, and the writer drains out before it writes anything it took from
// items (writeLoop). Either way, the response is written first.
func (c *conn) drained() {
	e := getEncBuf()
	e.appendDrained()
	c.sendNow(c.items, e)
}

func (c *conn) closeRWC() { c.closeOnce.Do(func() { c.rwc.Close() }) }

func (c *conn) stopWriter() { c.quitOnce.Do(func() { close(c.quit) }) }

// readLoop reads messages until the stream ends (nil), fails, or is malformed
// (a protocol error). A connection accepted by Serve is admitted first.
func (c *conn) readLoop(accepted bool) error {
	br := bufio.NewReaderSize(c.rwc, 64<<10)
	if accepted {
		if err := c.admit(br); err != nil {
			return err
		}
	}
	c.hello()
	for {
		if c.ctx.Err() != nil || !c.waitForRoom() {
			return nil // the writer failed, or Shutdown gave up: replies cannot be delivered
		}
		payload, err := c.readFrame(br)
		if c.opening {
			err = c.firstFrame(err)
		}
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		m, err := parseMessage(payload)
		if err != nil {
			return err
		}
		c.opening = false
		switch m.typ {
		case typeRequest:
			c.request(m)
		case typeNotification:
			c.notification(m)
		default:
			if err := c.hostResponse(m); err != nil {
				return err
			}
		}
	}
}

// notification acts on $cancel, $credit, $ping and $hello, and ignores any
// other.
func (c *conn) notification(m *message) {
	switch m.method {
	case "$cancel":
	case "$credit":
		c.credit(m.params)
		return
	case "$ping":
		c.pong(m.params)
		return
	case "$hello":
		if limit, ok := helloFrameLimit(m.params); ok {
			c.replyLimit.Store(limit)
		}
		if n := helloHostCalls(m.params); n > 0 {
			c.takeHostCalls(n)
		}
		if helloPing(m.params) {
			c.clientPings.Store(true)
		}
		return
	default:
		return // unknown notifications are ignored
	}
	cur := scan.Cursor{B: m.params}
	id, err := readMsgid(&cur)
	if err != nil {
		return // not a msgid: no call has it
	}
	c.mu.Lock()
	cl := c.pending[id]
	c.mu.Unlock()
	if cl != nil {
		cl.cancel()
	}
}

// pong answers a $ping with [2, "$pong", token], queued from the reader like
// the replies it sends at once: it waits for no call, slot or shutdown, only,
// like them, for room in the write queue when the client does not read (which
// bounds the memory a flood of pings can take). A token that is not a
// non-negative integer is ignored, as a $cancel's msgid is.
func (c *conn) pong(params []byte) {
	cur := scan.Cursor{B: params}
	token, ok := cur.Uint()
	if !ok {
		return
	}
	e := getEncBuf()
	e.appendToken("$pong", token)
	e.frame()
	c.send(c.out, e)
}

// request answers a request at once (shutting_down, not_found,
// stream_mismatch, busy) or starts its call on a worker, which queues the
// reply (after a stream's items). It never blocks on a call, so that the read
// loop keeps reading.
func (c *conn) request(m *message) {
	s := c.srv
	if !s.startCall() {
		c.reply(m.msgid, &wireError{Type: "shutting_down", Message: "the sidecar is shutting down"}, nil, false)
		return
	}
	svc, mt, err := s.lookup(m.method)
	if err != nil {
		c.reply(m.msgid, &wireError{Type: "not_found", Message: err.Error()}, nil, false)
		s.endCall()
		return
	}
	if why := streamMismatch(m, mt); why != "" {
		c.reply(m.msgid, &wireError{Type: "stream_mismatch", Message: why}, nil, false)
		s.endCall()
		return
	}

	ctx, cancel := callContext(c.ctx, m)
	cl := &call{cancel: cancel}
	if m.stream {
		cl.stream = newOutStream(c, m.msgid, ctx, m.credit)
	}
	c.mu.Lock()
	if c.inflight >= c.maxInflight {
		// A client keeps to the limit its $hello announced. Refusing, rather
		// than waiting for a slot, keeps this goroutine reading: a $cancel
		// queued behind this request must get through.
		c.mu.Unlock()
		cancel()
		c.reply(m.msgid, &wireError{Type: "busy", Message: fmt.Sprintf(
			"more than %d calls in flight on one connection (the sidecar's -max-inflight, announced in its $hello)", c.maxInflight)}, nil, false)
		s.endCall()
		return
	}
	if !s.takeSlot() {
		c.mu.Unlock()
		cancel()
		c.reply(m.msgid, &wireError{Type: "busy", Message: fmt.Sprintf(
			"more than %d calls in flight in the sidecar (its -max-calls); try again, or elsewhere", s.MaxCalls)}, nil, false)
		s.endCall()
		return
	}
	c.inflight++
	c.pending[m.msgid] = cl
	c.mu.Unlock()
	c.handlers.Add(1)
	s.workers.run(func() {
		ctx := ctx
		var md Metadata
		if m.metadata != nil {
			if md = parseMetadata(m.metadata); md != nil {
				ctx = context.WithValue(ctx, metadataKey{}, md)
			}
		}
		result, werr, claimed := s.invoke(ctx, svc, mt, m, md, cl.stream)
		cancel()
		if claimed != "" {
			s.refusedClaim(m.method, claimed, werr)
		}
		c.mu.Lock()
		if c.pending[m.msgid] == cl {
			delete(c.pending, m.msgid)
		}
		c.mu.Unlock()
		e := c.response(m.msgid, werr, result, true)
		if cl.stream != nil {
			// A stream's response, whatever its error, follows its items
			// on the items queue: close (in invoke) waited for any Send
			// under way, so every item is queued before it.
			c.send(c.items, e)
		} else {
			c.send(c.out, e)
		}
		c.handlers.Done()
		s.endCall()
	})
}

// serveConn serves one connection; accepted says it came from Serve, so that
// it must first finish its TLS handshake and present the secret, if any.
func (s *Server) serveConn(rwc io.ReadWriteCloser, accepted bool) {
	c := s.newConn(rwc)
	s.mu.Lock()
	if s.closed {
		if accepted {
			s.accepted--
		}
		s.mu.Unlock()
		rwc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		if accepted {
			s.accepted-- // its descriptor is closed by now
		}
		if len(s.conns) == 0 && s.noConns != nil {
			close(s.noConns)
			s.noConns = nil
		}
		s.mu.Unlock()
	}()

	go c.writeLoop()
	err := c.readLoop(accepted)
	var ae *admitError
	switch {
	case errors.As(err, &ae):
		if ae.tell {
			c.refuse(ae.reason)
		}
		c.closeRWC()
		s.admitLog.fail(ae.kind, remoteAddr(rwc), "refusing connection"+c.describe()+": "+ae.reason, ae.reason)
	case errorCode(err) != "":
		s.logf("closing connection%s: %v", c.describe(), err)
		c.closeRWC()
	}
	// No reply can come any more: wake the host calls waiting for one, some
	// of which may hold up the handlers waited for below.
	c.endHostCalls(err)
	c.cancel()
	c.handlers.Wait()
	c.stopWriter()
	<-c.writerDone
	c.closeRWC()
	c.returnSlots()
}

// writeFailed ends a connection whose replies can no longer be delivered (the
// peer went away, perhaps without reading them): the calls are cancelled, the
// reader stops starting new ones, and closing the connection wakes it up.
func (c *conn) writeFailed() {
	c.cancel()
	c.closeRWC()
}

// writeLoop writes queued frames through one buffer and flushes when nothing
// more is queued, so replies finishing together share a write, and before an
// item that follows a reply.
//
// It takes a frame from out whenever there is one, and from items (the
// streams' output) only when out is empty: a reply or notification waits
// behind the frame being written, the buffer and the socket's, not behind the
// items queued. Before it writes a frame taken from items, it writes what out
// holds then, and flushes it: a frame queued on out before one queued on
// items (send happens before send) is therefore always written first, which
// drained relies on; and a reply is flushed at once rather than when items
// fill the buffer. Frames of one queue keep their order: a stream's response
// follows its items.
func (c *conn) writeLoop() {
	defer close(c.writerDone)
	var w io.Writer = c.rwc
	if c.writeTimeout > 0 {
		w = deadlineWriter{c.rwc.(net.Conn), c.writeTimeout}
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	dead := false
	urgent := false // bw holds a frame from out, not yet flushed
	failed := func(err error) {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			c.writeTimedOut()
		}
		c.writeFailed()
		dead = true
	}
	write := func(e *encBuf) {
		c.taken(e)
		if !dead {
			if _, err := bw.Write(e.buf.Bytes()); err != nil {
				failed(err)
			}
		}
		c.dequeued(e.buf.Len())
		putEncBuf(e)
	}
	flush := func() {
		urgent = false
		if !dead && bw.Buffered() > 0 {
			if err := bw.Flush(); err != nil {
				failed(err)
			}
		}
	}
	writeOut := func(e *encBuf) {
		write(e)
		urgent = true
	}
	// writeItem writes e, taken from items, after what out holds.
	writeItem := func(e *encBuf) {
		for more := true; more; {
			select {
			case o := <-c.out:
				writeOut(o)
			default:
				more = false
			}
		}
		if urgent {
			flush()
		}
		write(e)
	}
	stopping := false // quit closed: write what is queued, out first, and stop
	for {
		select {
		case e := <-c.out:
			writeOut(e)
			continue
		default:
		}
		select {
		case e := <-c.items:
			writeItem(e)
			continue
		default:
		}
		flush()
		if stopping {
			return
		}
		select {
		case e := <-c.out:
			writeOut(e)
		case e := <-c.items:
			writeItem(e)
		case <-c.quit:
			stopping = true
		}
	}
}
