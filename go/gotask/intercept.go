package gotask

// This file holds the application metadata of calls and the interceptors
// that wrap calls and host calls (protocol.md section 2, Metadata).

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/trio-gotask/trio-gotask/go/gotask/internal/scan"
)

// Metadata is the application metadata of a call: string keys to string
// values, sent beside the argument like gRPC metadata or HTTP headers. Keys
// are case-sensitive. W3C trace context travels in the entries "traceparent",
// "tracestate" and "baggage".
type Metadata map[string]string

// metadataKey is the context key of a call's Metadata.
type metadataKey struct{}

// MetadataFrom returns the metadata of the call ctx belongs to (the context a
// method or an Interceptor received, or one derived from it); nil when the
// call carried none, and outside any call. Handlers must not modify it.
//
// The metadata a host call sends is not in its ctx: a HostInterceptor sets it
// in HostCallInfo.Metadata, and may copy entries of MetadataFrom(ctx) there
// to pass them on.
func MetadataFrom(ctx context.Context) Metadata {
	md, _ := ctx.Value(metadataKey{}).(Metadata)
	return md
}

// CallInfo describes a call to an Interceptor.
type CallInfo struct {
	Method   string   // "Service.Method"
	Stream   bool     // a stream method (gotask.Stream[T])
	Metadata Metadata // the request's metadata; nil when none. Read-only.
}

// Interceptor wraps every call a Server runs: it calls next to run the method
// (or the rest of the chain) and returns the call's error. It may change ctx
// (values, deadlines) before calling next: the method receives the ctx given
// to next, and a stream's Send ends with it.
//
// The error next returns is the method's own, or, when the argument does not
// fit the method or the method panicked, an error whose ErrorType() method
// returns "bad_params" or "panic". What the interceptor returns is the call's
// error, sent to the client as a method's error is (see "Errors,
// cancellation and deadlines" in the package documentation); an error that
// wraps one of next's "bad_params" or "panic" errors is sent as that. An
// interceptor that returns without calling next answers the call with its
// error, or, when it returns nil, with an empty reply (None); so does one
// that calls next and then returns nil although next failed. A panic in an
// interceptor is the call's "panic" error, as a method's is.
//
// next runs the method in the goroutine that calls it, and should be called
// at most once.
type Interceptor func(ctx context.Context, info *CallInfo, next func(ctx context.Context) error) error

// HostCallInfo describes a host call (CallHost) to a HostInterceptor.
type HostCallInfo struct {
	Method   string   // the method passed to CallHost
	Metadata Metadata // sent with the request; an interceptor may set entries (it is never nil)
}

// HostInterceptor wraps every host call made through a Server (CallHost,
// Server.CallHost, Config): next sends the request and waits for its reply,
// and returns CallHost's error. It may change ctx before calling next (a
// deadline of the ctx given to next becomes the handler's) and set entries of
// info.Metadata, which the request carries. Host interceptors run in the
// goroutine that called CallHost, before a connection is chosen; a panic in
// one is not recovered, since it is the caller's own code.
type HostInterceptor func(ctx context.Context, info *HostCallInfo, next func(ctx context.Context) error) error

// Use adds interceptors to DefaultServer's Interceptors, inside those it has:
// call it before Run.
func Use(interceptors ...Interceptor) {
	DefaultServer.Interceptors = append(DefaultServer.Interceptors, interceptors...)
}

// UseHost adds host interceptors to DefaultServer's HostInterceptors, inside
// those it has: call it before Run.
func UseHost(interceptors ...HostInterceptor) {
	DefaultServer.HostInterceptors = append(DefaultServer.HostInterceptors, interceptors...)
}

// composeChains reads Interceptors and HostInterceptors into the chains
// calls run through; it runs once, when the server serves its first
// connection or makes its first host call.
func (s *Server) composeChains() {
	s.chain = compose(s.Interceptors)
	s.hostChain = compose(s.HostInterceptors)
}

// compose returns one interceptor that runs ics, the first outermost, or nil
// when there is none.
func compose[T any, F ~func(context.Context, *T, func(context.Context) error) error](ics []F) F {
	if len(ics) == 0 {
		return nil
	}
	ics = slices.Clone(ics)
	run := ics[len(ics)-1]
	for i := len(ics) - 2; i >= 0; i-- {
		outer, inner := ics[i], run
		run = func(ctx context.Context, info *T, final func(context.Context) error) error {
			return outer(ctx, info, func(ctx context.Context) error { return inner(ctx, info, final) })
		}
	}
	return run
}

// runChain runs a call's method through chain, recovering a panic in an
// interceptor as the call's "panic" error.
func runChain(chain Interceptor, ctx context.Context, cc *chainCall) (result any, err error) {
	defer func() {
		if r := recover(); r != nil {
			result, err = nil, &callFault{wireError{Type: "panic", Message: fmt.Sprint(r), Stack: panicStack()}}
		}
	}()
	if err = chain(ctx, &cc.info, cc.call); err != nil {
		return nil, err
	}
	return cc.result, nil
}

// chainCall is a call run through the interceptors, in one allocation.
type chainCall struct {
	info   CallInfo
	svc    *service
	mt     *methodType
	params []byte
	stream *outStream
	result any // the method's reply, once call returned nil
}

// call is the next of the innermost interceptor: it runs the method with ctx.
func (cc *chainCall) call(ctx context.Context) error {
	if cc.stream != nil {
		cc.stream.ctx = ctx // Send ends with the method's context
	}
	var err error
	cc.result, err = callMethod(ctx, cc.svc, cc.mt, cc.params, cc.stream)
	return err
}

// callFault is the error of a call the runtime answers for its method: the
// argument does not fit ("bad_params"), or the method panicked ("panic").
type callFault struct{ werr wireError }

func (e *callFault) Error() string {
	if e.werr.Type == "panic" {
		return "panic: " + e.werr.Message
	}
	return e.werr.Message
}

// ErrorType tells interceptors what the client will see.
func (e *callFault) ErrorType() string { return e.werr.Type }

// Frames panicStack leaves out of an interceptor's panic: the chain's own
// closures, and what runs the chain.
var (
	pkgPath      = reflect.TypeOf(Server{}).PkgPath()
	pkgPrefix    = pkgPath + "."
	runChainName = pkgPrefix + "runChain"
)

// chainFrame reports whether function is a frame of the chain's machinery:
// stop says it runs the chain, and nothing above it is the call's.
func chainFrame(function string) (skip, stop bool) {
	switch {
	case function == runChainName:
		return true, true
	case strings.HasPrefix(function, pkgPrefix) && strings.Contains(function, ".compose["):
		// compose's closures, named after the function it was inlined in, if any.
		return true, false
	}
	return false, false
}

// parseMetadata decodes the "metadata" map of a request's meta: its entries
// whose key and value are strings; nil when it has none.
func parseMetadata(raw []byte) Metadata {
	c := scan.Cursor{B: raw}
	n, _ := c.MapLen()
	var md Metadata
	for i := 0; i < n; i++ {
		k, ok := c.Str()
		if !ok {
			c.Raw()
			c.Raw()
			continue
		}
		v, ok := c.Str()
		if !ok {
			c.Raw()
			continue
		}
		if md == nil {
			md = make(Metadata, min(n-i, 8))
		}
		md[k] = v
	}
	return md
}
