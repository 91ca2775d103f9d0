// Command ownflags is a sidecar with flags of its own, one of them named like
// a sidecar flag: its -address, defined on flag.CommandLine as a library might
// at import, leaves the sidecar's flags a FlagSet of their own, which also
// holds the program's -greeting. TestRunWithOwnFlags runs it.
package main

import (
	"flag"
	"os"

	"github.com/trio-gotask/trio-gotask/go/gotask"
)

var database = flag.String("address", "db.internal:5432", "the database to use")

type Greeter struct{ greeting string }

// Hi answers "<greeting> <name>, database <-address of flag.CommandLine>".
func (g *Greeter) Hi(name string, r *string) error {
	*r = g.greeting + " " + name + ", database " + *database
	return nil
}

func main() {
	fs := flag.NewFlagSet(os.Args[0], flag.ExitOnError)
	greeting := fs.String("greeting", "hello", "how to greet")
	options := gotask.Options{Server: gotask.NewServer()}
	options.AddFlags(fs)
	fs.Parse(os.Args[1:])
	if err := options.Server.Register(&Greeter{*greeting}); err != nil {
		panic(err)
	}
	gotask.RunWith(options)
}
