package gotask

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"time"
)

// lookup finds the method a request names, "Service.Method", or says why
// there is none.
func (s *Server) lookup(name string) (*service, *methodType, error) {
	dot := strings.LastIndexByte(name, '.')
	if dot < 0 {
		return nil, nil, fmt.Errorf("method name %q is not of the form Service.Method", name)
	}
	v, ok := s.services.Load(name[:dot])
	if !ok {
		return nil, nil, fmt.Errorf("no service %q (method %q)", name[:dot], name)
	}
	svc := v.(*service)
	method := name[dot+1:]
	mt := svc.method[method]
	if mt != nil {
		return svc, mt, nil
	}
	if why, ok := svc.skipped[method]; ok {
		return nil, nil, fmt.Errorf("%s is not callable: Register skipped it, since it %s", name, why)
	}
	for other := range svc.method {
		if strings.EqualFold(other, method) {
			return nil, nil, fmt.Errorf("service %q has no method %q; did you mean %q? (names are case-sensitive)", svc.name, method, svc.name+"."+other)
		}
	}
	return nil, nil, fmt.Errorf("service %q has no method %q", svc.name, method)
}

// callContext is the context of a call: the connection's, with the request's
// deadline when its meta has a timeout.
func callContext(parent context.Context, m *message) (context.Context, context.CancelFunc) {
	if m.hasTimeout {
		return context.WithTimeout(parent, timeoutDuration(m.timeout))
	}
	return context.WithCancel(parent)
}

// timeoutDuration converts meta.timeout seconds to a duration, saturating.
func timeoutDuration(sec float64) time.Duration {
	if sec <= 0 {
		return 0
	}
	const maxSec = float64(1<<63-1) / float64(time.Second)
	if sec >= maxSec/2 { // far enough in the future to be no deadline at all
		return time.Duration(1<<63 - 1)
	}
	return time.Duration(sec * float64(time.Second))
}

// invoke runs a call, its method inside the server's interceptors, and
// returns its reply value or the wire error to send instead. claimed is the
// runtime's type that the call's error named and was refused (see
// callError), or "". A stream method (stream not nil) sends its items
// through stream, which is closed when the call returns, and its result is
// nil.
func (s *Server) invoke(ctx context.Context, svc *service, mt *methodType, m *message, md Metadata, stream *outStream) (result any, werr *wireError, claimed string) {
	if stream != nil {
		defer stream.close()
	}
	var err error
	if s.chain == nil {
		result, err = callMethod(ctx, svc, mt, m.params, stream)
	} else {
		cc := &chainCall{info: CallInfo{Method: m.method, Stream: stream != nil, Metadata: md}, svc: svc, mt: mt, params: m.params, stream: stream}
		result, err = runChain(s.chain, ctx, cc)
	}
	if err == nil {
		return result, nil, ""
	}
	var f *callFault
	if errors.As(err, &f) {
		return nil, &f.werr, ""
	}
	werr, claimed = callError(err)
	return nil, werr, claimed
}

// callMethod decodes params and calls the method: its reply value (nil for
// a stream method), or its error, or a *callFault when the params do not
// fit or it panicked.
func callMethod(ctx context.Context, svc *service, mt *methodType, params []byte, stream *outStream) (result any, err error) {
	var argv reflect.Value
	var target any
	base := mt.argType
	if base.Kind() == reflect.Pointer {
		argv = reflect.New(base.Elem())
		target = argv.Interface()
	} else {
		p := reflect.New(base)
		target = p.Interface()
		argv = p.Elem()
	}
	if err := decodeValue(params, target); err != nil {
		return nil, &callFault{wireError{Type: "bad_params", Message: err.Error()}}
	}
	replyv := reflect.New(mt.replyType.Elem())
	if stream != nil {
		replyv.Interface().(streamer).bindStream(stream)
	} else {
		// As net/rpc does, a map or slice reply starts empty rather than nil,
		// so that (*reply)[k] = v works.
		switch rt := mt.replyType.Elem(); rt.Kind() {
		case reflect.Map:
			replyv.Elem().Set(reflect.MakeMap(rt))
		case reflect.Slice:
			replyv.Elem().Set(reflect.MakeSlice(rt, 0, 0))
		}
	}

	defer func() {
		if r := recover(); r != nil {
			result, err = nil, &callFault{wireError{Type: "panic", Message: fmt.Sprint(r), Stack: panicStack()}}
		}
	}()
	var in []reflect.Value
	if mt.withCtx {
		in = []reflect.Value{svc.rcvr, reflect.ValueOf(ctx), argv, replyv}
	} else {
		in = []reflect.Value{svc.rcvr, argv, replyv}
	}
	out := mt.method.Func.Call(in)
	if e, _ := out[0].Interface().(error); e != nil {
		return nil, e
	}
	if stream != nil {
		return nil, nil
	}
	return replyv.Elem().Interface(), nil
}

// panicStack returns a few frames of the panicking goroutine, starting at the
// function that panicked and stopping before reflect's call machinery (a
// method's panic) or the interceptor chain's (an interceptor's), whose own
// frames it leaves out.
func panicStack() string {
	pcs := make([]uintptr, 64)
	n := runtime.Callers(3, pcs)
	frames := runtime.CallersFrames(pcs[:n])
	var b strings.Builder
	started, count := false, 0
	for {
		f, more := frames.Next()
		skip, stop := chainFrame(f.Function)
		switch {
		case !started:
			started = f.Function == "runtime.gopanic"
		case stop, strings.HasPrefix(f.Function, "reflect."):
			more = false
		case skip, strings.HasPrefix(f.Function, "runtime."):
		default:
			fmt.Fprintf(&b, "%s\n\t%s:%d\n", f.Function, f.File, f.Line)
			count++
		}
		if !more || count == 5 {
			break
		}
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// runtimeTypes are the error types only the runtime sends, each with what it
// tells the client (protocol.md section 2): a method's error cannot claim
// them. The client acts on some (shutting_down and busy make it send the call
// elsewhere, since the sidecar did not run it), and the others too say what
// the method cannot truthfully say about its own call. cancelled and
// deadline_exceeded are not among them: a method reports them by returning
// its context's error, and they mean the same whoever says them.
var runtimeTypes = map[string]string{
	"shutting_down":   "the sidecar did not run the call, and the client may send it to another",
	"busy":            "the sidecar did not run the call, and the client may send it to another",
	"not_found":       "no method of that name is registered",
	"bad_params":      "the argument does not fit the method, which did not run",
	"panic":           "the method panicked",
	"bad_reply":       "the method's reply cannot be carried",
	"too_large":       "the method's reply is larger than the client accepts",
	"stream_mismatch": "the request and the method disagree on whether it is a stream, and the method did not run",
}

// callError is the wire error for an error a method returned: of the type of
// the *ItemError it wraps (made by Send, so the runtime's), else of the type
// its ErrorType() names, else "cancelled" or "deadline_exceeded" when it
// wraps a context's error, else "error". A type in runtimeTypes is not taken
// from ErrorType(): the error is sent as if it named none, and claimed
// returns that type.
func callError(err error) (werr *wireError, claimed string) {
	var ie *ItemError
	if errors.As(err, &ie) && ie.typ != "" {
		return &wireError{Type: ie.typ, Message: err.Error()}, ""
	}
	var typed interface{ ErrorType() string }
	if errors.As(err, &typed) {
		if t := typed.ErrorType(); t != "" {
			if _, reserved := runtimeTypes[t]; !reserved {
				return &wireError{Type: t, Message: err.Error()}, ""
			}
			claimed = t
		}
	}
	switch {
	case errors.Is(err, context.Canceled):
		return &wireError{Type: "cancelled", Message: err.Error()}, claimed
	case errors.Is(err, context.DeadlineExceeded):
		return &wireError{Type: "deadline_exceeded", Message: err.Error()}, claimed
	}
	return &wireError{Type: "error", Message: err.Error()}, claimed
}

// methodClaim is a method and the runtime's type its error claimed.
type methodClaim struct{ method, typ string }

// refusedClaim logs, once per method and type, that the error of method
// claimed typ, a type only the runtime sends, and what was sent instead. The
// methods are those registered, so the lines are bounded.
func (s *Server) refusedClaim(method, typ string, sent *wireError) {
	if _, seen := s.claims.LoadOrStore(methodClaim{method, typ}, struct{}{}); seen {
		return
	}
	s.logf("%s returned an error whose ErrorType() is %q, a type only the runtime sends (it tells the client that %s); it was sent as %q. Give the error a type of your own (logged once for this method and type)",
		method, typ, runtimeTypes[typ], sent.Type)
}
