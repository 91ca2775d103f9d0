package gotask

import (
	"context"
	"strings"
	"testing"
)

type Good struct{}

type GoodArgs struct {
	A int `msgpack:"a"`
}

func (Good) Plain(args string, reply *string) error                        { return nil }
func (*Good) WithCtx(ctx context.Context, args GoodArgs, reply *int) error { return nil }
func (*Good) PtrArgs(args *GoodArgs, reply *map[int]string) error          { return nil }
func (*Good) Helper() string                                               { return "ignored: no error result" }
func (*Good) unexported(args int, reply *int) error                        { return nil }

type NoReplyPtr struct{}

func (NoReplyPtr) Bad(args string, reply int) error { return nil }

type TooFew struct{}

func (TooFew) Bad(args string) error { return nil }

type TooMany struct{}

func (TooMany) Bad(a, b string, reply *int) error { return nil }

type NoCtxFirst struct{}

func (NoCtxFirst) Bad(a string, ctx context.Context, reply *int) error { return nil }

type CtxNoArgs struct{}

func (CtxNoArgs) Bad(ctx context.Context, reply *int) error { return nil }

type TwoResults struct{}

func (TwoResults) Bad(a string, reply *int) (int, error) { return 0, nil }

type ChanArg struct{}

func (ChanArg) Bad(a chan int, reply *int) error { return nil }

type Nothing struct{}

func (Nothing) String() string { return "" }

type PtrOnly struct{}

func (*PtrOnly) M(a int, reply *int) error { return nil }

type unexportedType struct{}

func (unexportedType) M(a int, reply *int) error { return nil }

func TestRegisterGood(t *testing.T) {
	s := NewServer()
	if err := s.Register(new(Good)); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"Good.Plain", "Good.WithCtx", "Good.PtrArgs"} {
		if _, _, err := s.lookup(name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for _, name := range []string{"Good.Helper", "Good.unexported", "Good", "Bad.Plain"} {
		if _, _, err := s.lookup(name); err == nil {
			t.Errorf("%s found", name)
		}
	}
	if err := s.Register(new(Good)); err == nil || !strings.Contains(err.Error(), "already defined") {
		t.Errorf("duplicate: %v", err)
	}
	if err := s.RegisterName("Other", new(Good)); err != nil {
		t.Errorf("RegisterName: %v", err)
	}
	if err := s.RegisterName("Lower", unexportedType{}); err != nil {
		t.Errorf("RegisterName of an unexported type: %v", err)
	}
}

func TestRegisterBad(t *testing.T) {
	cases := []struct {
		rcvr any
		name string
		want string
	}{
		{NoReplyPtr{}, "", "gotask.Register: method NoReplyPtr.Bad: reply type int must be a pointer"},
		{TooFew{}, "", "gotask.Register: method TooFew.Bad: has 1 parameters"},
		{TooMany{}, "", "gotask.Register: method TooMany.Bad: first of 3 parameters is string, must be context.Context"},
		{NoCtxFirst{}, "", "must be context.Context"},
		{CtxNoArgs{}, "", "takes (context.Context, *int) but no args"},
		{TwoResults{}, "", "gotask.Register: method TwoResults.Bad: returns 2 values; must return only error"},
		{ChanArg{}, "", "cannot travel over msgpack"},
		{Nothing{}, "", "gotask.Register: type Nothing has no exported methods of suitable type"},
		{PtrOnly{}, "", "(hint: pass a pointer to a value of that type)"},
		{unexportedType{}, "", "type unexportedType is not exported"},
		{nil, "", "receiver is nil"},
		{new(Good), "Not.Ident", "is not a Go identifier"},
	}
	for _, c := range cases {
		var err error
		if c.name != "" {
			err = NewServer().RegisterName(c.name, c.rcvr)
		} else {
			err = NewServer().Register(c.rcvr)
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Register(%T): %v, want an error containing %q", c.rcvr, err, c.want)
		}
	}
}
