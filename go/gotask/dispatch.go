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
	mt := svc.method[name[dot+1:]]
	if mt == nil {
		return nil, nil, fmt.Errorf("service %q has no method %q", svc.name, name[dot+1:])
	}
	return svc, mt, nil
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

// invoke decodes the params, calls the method and returns its reply value or
// the wire error to send instead.
func invoke(ctx context.Context, svc *service, mt *methodType, params []byte) (result any, werr *wireError) {
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
		return nil, &wireError{Type: "bad_params", Message: err.Error()}
	}
	replyv := reflect.New(mt.replyType.Elem())
	// As net/rpc does, a map or slice reply starts empty rather than nil, so
	// that (*reply)[k] = v works.
	switch rt := mt.replyType.Elem(); rt.Kind() {
	case reflect.Map:
		replyv.Elem().Set(reflect.MakeMap(rt))
	case reflect.Slice:
		replyv.Elem().Set(reflect.MakeSlice(rt, 0, 0))
	}

	defer func() {
		if r := recover(); r != nil {
			result, werr = nil, &wireError{Type: "panic", Message: fmt.Sprint(r), Stack: panicStack()}
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
		return nil, callError(e)
	}
	return replyv.Elem().Interface(), nil
}

// panicStack returns a few frames of the panicking goroutine, starting at the
// function that panicked and stopping before reflect's call machinery.
func panicStack() string {
	pcs := make([]uintptr, 64)
	n := runtime.Callers(3, pcs)
	frames := runtime.CallersFrames(pcs[:n])
	var b strings.Builder
	started, count := false, 0
	for {
		f, more := frames.Next()
		switch {
		case !started:
			started = f.Function == "runtime.gopanic"
		case strings.HasPrefix(f.Function, "reflect."):
			more = false
		case strings.HasPrefix(f.Function, "runtime."):
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

// callError is the wire error for an error a handler returned.
func callError(err error) *wireError {
	var typed interface{ ErrorType() string }
	switch {
	case errors.As(err, &typed) && typed.ErrorType() != "":
		return &wireError{Type: typed.ErrorType(), Message: err.Error()}
	case errors.Is(err, context.Canceled):
		return &wireError{Type: "cancelled", Message: err.Error()}
	case errors.Is(err, context.DeadlineExceeded):
		return &wireError{Type: "deadline_exceeded", Message: err.Error()}
	}
	return &wireError{Type: "error", Message: err.Error()}
}
