package gotask

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Logs is a service whose one method runs the test's function with the
// call's context.
type Logs struct{ fn func(ctx context.Context) }

func (l *Logs) Do(ctx context.Context, _ any, r *any) error {
	l.fn(ctx)
	return nil
}

// newLogServer is newHostServer with a Logs service whose method runs fn.
func newLogServer(t *testing.T, fn func(ctx context.Context)) *Server {
	t.Helper()
	srv, _, _ := newHostServer(t)
	if err := srv.Register(&Logs{fn}); err != nil {
		t.Fatal(err)
	}
	return srv
}

// logRec is a $log record as the test client decodes it.
type logRec struct {
	Level   int64          `msgpack:"level"`
	Logger  string         `msgpack:"logger"`
	Message string         `msgpack:"message"`
	Time    *time.Time     `msgpack:"time"`
	Attrs   map[string]any `msgpack:"attrs"`
}

// nextLog returns the next $log record the sidecar sent, and its size.
func (c *testClient) nextLog() (logRec, int) {
	c.t.Helper()
	m := c.next()
	if m.typ != typeNotification || m.method != "$log" {
		c.t.Fatalf("got %+v, want a $log notification", m)
	}
	var raw map[string]any
	if err := decodeValue(m.params, &raw); err != nil {
		c.t.Fatal(err)
	}
	if len(raw) != 5 {
		c.t.Errorf("the record has the keys %v, want level, logger, message, time, attrs", raw)
	}
	var r logRec
	if err := decodeValue(m.params, &r); err != nil {
		c.t.Fatal(err)
	}
	return r, len(m.params)
}

// noMore checks that the sidecar sent nothing more.
func (c *testClient) noMore() {
	c.t.Helper()
	c.ping()
	if len(c.inbox) != 0 {
		c.t.Fatalf("the sidecar sent %+v", <-c.inbox)
	}
}

// jsonish renders a decoded value with its integers as int64, to compare
// what the client decoded (the smallest integer type that holds each) with
// what a test expects, and its times as UTC text.
func jsonish(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = jsonish(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = jsonish(e)
		}
		return out
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case int8:
		return int64(x)
	case int16:
		return int64(x)
	case int32:
		return int64(x)
	case uint8:
		return int64(x)
	case uint16:
		return int64(x)
	case uint32:
		return int64(x)
	}
	return v
}

func sameValue(a, b any) bool { return reflect.DeepEqual(jsonish(a), jsonish(b)) }

// secretToken is a LogValuer, resolved before the record is sent.
type secretToken string

func (t secretToken) LogValue() slog.Value { return slog.StringValue("****") }

// nilErr's Error panics on a nil pointer.
type nilErr struct{ s string }

func (e *nilErr) Error() string { return e.s }

func TestHostLogRecord(t *testing.T) {
	when := time.Date(2024, 5, 6, 7, 8, 9, 123456000, time.UTC)
	far := time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC)
	// Past year 9999 Python has no datetime, so the handler sends the text.
	var wantFar any = "12000-01-01 00:00:00 +0000 UTC"
	if kept := slog.TimeValue(far).Time(); !kept.Equal(far) {
		// slog before Go 1.23 keeps a time as nanoseconds since 1970: year 12000 wraps
		// (to 2062) before the handler sees it, which then sends what slog holds.
		wantFar = kept
	}
	var logger *slog.Logger
	var record func(ctx context.Context)
	srv := newLogServer(t, func(ctx context.Context) { record(ctx) })
	c, _ := serveHost(t, srv, map[string]any{"max_host_calls": 1})

	logger = slog.New(NewHostLogHandler(&HostLogOptions{Level: slog.LevelDebug, Logger: "db"}))
	for _, tc := range []struct {
		level slog.Level
		want  int64
	}{{slog.LevelDebug, -4}, {slog.LevelInfo, 0}, {slog.LevelWarn, 4}, {slog.LevelError, 8}, {slog.LevelInfo + 2, 2}} {
		record = func(ctx context.Context) { logger.Log(ctx, tc.level, "at "+tc.level.String()) }
		before := time.Now()
		if err := c.call("Logs.Do", nil, nil); err != nil {
			t.Fatal(err)
		}
		// The record came before the reply.
		r, _ := c.nextLog()
		if r.Level != tc.want || r.Logger != "db" || r.Message != "at "+tc.level.String() || r.Attrs != nil {
			t.Errorf("%v: got %+v", tc.level, r)
		}
		if r.Time == nil || r.Time.Before(before.Truncate(time.Microsecond)) || r.Time.After(time.Now()) {
			t.Errorf("%v: time %v, want one during the call", tc.level, r.Time)
		}
	}

	// Attributes: With, WithGroup, a group, an error, a duration, a time,
	// bytes, a LogValuer, and what msgpack or Python cannot take.
	logger = slog.New(NewHostLogHandler(nil)).With("svc", "x").WithGroup("g").With("in", true)
	record = func(ctx context.Context) {
		logger.InfoContext(ctx, "rich",
			"n", 3,
			slog.Group("req", slog.Int("id", 7), slog.Group("empty")),
			"err", errors.New("boom"),
			"d", 1500*time.Millisecond,
			"when", when,
			"raw", []byte{1, 2},
			"secret", secretToken("hunter2"),
			slog.Group("", slog.String("inlined", "yes")),
			slog.Attr{},
			"ch", make(chan int),
			"far", far,
			"nilerr", (*nilErr)(nil),
			"u", uint64(1<<63),
			"f", 0.5,
			"n", 4, // the later value wins
		)
	}
	if err := c.call("Logs.Do", nil, nil); err != nil {
		t.Fatal(err)
	}
	r, _ := c.nextLog()
	if r.Level != 0 || r.Logger != "" || r.Message != "rich" {
		t.Errorf("got %+v", r)
	}
	g, _ := r.Attrs["g"].(map[string]any)
	if r.Attrs["svc"] != "x" || len(r.Attrs) != 2 || g == nil {
		t.Fatalf("attrs %v, want svc and the group g", r.Attrs)
	}
	if got, _ := g["when"].(time.Time); !got.Equal(when) {
		t.Errorf("when: %v, want %v", g["when"], when)
	}
	if raw, _ := g["raw"].([]byte); !bytes.Equal(raw, []byte{1, 2}) {
		t.Errorf("raw: %#v", g["raw"])
	}
	if ch, _ := g["ch"].(string); !strings.HasPrefix(ch, "0x") {
		t.Errorf("ch: %#v, want its %%+v text", g["ch"])
	}
	if s, _ := g["nilerr"].(string); !strings.Contains(s, "PANIC") {
		t.Errorf("nilerr: %#v, want the panic of its Error()", g["nilerr"])
	}
	for k, want := range map[string]any{
		"in": true, "n": int64(4), "req": map[string]any{"id": int64(7)}, "err": "boom", "d": "1.5s",
		"secret": "****", "inlined": "yes", "far": wantFar,
		"u": uint64(1 << 63), "f": 0.5,
	} {
		if !sameValue(g[k], want) {
			t.Errorf("%s: %#v, want %#v", k, g[k], want)
		}
	}
	if len(g) != 14 {
		t.Errorf("the group g holds %d attributes: %v", len(g), g)
	}

	// A group opened by WithGroup and left empty is left out, with the
	// attributes around it.
	logger = slog.New(NewHostLogHandler(nil)).WithGroup("g")
	record = func(ctx context.Context) { logger.InfoContext(ctx, "bare") }
	if err := c.call("Logs.Do", nil, nil); err != nil {
		t.Fatal(err)
	}
	if r, _ := c.nextLog(); r.Attrs != nil || r.Message != "bare" {
		t.Errorf("got %+v, want no attrs", r)
	}

	// Below the handler's level: nothing is sent.
	logger = slog.New(NewHostLogHandler(nil))
	record = func(ctx context.Context) { logger.DebugContext(ctx, "quiet") }
	if err := c.call("Logs.Do", nil, nil); err != nil {
		t.Fatal(err)
	}
	c.noMore()
}

func TestHostLogBackground(t *testing.T) {
	srv, _, _ := newHostServer(t)
	plain, _ := serveHost(t, srv, nil)
	host, _ := serveHost(t, srv, map[string]any{"max_host_calls": 1})
	fallback := new(syncBuffer)
	logger := slog.New(NewHostLogHandler(&HostLogOptions{Server: srv, Logger: "bg", Fallback: slog.NewTextHandler(fallback, nil)}))
	logger.Info("from a goroutine", "k", "v")
	r, _ := host.nextLog()
	if r.Message != "from a goroutine" || r.Logger != "bg" || !sameValue(r.Attrs, map[string]any{"k": "v"}) {
		t.Errorf("got %+v", r)
	}
	// A nil context counts as none.
	NewHostLogHandler(&HostLogOptions{Server: srv}).Handle(nil, slog.NewRecord(time.Time{}, slog.LevelWarn, "no ctx", 0))
	if r, _ := host.nextLog(); r.Message != "no ctx" || r.Level != 4 || r.Time != nil {
		t.Errorf("got %+v", r)
	}
	host.noMore()
	plain.noMore()
	if fallback.String() != "" {
		t.Errorf("fallback got %q", fallback.String())
	}
}

func TestHostLogFallback(t *testing.T) {
	fallback := new(syncBuffer)
	h := NewHostLogHandler(&HostLogOptions{Fallback: slog.NewTextHandler(fallback, nil)})
	logger := slog.New(h).With("a", 1).WithGroup("g")
	srv := newLogServer(t, func(ctx context.Context) { logger.InfoContext(ctx, "no host", "b", 2) })
	// A method's context whose client takes no host calls: the fallback,
	// even though another client takes them.
	c, _ := serveHost(t, srv, map[string]any{"max_frame_size": 1 << 20})
	host, _ := serveHost(t, srv, map[string]any{"max_host_calls": 1})
	if err := c.call("Logs.Do", nil, nil); err != nil {
		t.Fatal(err)
	}
	if got := fallback.String(); !strings.Contains(got, `msg="no host" a=1 g.b=2`) {
		t.Errorf("fallback got %q", got)
	}
	c.noMore()
	host.noMore()

	// No connection at all.
	fallback2 := new(syncBuffer)
	slog.New(NewHostLogHandler(&HostLogOptions{Server: NewServer(), Level: slog.LevelDebug, Fallback: slog.NewTextHandler(fallback2, nil)})).Debug("alone")
	if got := fallback2.String(); got != "" {
		t.Errorf("the fallback's own level lets debug through: %q", got)
	}
	slog.New(NewHostLogHandler(&HostLogOptions{Server: NewServer(), Fallback: slog.NewTextHandler(fallback2, nil)})).Warn("alone")
	if got := fallback2.String(); !strings.Contains(got, "level=WARN msg=alone") {
		t.Errorf("fallback got %q", got)
	}
}

// TestHostLogDefaultFallback: standard error, with the logger's name.
func TestHostLogDefaultFallback(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stderr
	os.Stderr = w
	h := NewHostLogHandler(&HostLogOptions{Server: NewServer(), Logger: "db", Level: slog.LevelDebug})
	os.Stderr = saved
	slog.New(h).WithGroup("g").Debug("to stderr", "n", 1)
	w.Close()
	out, _ := io.ReadAll(r)
	if got := string(out); !strings.Contains(got, `level=DEBUG msg="to stderr" logger=db g.n=1`) {
		t.Errorf("stderr got %q", got)
	}
}

// TestHostLogQueueFull: records that find the writer's queue full go to the
// fallback, and logging never waits for the client.
func TestHostLogQueueFull(t *testing.T) {
	srv, _, _ := newHostServer(t)
	srv.MaxInflight = 1 // a short queue: 17 frames
	host, _ := serveHost(t, srv, map[string]any{"max_host_calls": 1})
	// The client's reader stops once its inbox is full; the writer then
	// blocks on the pipe, and its queue fills.
	var fellBack atomic.Int64
	counter := slog.NewTextHandler(io.Discard, nil)
	h := NewHostLogHandler(&HostLogOptions{Server: srv, Fallback: countingHandler{counter, &fellBack}})
	logger := slog.New(h)
	const n = 300
	big := strings.Repeat("x", 10<<10)
	for i := range n {
		logger.Info(big, "i", i)
	}
	if fellBack.Load() == 0 {
		t.Fatal("no record went to the fallback with the queue full")
	}
	var wg sync.WaitGroup
	wg.Add(1)
	received := 0
	go func() {
		defer wg.Done()
		for int64(received)+fellBack.Load() < n {
			host.nextLog()
			received++
		}
	}()
	wg.Wait()
	host.noMore()
	t.Logf("%d records sent, %d to the fallback", received, fellBack.Load())
}

type countingHandler struct {
	slog.Handler
	n *atomic.Int64
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	h.n.Add(1)
	return h.Handler.Handle(ctx, r)
}

func TestHostLogFrameLimit(t *testing.T) {
	srv, _, _ := newHostServer(t)
	c, _ := serveHost(t, srv, map[string]any{"max_host_calls": 1, "max_frame_size": 1024})
	logger := slog.New(NewHostLogHandler(&HostLogOptions{Server: srv, Logger: "db"}))

	logger.Info("fits", "blob", strings.Repeat("a", 900))
	if r, size := c.nextLog(); len(r.Attrs["blob"].(string)) != 900 || size > 1024 {
		t.Errorf("a record that fits: %d bytes, %+v", size, r.Attrs)
	}
	logger.Info("short", "blob", strings.Repeat("a", 2000))
	if r, size := c.nextLog(); r.Attrs != nil || r.Message != "short" || r.Logger != "db" || size > 1024 {
		t.Errorf("too large for its attrs: %d bytes, %+v", size, r)
	}
	long := strings.Repeat("é", 1000) // two bytes each: cut at a character boundary
	logger.Info(long, "blob", strings.Repeat("a", 2000))
	r, size := c.nextLog()
	if r.Attrs != nil || !strings.HasSuffix(r.Message, "é [truncated]") || !strings.HasPrefix(long, strings.TrimSuffix(r.Message, " [truncated]")) {
		t.Errorf("too large for its message: %+v", r)
	}
	if size > 1024 || size < 1000 {
		t.Errorf("the record is %d bytes, want it cut to just under the limit, 1024", size)
	}
	c.noMore()
}

// TestHostLogDeepNesting: attributes nested deeper than Python decodes are
// dropped, and the record still goes.
func TestHostLogDeepNesting(t *testing.T) {
	srv, _, _ := newHostServer(t)
	c, _ := serveHost(t, srv, map[string]any{"max_host_calls": 1})
	attr := slog.Int("leaf", 1)
	for range 1100 {
		attr = slog.Group("g", attr)
	}
	slog.New(NewHostLogHandler(&HostLogOptions{Server: srv})).Info("deep", attr)
	if r, _ := c.nextLog(); r.Message != "deep" || r.Attrs != nil {
		t.Errorf("got %q with attrs %v, want no attrs", r.Message, r.Attrs != nil)
	}
}

func TestConfig(t *testing.T) {
	srv, _, _ := newHostServer(t)
	c, _ := serveHost(t, srv, map[string]any{"max_host_calls": 1})
	stop := make(chan struct{})
	defer close(stop)
	config := map[string]any{"port": 8080, "db": map[string]any{"url": "sqlite://"}}
	c.answer(stop, func(m *message) (map[string]any, any) {
		key := decoded[string](t, m.params)
		if m.method != "trio_gotask.Config" {
			return map[string]any{"type": "not_found", "message": "no handler " + m.method}, nil
		}
		if v, ok := config[key]; ok {
			return nil, v
		}
		return map[string]any{"type": "not_found", "message": "no config key " + key}, nil
	})
	ctx := context.Background()
	var port int
	if err := srv.Config(ctx, "port", &port); err != nil || port != 8080 {
		t.Errorf("port: %d %v", port, err)
	}
	var db struct {
		URL string `msgpack:"url"`
	}
	if err := srv.Config(ctx, "db", &db); err != nil || db.URL != "sqlite://" {
		t.Errorf("db: %+v %v", db, err)
	}
	err := srv.Config(ctx, "nope", &port)
	var he *HostError
	if !errors.As(err, &he) || he.Type != "not_found" || he.Method != "trio_gotask.Config" {
		t.Errorf("a missing key: %#v, want a not_found HostError", err)
	}
	if !strings.Contains(err.Error(), `config key "nope"`) {
		t.Errorf("the error %q does not name the key", err)
	}
	var small int8
	if err := srv.Config(ctx, "port", &small); err == nil || !strings.Contains(err.Error(), `config key "port"`) || !strings.Contains(err.Error(), "int8") {
		t.Errorf("8080 into an int8: %v", err)
	}
	if err := NewServer().Config(ctx, "port", &port); !errors.Is(err, ErrNoHost) {
		t.Errorf("no client: %v, want ErrNoHost", err)
	}
}

// TestSidecarLogAndConfig: the example sidecar's Log, GetConfig and
// HostLatency.
func TestSidecarLogAndConfig(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t, true)
	c := startTestClient(t, sc.dial(), make(chan *message, 64))
	c.sendHello(map[string]any{"max_frame_size": DefaultMaxFrameSize, "max_host_calls": 8})
	if err := c.call("App.Log", map[string]any{"level": "warn", "message": "hi", "logger": "ex", "attrs": map[string]any{"rich": true, "n": 1}}, nil); err != nil {
		t.Fatal(err)
	}
	r, _ := c.nextLog()
	if r.Level != 4 || r.Message != "hi" || r.Logger != "ex" ||
		!sameValue(r.Attrs, map[string]any{"rich": true, "n": int64(1), "req": map[string]any{"id": int64(7)}, "err": "boom"}) {
		t.Errorf("got %+v", r)
	}
	if err := c.call("App.Log", map[string]any{"level": "loud", "message": "hi"}, nil); err == nil || !strings.Contains(err.Error(), "loud") {
		t.Errorf("an unknown level: %v", err)
	}
	if err := c.call("App.Log", "a line", nil); err != nil {
		t.Errorf("a string: %v", err)
	}

	stop := make(chan struct{})
	defer close(stop)
	c.answer(stop, func(m *message) (map[string]any, any) {
		switch m.method {
		case "trio_gotask.Config":
			if decoded[string](t, m.params) == "port" {
				return nil, 8080
			}
			return map[string]any{"type": "not_found", "message": "no such key"}, nil
		case "Py.Ident":
			return nil, decoded[any](t, m.params)
		}
		return map[string]any{"type": "not_found", "message": m.method}, nil
	})
	var port int
	if err := c.call("App.GetConfig", "port", &port); err != nil || port != 8080 {
		t.Errorf("GetConfig: %d %v", port, err)
	}
	if err := c.call("App.GetConfig", "nope", nil); err == nil || !strings.Contains(err.Error(), "not_found") {
		t.Errorf("GetConfig of a missing key: %v", err)
	}
	var lat map[string]int64
	if err := c.call("App.HostLatency", map[string]any{"method": "Py.Ident", "n": 20}, &lat); err != nil || lat["p50_ns"] <= 0 || lat["p99_ns"] < lat["p50_ns"] {
		t.Errorf("HostLatency: %v %v", lat, err)
	}
}

// BenchmarkHostLogEncode: the cost of turning a record with a few attributes
// into a $log frame, what Handle adds to the logging goroutine.
func BenchmarkHostLogEncode(b *testing.B) {
	h := NewHostLogHandler(&HostLogOptions{Logger: "db"}).WithAttrs([]slog.Attr{slog.String("svc", "x")}).(*HostLogHandler)
	r := slog.NewRecord(time.Now(), slog.LevelInfo, "query done", 0)
	r.AddAttrs(slog.Int("rows", 42), slog.Duration("took", 3*time.Millisecond), slog.Group("req", slog.Int("id", 7)), slog.Any("err", errors.New("boom")))
	b.ReportAllocs()
	for range b.N {
		e := getEncBuf()
		encodeLog(e, h.record(r), DefaultMaxFrameSize)
		putEncBuf(e)
	}
}
