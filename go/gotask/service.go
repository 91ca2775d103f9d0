package gotask

import (
	"context"
	"errors"
	"fmt"
	"go/token"
	"reflect"
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
	replyType reflect.Type // a pointer type
}

type service struct {
	name   string
	rcvr   reflect.Value
	typ    reflect.Type
	method map[string]*methodType
}

// newService inspects rcvr. It is strict where net/rpc is lenient: a method that
// looks like an RPC method (exported, returns an error last) but has the wrong
// shape is an error, so mistakes show up at start-up, not as not_found later.
func newService(rcvr any, name string, useName bool) (*service, error) {
	if rcvr == nil {
		return nil, errors.New("gotask.Register: receiver is nil")
	}
	s := &service{typ: reflect.TypeOf(rcvr), rcvr: reflect.ValueOf(rcvr)}
	sname := name
	if !useName {
		sname = reflect.Indirect(s.rcvr).Type().Name()
	}
	if sname == "" {
		return nil, fmt.Errorf("gotask.Register: no service name for type %s", s.typ)
	}
	if !useName && !token.IsExported(sname) {
		return nil, fmt.Errorf("gotask.Register: type %s is not exported", sname)
	}
	if useName && !token.IsIdentifier(sname) {
		return nil, fmt.Errorf("gotask.Register: service name %q is not a Go identifier", sname)
	}
	s.name = sname
	methods, err := suitableMethods(s.typ, sname)
	if err != nil {
		return nil, err
	}
	if len(methods) == 0 {
		msg := fmt.Sprintf("gotask.Register: type %s has no exported methods of suitable type", sname)
		if s.typ.Kind() != reflect.Pointer {
			if m, _ := suitableMethods(reflect.PointerTo(s.typ), sname); len(m) != 0 {
				msg += " (hint: pass a pointer to a value of that type)"
			}
		}
		return nil, errors.New(msg)
	}
	s.method = methods
	return s, nil
}

func suitableMethods(typ reflect.Type, sname string) (map[string]*methodType, error) {
	methods := make(map[string]*methodType)
	for i := 0; i < typ.NumMethod(); i++ {
		m := typ.Method(i)
		if !m.IsExported() {
			continue
		}
		mt := m.Type
		// Only methods returning an error as their last result look like RPC methods.
		if mt.NumOut() == 0 || mt.Out(mt.NumOut()-1) != typeOfError {
			continue
		}
		mtype, err := checkMethod(m)
		if err != nil {
			return nil, fmt.Errorf("gotask.Register: method %s.%s: %v", sname, m.Name, err)
		}
		methods[m.Name] = mtype
	}
	return methods, nil
}

const wantShape = "want func(args A, reply *R) error or func(ctx context.Context, args A, reply *R) error"

func checkMethod(m reflect.Method) (*methodType, error) {
	mt := m.Type
	if mt.NumOut() != 1 {
		return nil, fmt.Errorf("returns %d values; must return only error", mt.NumOut())
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
			return nil, fmt.Errorf("first of 3 parameters is %s, must be context.Context", mt.In(1))
		}
		withCtx = true
	default:
		return nil, fmt.Errorf("has %d parameters; %s", in, wantShape)
	}
	if mt.IsVariadic() {
		return nil, fmt.Errorf("is variadic; %s", wantShape)
	}
	argType := mt.In(mt.NumIn() - 2)
	replyType := mt.In(mt.NumIn() - 1)
	if argType == typeOfContext {
		return nil, fmt.Errorf("args type is context.Context; %s", wantShape)
	}
	if replyType.Kind() != reflect.Pointer {
		return nil, fmt.Errorf("reply type %s must be a pointer", replyType)
	}
	for _, t := range []reflect.Type{argType, replyType} {
		if bad := unencodable(t); bad != nil {
			return nil, fmt.Errorf("type %s cannot travel over msgpack (contains %s)", t, bad)
		}
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
