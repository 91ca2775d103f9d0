// Command greeter is the sidecar of the tutorial (docs/tutorial.md).
package main

import (
	"context"
	"errors"
	"log"
	"time"

	"github.com/trio-gotask/trio-gotask/go/gotask"
)

// App's methods are called from Python as "App.Hi", "App.Wait" and "App.TimeLeft".
type App struct{}

// Hi greets name.
func (a *App) Hi(name string, reply *string) error {
	*reply = "Hello, " + name + "!"
	return nil
}

// Wait waits for the given number of seconds, or until the caller gives up.
func (a *App) Wait(ctx context.Context, seconds float64, reply *string) error {
	select {
	case <-time.After(time.Duration(seconds * float64(time.Second))):
		*reply = "waited"
		return nil
	case <-ctx.Done(): // the Python caller was cancelled, or its deadline passed
		return ctx.Err()
	}
}

// TimeLeft returns how many seconds the caller's deadline leaves this call.
func (a *App) TimeLeft(ctx context.Context, _ struct{}, reply *float64) error {
	deadline, ok := ctx.Deadline()
	if !ok {
		return errors.New("no deadline: call TimeLeft inside trio.fail_after")
	}
	*reply = time.Until(deadline).Seconds()
	return nil
}

func main() {
	if err := gotask.Register(new(App)); err != nil {
		log.Fatal(err)
	}
	gotask.Run()
}
