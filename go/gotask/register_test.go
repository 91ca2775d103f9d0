package gotask

import (
	"context"
	"log"
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
		{NoReplyPtr{}, "", "gotask.Register: type NoReplyPtr has no exported methods of suitable type"},
		{NoReplyPtr{}, "", "skipped: NoReplyPtr.Bad has reply type int, which is not a pointer"},
		{TooFew{}, "", "TooFew.Bad takes 1 parameters; want func(args A, reply *R) error"},
		{TooMany{}, "", "TooMany.Bad takes 3 parameters and the first, string, is not context.Context"},
		{NoCtxFirst{}, "", "is not context.Context"},
		{CtxNoArgs{}, "", "takes (context.Context, *int) but no args"},
		{TwoResults{}, "", "TwoResults.Bad does not return exactly one error"},
		{ChanArg{}, "", "uses type chan int, which cannot travel over msgpack"},
		{Nothing{}, "", "gotask.Register: type Nothing has no exported methods of suitable type"},
		{PtrOnly{}, "", "(hint: pass a pointer to a value of that type)"},
		{unexportedType{}, "", "type unexportedType is not exported; use RegisterName"},
		{nil, "", "receiver is nil"},
		{new(Good), "-", "the service name is empty"},
	}
	for _, c := range cases {
		var err error
		if c.name == "-" {
			err = NewServer().RegisterName("", c.rcvr)
		} else if c.name != "" {
			err = NewServer().RegisterName(c.name, c.rcvr)
		} else {
			err = NewServer().Register(c.rcvr)
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Register(%T): %v, want an error containing %q", c.rcvr, err, c.want)
		}
	}
}

// DB is shaped like a user's service: RPC methods beside helpers of other
// shapes, one of which returns an error.
type DB struct{ closed bool }

func (d *DB) Get(key string, reply *string) error { *reply = "value of " + key; return nil }
func (d *DB) Close() error                        { d.closed = true; return nil }
func (d *DB) String() string                      { return "DB" }

func TestRegisterSkipsHelpersAndSaysSo(t *testing.T) {
	var logged strings.Builder
	s := NewServer()
	s.ErrorLog = log.New(&logged, "", 0)
	if err := s.Register(new(DB)); err != nil {
		t.Fatalf("Register: %v", err)
	}
	if _, _, err := s.lookup("DB.Get"); err != nil {
		t.Errorf("DB.Get: %v", err)
	}
	if _, _, err := s.lookup("DB.Close"); err == nil {
		t.Error("DB.Close was published")
	}
	want := "Register: not published: DB.Close takes 0 parameters; want func(args A, reply *R) error"
	if got := logged.String(); !strings.Contains(got, want) || strings.Contains(got, "String") {
		t.Errorf("log = %q, want one line containing %q and nothing about String", got, want)
	}
	// A call to a method Register skipped says why, not just "no method": a typo and a wrong
	// shape need different fixes.
	for name, want := range map[string]string{
		"DB.Close":  `DB.Close is not callable: Register skipped it, since it takes 0 parameters; want func(args A, reply *R) error`,
		"DB.get":    `service "DB" has no method "get"; did you mean "DB.Get"? (names are case-sensitive)`,
		"DB.Put":    `service "DB" has no method "Put"`,
		"DB.String": `service "DB" has no method "String"`, // no error result: not meant to be called
	} {
		if _, _, err := s.lookup(name); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s: %v, want %s", name, err, want)
		}
	}
}

func TestRegisterNameWithDots(t *testing.T) {
	s := NewServer()
	if err := s.RegisterName("net.rpc.Arith", new(Good)); err != nil {
		t.Fatal(err)
	}
	svc, mt, err := s.lookup("net.rpc.Arith.Plain")
	if err != nil || svc.name != "net.rpc.Arith" || mt.method.Name != "Plain" {
		t.Fatalf("lookup: %v %v %v", svc, mt, err)
	}
	if _, _, err := s.lookup("net.rpc.Plain"); err == nil {
		t.Error("net.rpc.Plain found")
	}
}
