package gotask

import (
	"context"
	"errors"
	"fmt"
	"go/token"
	"reflect"
	"strings"
)

var (
	typeOfError   = reflect.TypeOf((*error)(nil)).Elem()
	typeOfContext = reflect.TypeOf((*context.Context)(nil)).Elem()
)

// methodType is one callable method of a service.
type methodType struct {
	method    reflect.Method
	withCtx   bool         // takes a context.Context first
	argType   reflect.Type // as declared; may be a pointer
	replyType reflect.Type // a pointer type: *R, or *Stream[T] for a stream method
	itemType  reflect.Type // a stream method's T; nil for a method that returns one reply
}

type service struct {
	name    string
	rcvr    reflect.Value
	typ     reflect.Type
	method  map[string]*methodType
	skipped map[string]string // why each exported method returning an error was left out
}

// newService inspects rcvr. Like net/rpc it is lenient: exported methods of
// other shapes are skipped, not errors, since real types have helpers such as
// Close() error. skipped says why each exported method returning an error
// (the ones that look meant to be called) was left out, for the log; it is an
// error only if no method at all is suitable.
func newService(rcvr any, name string, useName bool) (s *service, skipped []string, err error) {
	if rcvr == nil {
		return nil, nil, errors.New("gotask.Register: receiver is nil")
	}
	s = &service{typ: reflect.TypeOf(rcvr), rcvr: reflect.ValueOf(rcvr)}
	sname := name
	if !useName {
		sname = reflect.Indirect(s.rcvr).Type().Name()
		if sname == "" {
			return nil, nil, fmt.Errorf("gotask.Register: no service name for type %s; use RegisterName", s.typ)
		}
		if !token.IsExported(sname) {
			return nil, nil, fmt.Errorf("gotask.Register: type %s is not exported; use RegisterName to publish it under a name", sname)
		}
	} else if sname == "" {
		return nil, nil, errors.New("gotask.RegisterName: the service name is empty")
	}
	s.name = sname
	s.method, s.skipped, skipped = suitableMethods(s.typ, sname)
	if len(s.method) == 0 {
		msg := fmt.Sprintf("gotask.Register: type %s has no exported methods of suitable type (%s)", sname, wantShape)
		if len(skipped) > 0 {
			msg += "; skipped: " + strings.Join(skipped, "; ")
		}
		if s.typ.Kind() != reflect.Pointer {
			if m, _, _ := suitableMethods(reflect.PointerTo(s.typ), sname); len(m) != 0 {
				msg += " (hint: pass a pointer to a value of that type)"
			}
		}
		return nil, skipped, errors.New(msg)
	}
	return s, skipped, nil
}

// suitableMethods returns the methods of typ that can be called, and a reason
// for each exported method returning an error that cannot: by its name (why),
// and as a sentence naming it (skipped, in the order of the methods).
func suitableMethods(typ reflect.Type, sname string) (methods map[string]*methodType, why map[string]string, skipped []string) {
	methods = make(map[string]*methodType)
	why = make(map[string]string)
	for i := 0; i < typ.NumMethod(); i++ {
		m := typ.Method(i)
		if !m.IsExported() {
			continue
		}
		mt := m.Type
		mtype, err := checkMethod(m)
		if err != nil {
			// Only methods returning an error as their last result look meant to be called.
			if mt.NumOut() > 0 && mt.Out(mt.NumOut()-1) == typeOfError {
				why[m.Name] = err.Error()
				skipped = append(skipped, fmt.Sprintf("%s.%s %v", sname, m.Name, err))
			}
			continue
		}
		methods[m.Name] = mtype
	}
	return methods, why, skipped
}

const wantShape = "want func(args A, reply *R) error or func(ctx context.Context, args A, reply *R) error, " +
	"or for a stream method the same with out *gotask.Stream[T] in place of reply *R"

// checkMethod returns the methodType of m, or why m cannot be called; the
// reason reads after "Type.Method ".
func checkMethod(m reflect.Method) (*methodType, error) {
	mt := m.Type
	if mt.NumOut() != 1 || mt.Out(0) != typeOfError {
		return nil, fmt.Errorf("does not return exactly one error; %s", wantShape)
	}
	in := mt.NumIn() - 1 // without the receiver
	var withCtx bool
	switch in {
	case 2:
		if mt.In(1) == typeOfContext {
			return nil, fmt.Errorf("takes (context.Context, %s) but no args; %s", mt.In(2), wantShape)
		}
	case 3:
		if mt.In(1) != typeOfContext {
			return nil, fmt.Errorf("takes 3 parameters and the first, %s, is not context.Context; %s", mt.In(1), wantShape)
		}
		withCtx = true
	default:
		return nil, fmt.Errorf("takes %d parameters; %s", in, wantShape)
	}
	if mt.IsVariadic() {
		return nil, fmt.Errorf("is variadic; %s", wantShape)
	}
	argType := mt.In(mt.NumIn() - 2)
	replyType := mt.In(mt.NumIn() - 1)
	if argType == typeOfContext {
		return nil, fmt.Errorf("takes context.Context as its args; %s", wantShape)
	}
	if argType.Implements(typeOfStreamer) {
		return nil, fmt.Errorf("takes %s as its args; a stream comes last; %s", argType, wantShape)
	}
	if replyType.Kind() != reflect.Pointer {
		if reflect.PointerTo(replyType).Implements(typeOfStreamer) {
			return nil, fmt.Errorf("takes a %s, not a pointer to it; %s", replyType, wantShape)
		}
		return nil, fmt.Errorf("has reply type %s, which is not a pointer; %s", replyType, wantShape)
	}
	if bad := unencodable(argType); bad != nil {
		return nil, fmt.Errorf("uses type %s, which cannot travel over msgpack (it contains %s)", argType, bad)
	}
	if replyType.Implements(typeOfStreamer) {
		item := reflect.Zero(replyType).Interface().(streamer).streamItem()
		if bad := unencodable(item); bad != nil {
			return nil, fmt.Errorf("streams items of type %s, which cannot travel over msgpack (it contains %s)", item, bad)
		}
		return &methodType{method: m, withCtx: withCtx, argType: argType, replyType: replyType, itemType: item}, nil
	}
	if bad := unencodable(replyType); bad != nil {
		return nil, fmt.Errorf("uses type %s, which cannot travel over msgpack (it contains %s)", replyType, bad)
	}
	return &methodType{method: m, withCtx: withCtx, argType: argType, replyType: replyType}, nil
}

// unencodable returns a type inside t that msgpack cannot carry, or nil.
func unencodable(t reflect.Type) reflect.Type {
	return unencodableSeen(t, map[reflect.Type]bool{})
}

func unencodableSeen(t reflect.Type, seen map[reflect.Type]bool) reflect.Type {
	if seen[t] {
		return nil
	}
	seen[t] = true
	switch t.Kind() {
	case reflect.Chan, reflect.Func, reflect.UnsafePointer, reflect.Complex64, reflect.Complex128:
		return t
	case reflect.Pointer, reflect.Slice, reflect.Array:
		return unencodableSeen(t.Elem(), seen)
	case reflect.Map:
		if bad := unencodableSeen(t.Key(), seen); bad != nil {
			return bad
		}
		return unencodableSeen(t.Elem(), seen)
	}
	return nil
}

// Register publishes the methods of rcvr on DefaultServer; see Server.Register.
func Register(rcvr any) error { return DefaultServer.Register(rcvr) }

// RegisterName is like Register but names the service.
func RegisterName(name string, rcvr any) error { return DefaultServer.RegisterName(name, rcvr) }

// Register publishes the exported methods of rcvr of the forms
//
//	func (t *T) Method(args A, reply *R) error
//	func (t *T) Method(ctx context.Context, args A, reply *R) error
//
// and the stream methods, which send any number of items before their
// response (see Stream), of the forms
//
//	func (t *T) Method(args A, out *gotask.Stream[Item]) error
//	func (t *T) Method(ctx context.Context, args A, out *gotask.Stream[Item]) error
//
// under the service name of rcvr's concrete type, to be called as "T.Method".
// As in net/rpc, methods of other shapes are not published; those that return
// an error (and so look meant to be called, like a Close() error helper) are
// logged once, with the reason, through ErrorLog. It is an error if rcvr has
// no suitable method at all, if its type is not exported, or if the name is
// taken.
func (s *Server) Register(rcvr any) error { return s.register(rcvr, "", false) }

// RegisterName is like Register but uses name as the service name. The name
// may contain dots, as in net/rpc: "net.rpc.Arith.Add" calls method Add of the
// service "net.rpc.Arith" (a call's method name is split at its last dot).
func (s *Server) RegisterName(name string, rcvr any) error { return s.register(rcvr, name, true) }

func (s *Server) register(rcvr any, name string, useName bool) error {
	svc, skipped, err := newService(rcvr, name, useName)
	if err != nil {
		return err
	}
	if _, dup := s.services.LoadOrStore(svc.name, svc); dup {
		return fmt.Errorf("gotask.Register: service already defined: %s", svc.name)
	}
	for _, why := range skipped {
		s.logf("Register: not published: %s", why)
	}
	return nil
}
