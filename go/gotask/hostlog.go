package gotask

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/trio-gotask/trio-gotask/go/gotask/internal/check"
)

// HostLogOptions configure a HostLogHandler. The zero value (or nil) is
// ready to use.
type HostLogOptions struct {
	// Level is the least level of the records handled; nil means
	// slog.LevelInfo. The client's logging filters further by its own level.
	Level slog.Leveler
	// Logger names the record's logger: the Python client logs to
	// "trio_gotask.go.<Logger>", or to "trio_gotask.go" when it is empty.
	Logger string
	// Fallback handles the records no client can take: when no connection
	// takes host calls (the client announced no max_host_calls, or none is
	// connected), or when the connection's queue of outgoing frames is full.
	// Nil means a slog.TextHandler on standard error at Level, with a
	// "logger" attribute when Logger is set; trio_gotask logs the sidecar's
	// standard error, so such records reach Python's logging too, as text.
	Fallback slog.Handler
	// Server is the server whose connections take the records logged with
	// a context that is not a method's (context.Background(), say). Nil
	// means the server RunWith (or Run) serves, DefaultServer if none.
	Server *Server
}

// HostLogHandler is a slog.Handler whose records go to the Python client's
// logging, as [2, "$log", record] notifications (protocol.md section 2, Host
// calls). Create one with NewHostLogHandler. It is safe for concurrent use.
//
// A record logged with a method's context (or one derived from it), through
// Logger.InfoContext or Logger.Log say, travels over the connection the
// method's call came in on, ahead of the method's reply; any other record
// goes over the least busy connection that takes host calls, of
// HostLogOptions.Server.
//
// Handle never waits for the client: the record is queued on the
// connection's writer if there is room, and given to the fallback handler
// otherwise (the queue is full because the client reads slowly, or no
// client takes host calls). So no record is dropped, short of one queued on
// a connection that then ends; but records that take different ways may
// reach Python out of order.
//
// The record's attributes travel as msgpack values, as a method's reply
// does: numbers, strings, booleans and []byte as themselves, a time.Time as
// a timestamp (Python gets an aware datetime), a struct as a map. A
// time.Duration becomes its text, "1.5s"; an error its Error() text; a
// slog.LogValuer is resolved first; a group (slog.Group, or WithGroup) is a
// nested map, left out when empty. A value that msgpack cannot encode or
// Python cannot hold (a channel, a time past year 9999) becomes its
// fmt "%+v" text. Of two attributes with the same key in one map, the
// later wins. (Built with Go 1.22, whose slog keeps a time attribute as
// nanoseconds since 1970, a time before 1678 or after 2262 has wrapped before
// the handler sees it.)
//
// A record larger than the client's frame limit loses its attributes, then
// has its message cut to fit, ending in " [truncated]".
type HostLogHandler struct {
	level    slog.Leveler
	logger   string
	fallback slog.Handler
	srv      *Server

	// groups are the open groups, outermost first; attrs[i] are the
	// attributes added while i of them were open.
	groups []string
	attrs  [][]slog.Attr
}

// NewHostLogHandler returns a handler whose records go to the Python
// client's logging; opts may be nil. To send all of the program's slog
// records there:
//
//	slog.SetDefault(slog.New(gotask.NewHostLogHandler(nil)))
func NewHostLogHandler(opts *HostLogOptions) *HostLogHandler {
	var o HostLogOptions
	if opts != nil {
		o = *opts
	}
	if o.Level == nil {
		o.Level = slog.LevelInfo
	}
	if o.Fallback == nil {
		var h slog.Handler = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: o.Level})
		if o.Logger != "" {
			h = h.WithAttrs([]slog.Attr{slog.String("logger", o.Logger)})
		}
		o.Fallback = h
	}
	return &HostLogHandler{level: o.Level, logger: o.Logger, fallback: o.Fallback, srv: o.Server, attrs: make([][]slog.Attr, 1)}
}

// HostLogger returns a logger whose records at slog.LevelInfo and above go to
// the Python client's logging, to the logger "trio_gotask.go.<name>" (or
// "trio_gotask.go" when name is empty). It is
// slog.New(NewHostLogHandler(&HostLogOptions{Logger: name})).
func HostLogger(name string) *slog.Logger {
	return slog.New(NewHostLogHandler(&HostLogOptions{Logger: name}))
}

// Enabled reports whether level is at least the handler's Level.
func (h *HostLogHandler) Enabled(_ context.Context, level slog.Level) bool {
	return level >= h.level.Level()
}

// WithAttrs returns a handler whose records carry attrs too, inside the
// groups opened so far.
func (h *HostLogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	h2 := *h
	h2.attrs = slices.Clone(h.attrs)
	last := len(h2.attrs) - 1
	h2.attrs[last] = append(slices.Clip(h2.attrs[last]), attrs...)
	h2.fallback = h.fallback.WithAttrs(attrs)
	return &h2
}

// WithGroup returns a handler whose further attributes, the record's
// included, go in a nested map under name. An empty name changes nothing.
func (h *HostLogHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.groups = append(slices.Clip(h.groups), name)
	h2.attrs = append(slices.Clip(h.attrs), nil)
	h2.fallback = h.fallback.WithGroup(name)
	return &h2
}

// Handle sends r to the client without waiting, or gives it to the fallback
// handler (see HostLogHandler). Its error is the fallback's.
func (h *HostLogHandler) Handle(ctx context.Context, r slog.Record) error {
	c := h.conn(ctx)
	if c == nil {
		return h.toFallback(ctx, r)
	}
	e := getEncBuf()
	encodeLog(e, h.record(r), int(c.replyLimit.Load()))
	select {
	case c.out <- e:
		return nil
	default:
		putEncBuf(e)
		return h.toFallback(ctx, r)
	}
}

func (h *HostLogHandler) toFallback(ctx context.Context, r slog.Record) error {
	if ctx == nil {
		ctx = context.Background()
	}
	if !h.fallback.Enabled(ctx, r.Level) {
		return nil
	}
	return h.fallback.Handle(ctx, r)
}

// conn returns the connection a record logged with ctx goes over, or nil if
// none takes host calls.
func (h *HostLogHandler) conn(ctx context.Context) *conn {
	if ctx != nil {
		if c, ok := ctx.Value(connKey{}).(*conn); ok {
			if c.takesHostCalls() {
				return c
			}
			return nil
		}
	}
	s := h.srv
	if s == nil {
		s = hostServer()
	}
	return s.hostConn()
}

// takesHostCalls reports whether the client announced max_host_calls and the
// connection has not ended.
func (c *conn) takesHostCalls() bool {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	return c.hostSlots != nil && c.hostErr == nil
}

// logRecord is what a $log notification carries.
type logRecord struct {
	level   slog.Level
	logger  string
	message string
	time    time.Time // the zero time: none
	attrs   *logMap   // nil: none
}

// record gathers r and the handler's attributes into a logRecord.
func (h *HostLogHandler) record(r slog.Record) logRecord {
	root := &logMap{}
	m := root
	for i, attrs := range h.attrs {
		for _, a := range attrs {
			m.add(a)
		}
		if i < len(h.groups) {
			m = m.group(h.groups[i])
		}
	}
	r.Attrs(func(a slog.Attr) bool {
		m.add(a)
		return true
	})
	lr := logRecord{level: r.Level, logger: h.logger, message: r.Message, time: r.Time}
	if root.prune() {
		lr.attrs = root
	}
	return lr
}

// logMap is a map of attributes that keeps the order they were added in.
// Its values are leaves (what logValue returns) or *logMap, a group.
type logMap struct {
	keys []string
	vals []any
	idx  map[string]int // by key: the index in keys; built past a few keys
}

func (m *logMap) find(key string) int {
	if m.idx != nil {
		if i, ok := m.idx[key]; ok {
			return i
		}
		return -1
	}
	return slices.Index(m.keys, key)
}

// set sets key to v, in the place of an earlier value of key.
func (m *logMap) set(key string, v any) {
	if i := m.find(key); i >= 0 {
		m.vals[i] = v
		return
	}
	m.keys = append(m.keys, key)
	m.vals = append(m.vals, v)
	if m.idx != nil {
		m.idx[key] = len(m.keys) - 1
	} else if len(m.keys) > 8 {
		m.idx = make(map[string]int, 2*len(m.keys))
		for i, k := range m.keys {
			m.idx[k] = i
		}
	}
}

// group returns the group named key, made if there is none.
func (m *logMap) group(key string) *logMap {
	if i := m.find(key); i >= 0 {
		if g, ok := m.vals[i].(*logMap); ok {
			return g
		}
	}
	g := &logMap{}
	m.set(key, g)
	return g
}

// add adds a, by the rules of slog.Handler: an empty Attr is ignored, a
// group with an empty key is inlined.
func (m *logMap) add(a slog.Attr) {
	if a.Equal(slog.Attr{}) {
		return
	}
	v := a.Value.Resolve()
	if v.Kind() != slog.KindGroup {
		m.set(a.Key, logValue(v))
		return
	}
	as := v.Group()
	if len(as) == 0 {
		return
	}
	g := m
	if a.Key != "" {
		g = m.group(a.Key)
	}
	for _, x := range as {
		g.add(x)
	}
}

// prune removes the empty groups under m and reports whether m holds anything.
func (m *logMap) prune() bool {
	kept := 0
	for i, v := range m.vals {
		if g, ok := v.(*logMap); ok && !g.prune() {
			continue
		}
		m.keys[kept], m.vals[kept] = m.keys[i], m.vals[i]
		kept++
	}
	if kept < len(m.keys) {
		m.keys, m.vals, m.idx = m.keys[:kept], m.vals[:kept], nil
	}
	return kept > 0
}

// rawValue is a value of an attribute that msgpack may fail to encode, or
// encode into what Python cannot hold: it is checked as it is encoded.
type rawValue struct{ v any }

// logValue turns a resolved slog.Value, not a group, into what is encoded.
func logValue(v slog.Value) any {
	switch v.Kind() {
	case slog.KindString:
		return v.String()
	case slog.KindInt64:
		return v.Int64()
	case slog.KindUint64:
		return v.Uint64()
	case slog.KindFloat64:
		return v.Float64()
	case slog.KindBool:
		return v.Bool()
	case slog.KindDuration:
		return v.Duration().String()
	case slog.KindTime:
		return rawValue{v.Time()}
	}
	x := v.Any()
	if err, ok := x.(error); ok {
		return errorText(err)
	}
	return rawValue{x}
}

// errorText returns err.Error(), or says why it has none (a nil pointer's
// method panicked, say).
func errorText(err error) (s string) {
	defer func() {
		if r := recover(); r != nil {
			s = fmt.Sprintf("!PANIC in Error() of %T: %v", err, r)
		}
	}()
	return err.Error()
}

// encodeLog encodes and frames [2, "$log", record] in e, in at most limit
// bytes: a record too large loses its attributes, then has its message, and
// last its logger name, shortened.
func encodeLog(e *encBuf, r logRecord, limit int) {
	for {
		e.buf.Truncate(4)
		enc := e.enc
		enc.EncodeArrayLen(3)
		enc.EncodeUint(typeNotification)
		enc.EncodeString("$log")
		start := e.buf.Len()
		enc.EncodeMapLen(5)
		enc.EncodeString("level")
		enc.EncodeInt(int64(r.level))
		enc.EncodeString("logger")
		enc.EncodeString(r.logger)
		enc.EncodeString("message")
		enc.EncodeString(r.message)
		enc.EncodeString("time")
		if r.time.IsZero() || !check.PyTime(r.time) {
			enc.EncodeNil()
		} else {
			enc.EncodeTime(r.time)
		}
		enc.EncodeString("attrs")
		if r.attrs == nil {
			enc.EncodeNil()
		} else {
			encodeLogMap(e, r.attrs)
			if check.Reply(e.buf.Bytes()[start:]) != nil {
				// Only nesting deeper than Python decodes gets here: each
				// value was checked alone.
				r.attrs = nil
				continue
			}
		}
		e.frame()
		over := e.buf.Len() - 4 - limit
		switch {
		case over <= 0:
			return
		case r.attrs != nil:
			r.attrs = nil
		case r.message != "":
			r.message = shorten(r.message, over)
		case r.logger != "":
			r.logger = shorten(r.logger, over)
		default:
			return // cannot happen: a limit is at least MinMaxFrameSize
		}
	}
}

func encodeLogMap(e *encBuf, m *logMap) {
	enc := e.enc
	enc.EncodeMapLen(len(m.keys))
	for i, k := range m.keys {
		enc.EncodeString(k)
		switch v := m.vals[i].(type) {
		case *logMap:
			encodeLogMap(e, v)
		case rawValue:
			encodeRaw(e, v.v)
		case string:
			enc.EncodeString(v)
		case int64:
			enc.EncodeInt(v)
		case uint64:
			enc.EncodeUint(v)
		case float64:
			enc.EncodeFloat64(v)
		case bool:
			enc.EncodeBool(v)
		}
	}
}

// encodeRaw encodes v, or its text when msgpack cannot encode it or Python
// could not hold it.
func encodeRaw(e *encBuf, v any) {
	start := e.buf.Len()
	if tryEncode(e, v) == nil && check.Reply(e.buf.Bytes()[start:]) == nil {
		return
	}
	e.buf.Truncate(start)
	e.enc.EncodeString(valueText(v))
}

func tryEncode(e *encBuf, v any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return e.enc.Encode(v)
}

func valueText(v any) (s string) {
	defer func() {
		if r := recover(); r != nil {
			s = fmt.Sprintf("!PANIC formatting %T: %v", v, r)
		}
	}()
	return fmt.Sprintf("%+v", v)
}
