package gotask

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Intercepted is the service the interceptor tests call.
type Intercepted struct {
	ran atomic.Int32 // calls that reached a method
}

type ctxKey struct{}

// Seen says what a method saw of its call.
type Seen struct {
	Value       any               // ctx.Value(ctxKey{})
	HasDeadline bool              // ctx has a deadline
	Metadata    map[string]string // MetadataFrom(ctx)
	IsNil       bool              // MetadataFrom(ctx) == nil
}

func (s *Intercepted) See(ctx context.Context, _ any, r *Seen) error {
	s.ran.Add(1)
	_, dl := ctx.Deadline()
	md := MetadataFrom(ctx)
	*r = Seen{Value: ctx.Value(ctxKey{}), HasDeadline: dl, Metadata: md, IsNil: md == nil}
	return nil
}

func (s *Intercepted) Panic(_ any, _ *any) error { s.ran.Add(1); panic("method boom") }

func (s *Intercepted) Fail(_ any, _ *any) error { s.ran.Add(1); return typedErr{} }

func (s *Intercepted) Int(n int, r *int) error { s.ran.Add(1); *r = n; return nil }

func (s *Intercepted) Count(n int, out *Stream[int]) error {
	s.ran.Add(1)
	for i := 0; i < n; i++ {
		if err := out.Send(i); err != nil {
			return err
		}
	}
	return nil
}

func newInterceptedServer(t *testing.T, ics ...Interceptor) (*Server, *Intercepted) {
	t.Helper()
	srv, _ := newTestServer(t, newSvc())
	svc := new(Intercepted)
	if err := srv.Register(svc); err != nil {
		t.Fatal(err)
	}
	srv.Interceptors = ics
	return srv, svc
}

// recorder is an interceptor that appends what it sees to a log.
type recorder struct {
	mu    sync.Mutex
	lines []string
	infos []CallInfo
	errs  []error
}

func (r *recorder) add(line string) {
	r.mu.Lock()
	r.lines = append(r.lines, line)
	r.mu.Unlock()
}

func (r *recorder) interceptor(name string) Interceptor {
	return func(ctx context.Context, info *CallInfo, next func(context.Context) error) error {
		r.add(name + ">")
		r.mu.Lock()
		r.infos = append(r.infos, *info)
		r.mu.Unlock()
		err := next(ctx)
		r.mu.Lock()
		r.lines = append(r.lines, "<"+name)
		r.errs = append(r.errs, err)
		r.mu.Unlock()
		return err
	}
}

func (r *recorder) snapshot() ([]string, []CallInfo, []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.lines...), append([]CallInfo(nil), r.infos...), append([]error(nil), r.errs...)
}

func TestInterceptorOrder(t *testing.T) {
	var rec recorder
	method := func(ctx context.Context, info *CallInfo, next func(context.Context) error) error {
		rec.add("method")
		return next(ctx)
	}
	srv, svc := newInterceptedServer(t, rec.interceptor("a"), rec.interceptor("b"), method)
	c, _ := serve(t, srv)
	var n int
	if err := c.call("Intercepted.Int", 7, &n); err != nil || n != 7 {
		t.Fatalf("Intercepted.Int: %v %v", n, err)
	}
	lines, infos, _ := rec.snapshot()
	if want := []string{"a>", "b>", "method", "<b", "<a"}; !reflect.DeepEqual(lines, want) {
		t.Errorf("order %v, want %v", lines, want)
	}
	want := CallInfo{Method: "Intercepted.Int"}
	if len(infos) != 2 || !reflect.DeepEqual(infos[0], want) || !reflect.DeepEqual(infos[1], want) {
		t.Errorf("infos %+v, want %+v twice", infos, want)
	}
	if svc.ran.Load() != 1 {
		t.Errorf("the method ran %d times", svc.ran.Load())
	}
}

func TestInterceptorChangesContext(t *testing.T) {
	srv, _ := newInterceptedServer(t, func(ctx context.Context, _ *CallInfo, next func(context.Context) error) error {
		ctx, cancel := context.WithTimeout(context.WithValue(ctx, ctxKey{}, "from the interceptor"), time.Hour)
		defer cancel()
		return next(ctx)
	})
	c, _ := serve(t, srv)
	var seen Seen
	if err := c.call("Intercepted.See", nil, &seen); err != nil {
		t.Fatal(err)
	}
	if seen.Value != "from the interceptor" || !seen.HasDeadline {
		t.Errorf("the method saw %+v", seen)
	}
}

func TestInterceptorSeesMetadata(t *testing.T) {
	var rec recorder
	srv, _ := newInterceptedServer(t, rec.interceptor("a"))
	c, _ := serve(t, srv)
	tp := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	md := map[any]any{"traceparent": tp, "tenant": "acme", 1: "int key", "n": 2, "nil": nil}
	for _, tc := range []struct {
		name string
		meta map[string]any
		want Metadata
	}{
		{"with a timeout", map[string]any{"timeout": 5.0, "metadata": md}, Metadata{"traceparent": tp, "tenant": "acme"}},
		{"alone", map[string]any{"metadata": map[string]string{"Key": "v"}}, Metadata{"Key": "v"}},
		{"none", nil, nil},
		{"not a map", map[string]any{"metadata": "tenant=acme"}, nil},
		{"empty", map[string]any{"metadata": map[string]string{}}, nil},
		{"no string entries", map[string]any{"metadata": map[any]any{1: "x", "y": 2}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var seen Seen
			if err := c.callMeta("Intercepted.See", nil, tc.meta, &seen); err != nil {
				t.Fatal(err)
			}
			if seen.IsNil != (tc.want == nil) || !reflect.DeepEqual(Metadata(seen.Metadata), tc.want) && tc.want != nil {
				t.Errorf("MetadataFrom: %#v (nil: %v), want %#v", seen.Metadata, seen.IsNil, tc.want)
			}
			_, infos, _ := rec.snapshot()
			if got := infos[len(infos)-1].Metadata; !reflect.DeepEqual(got, tc.want) {
				t.Errorf("CallInfo.Metadata %#v, want %#v", got, tc.want)
			}
		})
	}
}

// TestMetadataWithoutInterceptors: a method reads the metadata with no
// interceptor installed.
func TestMetadataWithoutInterceptors(t *testing.T) {
	srv, _ := newInterceptedServer(t)
	c, _ := serve(t, srv)
	var seen Seen
	if err := c.callMeta("Intercepted.See", nil, map[string]any{"metadata": map[string]string{"tenant": "acme"}}, &seen); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(seen.Metadata, map[string]string{"tenant": "acme"}) {
		t.Errorf("MetadataFrom: %#v", seen.Metadata)
	}
	if md := MetadataFrom(context.Background()); md != nil {
		t.Errorf("MetadataFrom outside a call: %#v", md)
	}
}

type unauthenticated struct{}

func (unauthenticated) Error() string     { return "no valid authorization" }
func (unauthenticated) ErrorType() string { return "unauthenticated" }

func TestInterceptorShortCircuits(t *testing.T) {
	srv, svc := newInterceptedServer(t, func(ctx context.Context, info *CallInfo, next func(context.Context) error) error {
		switch info.Metadata["auth"] {
		case "ok":
			return next(ctx)
		case "quiet":
			return nil
		}
		return unauthenticated{}
	})
	c, _ := serve(t, srv)
	if err := c.call("Intercepted.Int", 1, nil); errType(err) != "unauthenticated" || !strings.Contains(err.Error(), "no valid authorization") {
		t.Errorf("without auth: %v", err)
	}
	reply := new(int) // an empty reply makes it nil
	if err := c.callMeta("Intercepted.Int", 1, map[string]any{"metadata": map[string]string{"auth": "quiet"}}, &reply); err != nil || reply != nil {
		t.Errorf("an interceptor that returns nil without next: %v %v, want an empty reply", reply, err)
	}
	if svc.ran.Load() != 0 {
		t.Fatalf("the method ran %d times", svc.ran.Load())
	}
	var n int
	if err := c.callMeta("Intercepted.Int", 1, map[string]any{"metadata": map[string]string{"auth": "ok"}}, &n); err != nil || n != 1 {
		t.Errorf("with auth: %v %v", n, err)
	}
}

// TestInterceptorErrors: the errors next returns and those an interceptor
// returns reach the client as a method's do.
func TestInterceptorErrors(t *testing.T) {
	var rec recorder
	srv, _ := newInterceptedServer(t, rec.interceptor("a"), func(ctx context.Context, info *CallInfo, next func(context.Context) error) error {
		err := next(ctx)
		if info.Method == "Intercepted.Fail" {
			return fmt.Errorf("wrapped: %w", err)
		}
		if info.Method == "Intercepted.Panic" {
			return fmt.Errorf("seen: %w", err)
		}
		return err
	})
	c, _ := serve(t, srv)
	if err := c.call("Intercepted.Fail", nil, nil); errType(err) != "teapot" || !strings.Contains(err.Error(), "wrapped: I'm a teapot") {
		t.Errorf("a method's error wrapped: %v", err)
	}
	err := c.call("Intercepted.Int", "not an int", nil)
	if errType(err) != "bad_params" {
		t.Errorf("bad params: %v", err)
	}
	err = c.call("Intercepted.Panic", nil, nil)
	var re *remoteError
	if !errors.As(err, &re) || re.Type != "panic" || re.Message != "method boom" || !strings.Contains(re.Stack, "(*Intercepted).Panic") {
		t.Fatalf("a method's panic: %v %+v", err, re)
	}
	if strings.Contains(re.Stack, "reflect.") || strings.Contains(re.Stack, "compose") {
		t.Errorf("stack %q", re.Stack)
	}
	_, _, errs := rec.snapshot()
	types := make([]string, len(errs))
	for i, err := range errs {
		var typed interface{ ErrorType() string }
		if errors.As(err, &typed) {
			types[i] = typed.ErrorType()
		}
	}
	if want := []string{"teapot", "bad_params", "panic"}; !reflect.DeepEqual(types, want) {
		t.Errorf("the interceptor saw errors of types %q, want %q (%v)", types, want, errs)
	}
}

// panicky is an interceptor that panics when the metadata asks it to,
// before or after next.
func panicky(ctx context.Context, info *CallInfo, next func(context.Context) error) error {
	if info.Metadata["panic"] == "before" {
		panic("interceptor boom")
	}
	err := next(ctx)
	if info.Metadata["panic"] == "after" {
		panic(fmt.Sprintf("after %v", err))
	}
	return err
}

func TestInterceptorPanics(t *testing.T) {
	var rec recorder
	srv, svc := newInterceptedServer(t, rec.interceptor("outer"), panicky, rec.interceptor("inner"))
	c, _ := serve(t, srv)
	for _, tc := range []struct {
		when, message string
		ran           int32
	}{
		{"before", "interceptor boom", 0},
		{"after", "after <nil>", 1},
	} {
		err := c.callMeta("Intercepted.Int", 3, map[string]any{"metadata": map[string]string{"panic": tc.when}}, nil)
		var re *remoteError
		if !errors.As(err, &re) || re.Type != "panic" || re.Message != tc.message {
			t.Fatalf("panic %s next: %v", tc.when, err)
		}
		first, _, _ := strings.Cut(re.Stack, "\n")
		if !strings.HasSuffix(first, ".panicky") {
			t.Errorf("panic %s next: stack %q, want it to start at panicky", tc.when, re.Stack)
		}
		// The interceptors' frames, without those of the chain's machinery.
		if !strings.Contains(re.Stack, "recorder).interceptor") {
			t.Errorf("panic %s next: stack %q, want the outer interceptor's frame", tc.when, re.Stack)
		}
		for _, not := range []string{"compose", "runChain", "invoke"} {
			if strings.Contains(re.Stack, not) {
				t.Errorf("panic %s next: stack %q names %s", tc.when, re.Stack, not)
			}
		}
		if n := svc.ran.Swap(0); n != tc.ran {
			t.Errorf("panic %s next: the method ran %d times", tc.when, n)
		}
	}
	// The sidecar goes on serving.
	var n int
	if err := c.call("Intercepted.Int", 4, &n); err != nil || n != 4 {
		t.Fatalf("after the panics: %v %v", n, err)
	}
}

func TestInterceptorStream(t *testing.T) {
	var rec recorder
	srv, _ := newInterceptedServer(t, rec.interceptor("a"), func(ctx context.Context, info *CallInfo, next func(context.Context) error) error {
		if info.Metadata["cancel"] == "yes" {
			// Send ends with the context given to next.
			ctx, cancel := context.WithCancel(ctx)
			cancel()
			return next(ctx)
		}
		return next(ctx)
	})
	c := serveStreams(t, srv)
	items, werr := c.collect(c.open("Intercepted.Count", 3, map[string]any{"stream": 1 << 20}))
	if werr != nil || !reflect.DeepEqual(items, []any{int64(0), int64(1), int64(2)}) {
		t.Fatalf("stream: %v %v", items, werr)
	}
	_, infos, errs := rec.snapshot()
	if want := (CallInfo{Method: "Intercepted.Count", Stream: true}); len(infos) != 1 || !reflect.DeepEqual(infos[0], want) || errs[0] != nil {
		t.Errorf("infos %+v (errors %v), want %+v", infos, errs, want)
	}
	items, werr = c.collect(c.open("Intercepted.Count", 3, map[string]any{"stream": 1 << 20, "metadata": map[string]string{"cancel": "yes"}}))
	if werr == nil || werr.Type != "cancelled" || len(items) != 0 {
		t.Fatalf("stream with a cancelled context: %v %+v", items, werr)
	}
}

// TestInterceptorsComposedOnce: the interceptors are read when the server
// serves its first connection.
func TestInterceptorsComposedOnce(t *testing.T) {
	var rec recorder
	srv, _ := newInterceptedServer(t, rec.interceptor("a"))
	c, _ := serve(t, srv)
	if err := c.call("Intercepted.Int", 1, nil); err != nil {
		t.Fatal(err)
	}
	srv.Interceptors = append(srv.Interceptors, rec.interceptor("late"))
	c2, _ := serve(t, srv)
	if err := c2.call("Intercepted.Int", 1, nil); err != nil {
		t.Fatal(err)
	}
	if lines, _, _ := rec.snapshot(); !reflect.DeepEqual(lines, []string{"a>", "<a", "a>", "<a"}) {
		t.Errorf("lines %v", lines)
	}
}

func TestUse(t *testing.T) {
	saved, savedHost := DefaultServer.Interceptors, DefaultServer.HostInterceptors
	t.Cleanup(func() { DefaultServer.Interceptors, DefaultServer.HostInterceptors = saved, savedHost })
	DefaultServer.Interceptors, DefaultServer.HostInterceptors = nil, nil
	var rec recorder
	Use(rec.interceptor("a"), rec.interceptor("b"))
	Use(rec.interceptor("c"))
	UseHost(func(ctx context.Context, _ *HostCallInfo, next func(context.Context) error) error { return next(ctx) })
	if len(DefaultServer.Interceptors) != 3 || len(DefaultServer.HostInterceptors) != 1 {
		t.Fatalf("%d interceptors, %d host interceptors", len(DefaultServer.Interceptors), len(DefaultServer.HostInterceptors))
	}
}

// hostRecorder is a host interceptor that sets metadata and records the
// errors of the host calls.
type hostRecorder struct {
	mu    sync.Mutex
	infos []HostCallInfo
	errs  []error
}

func (r *hostRecorder) interceptor(ctx context.Context, info *HostCallInfo, next func(context.Context) error) error {
	if info.Metadata == nil {
		panic("HostCallInfo.Metadata is nil")
	}
	info.Metadata["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	if tenant, ok := MetadataFrom(ctx)["tenant"]; ok {
		info.Metadata["tenant"] = tenant // passed on from the call
	}
	err := next(ctx)
	r.mu.Lock()
	r.infos = append(r.infos, *info)
	r.errs = append(r.errs, err)
	r.mu.Unlock()
	return err
}

func (r *hostRecorder) snapshot() ([]HostCallInfo, []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]HostCallInfo(nil), r.infos...), append([]error(nil), r.errs...)
}

func TestHostInterceptorSendsMetadata(t *testing.T) {
	srv, _, _ := newHostServer(t)
	var rec hostRecorder
	var order []string
	srv.HostInterceptors = []HostInterceptor{
		func(ctx context.Context, info *HostCallInfo, next func(context.Context) error) error {
			order = append(order, "outer")
			return next(ctx)
		},
		func(ctx context.Context, info *HostCallInfo, next func(context.Context) error) error {
			order = append(order, "inner")
			return rec.interceptor(ctx, info, next)
		},
	}
	c, _ := serveHost(t, srv, map[string]any{"max_host_calls": 4})
	tp := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

	// Without a deadline: meta is {"metadata": {...}}, the keys sorted.
	_, ch := c.start("Host.Call", map[string]any{"Method": "Py.Upper", "Arg": "abc"}, map[string]any{"metadata": map[string]string{"tenant": "acme"}})
	m := c.next()
	wantRequest(t, m, "Py.Upper")
	if got := parseMetadata(m.metadata); !reflect.DeepEqual(got, Metadata{"traceparent": tp, "tenant": "acme"}) {
		t.Errorf("metadata %#v", got)
	}
	wantMeta := append([]byte{0x81, 0xa8}, "metadata\x82\xa6tenant\xa4acme\xabtraceparent\xd9\x37"+tp...)
	if !bytes.Equal(m.meta, wantMeta) {
		t.Errorf("meta %x, want %x", m.meta, wantMeta)
	}
	c.respond(m.msgid, nil, "ABC")
	var s string
	if err := c.wait(ch, &s); err != nil || s != "ABC" {
		t.Fatalf("Host.Call: %q %v", s, err)
	}

	// With a deadline: the timeout comes first; and the handler's error.
	_, ch = c.start("Host.Call", map[string]any{"Method": "Py.Fail", "Arg": nil}, map[string]any{"timeout": 30.0})
	m = c.next()
	wantRequest(t, m, "Py.Fail")
	if !m.hasTimeout || !reflect.DeepEqual(parseMetadata(m.metadata), Metadata{"traceparent": tp}) {
		t.Errorf("meta %x", m.meta)
	}
	if k := bytes.Index(m.meta, []byte("timeout")); k < 0 || k > bytes.Index(m.meta, []byte("metadata")) {
		t.Errorf("meta %x: want timeout before metadata", m.meta)
	}
	c.respond(m.msgid, map[string]any{"type": "error", "message": "ValueError: bad"}, nil)
	if err := c.wait(ch, nil); err == nil || !strings.Contains(err.Error(), "ValueError: bad") {
		t.Fatalf("Host.Call: %v", err)
	}

	infos, errs := rec.snapshot()
	if len(infos) != 2 || infos[0].Method != "Py.Upper" || infos[1].Method != "Py.Fail" {
		t.Fatalf("infos %+v", infos)
	}
	var he *HostError
	if errs[0] != nil || !errors.As(errs[1], &he) || he.Type != "error" || he.Message != "ValueError: bad" {
		t.Errorf("the interceptor saw %v", errs)
	}
	if !reflect.DeepEqual(order, []string{"outer", "inner", "outer", "inner"}) {
		t.Errorf("order %v", order)
	}
}

// TestHostInterceptorWithoutConnection: the host interceptors run, and see
// ErrNoHost, when no connection takes host calls.
func TestHostInterceptorWithoutConnection(t *testing.T) {
	srv := NewServer()
	var rec hostRecorder
	srv.HostInterceptors = []HostInterceptor{rec.interceptor}
	if err := srv.CallHost(context.Background(), "Py.Upper", "x", nil); !errors.Is(err, ErrNoHost) {
		t.Fatalf("CallHost: %v", err)
	}
	if _, errs := rec.snapshot(); len(errs) != 1 || !errors.Is(errs[0], ErrNoHost) {
		t.Errorf("the interceptor saw %v", errs)
	}
}

// TestEncodeRequestMetadata: no metadata, nil or empty, encodes as before.
func TestEncodeRequestMetadata(t *testing.T) {
	for _, timeout := range []bool{false, true} {
		var frames [][]byte
		for _, md := range []Metadata{nil, {}} {
			e := getEncBuf()
			if _, _, err := encodeRequest(e, 5, "Py.Upper", "x", 1.5, timeout, md); err != nil {
				t.Fatal(err)
			}
			frames = append(frames, bytes.Clone(e.buf.Bytes()))
			putEncBuf(e)
		}
		if !bytes.Equal(frames[0], frames[1]) {
			t.Errorf("timeout %v: nil metadata %x, empty %x", timeout, frames[0], frames[1])
		}
	}
}

// TestParseMetadataIgnoresWhatIsNotAMap: meta's "metadata" of another type
// is ignored, as an unknown key is, and the rest of meta is read.
func TestParseMetadataIgnoresWhatIsNotAMap(t *testing.T) {
	for _, v := range []any{"x", 1, nil, []any{"a", "b"}, []byte("ab")} {
		payload, err := marshalCompact([]any{0, 1, "A.B", nil, map[string]any{"metadata": v, "timeout": 2.0}})
		if err != nil {
			t.Fatal(err)
		}
		m, err := parseMessage(payload)
		if err != nil || m.metadata != nil || !m.hasTimeout {
			t.Errorf("metadata %#v: %v, %x, timeout %v", v, err, m.metadata, m.hasTimeout)
		}
	}
}

// BenchmarkCall measures a small call through interceptor chains: none (the
// chain is skipped), one and three that only call next, and none with
// metadata in the request.
func BenchmarkCall(b *testing.B) {
	pass := func(ctx context.Context, _ *CallInfo, next func(context.Context) error) error { return next(ctx) }
	md := map[string]any{"metadata": map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}
	for _, bc := range []struct {
		name string
		ics  []Interceptor
		meta map[string]any
	}{
		{"none", nil, nil},
		{"empty", []Interceptor{}, nil},
		{"pass1", []Interceptor{pass}, nil},
		{"pass3", []Interceptor{pass, pass, pass}, nil},
		{"none+metadata", nil, md},
		{"pass1+metadata", []Interceptor{pass}, md},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := benchClient(b, func(s *Server) { s.Interceptors = bc.ics })
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := c.callMeta("Bench.Echo", 1, bc.meta, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkInvoke measures what BenchmarkCall's chains cost without the
// round trip: a call's dispatch (invoke) alone.
func BenchmarkInvoke(b *testing.B) {
	pass := func(ctx context.Context, _ *CallInfo, next func(context.Context) error) error { return next(ctx) }
	for _, bc := range []struct {
		name string
		ics  []Interceptor
	}{
		{"none", nil},
		{"pass1", []Interceptor{pass}},
		{"pass3", []Interceptor{pass, pass, pass}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			srv := NewServer()
			if err := srv.Register(Bench{}); err != nil {
				b.Fatal(err)
			}
			srv.Interceptors = bc.ics
			srv.composeOnce.Do(srv.composeChains)
			svc, mt, err := srv.lookup("Bench.Echo")
			if err != nil {
				b.Fatal(err)
			}
			m := &message{method: "Bench.Echo", params: []byte{0x01}}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, werr, _ := srv.invoke(ctx, svc, mt, m, nil, nil); werr != nil {
					b.Fatal(werr)
				}
			}
		})
	}
}
