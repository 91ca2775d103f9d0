// Command runmisuse calls gotask.Run where it cannot define its flags on
// flag.CommandLine: with GOTASK_TEST_MISUSE=taken the program already has a
// flag -address, with GOTASK_TEST_MISUSE=parsed it parsed the command line
// first. TestRunMisuse runs it.
package main

import (
	"flag"
	"os"

	"github.com/trio-gotask/trio-gotask/go/gotask"
)

type App struct{}

func (a *App) Hi(name string, r *string) error {
	*r = "hello " + name
	return nil
}

func main() {
	switch os.Getenv("GOTASK_TEST_MISUSE") {
	case "taken":
		flag.String("address", "", "the program's own address")
	case "parsed":
		flag.Bool("verbose", false, "the program's own flag")
		flag.Parse()
	}
	if err := gotask.Register(new(App)); err != nil {
		panic(err)
	}
	gotask.Run()
}
