package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/trio-gotask/trio-gotask/go/gotask"
)

// warmCache is the example's lifecycle hook (gotask.AddHook): a cache loaded
// before the sidecar serves its first call, refreshed in the background
// while it serves, and dropped at shutdown. Two environment variables let
// tests watch it and break it:
//
//   - GOTASK_EXAMPLE_HOOK_FAIL: "start" fails the Start (the sidecar then
//     exits before its handshake); "run" fails the Run at its first refresh
//     (the sidecar then shuts down); "stop" fails the Stop.
//   - GOTASK_EXAMPLE_HOOK_LOG: a file to which the hook appends a line per
//     step: "start", "run", "run ended", "stop".
type warmCache struct {
	fail    string
	logFile string
	refresh chan chan error // App.RefreshCache's requests, which Run answers

	running counter // 1 while Run runs

	mu         sync.Mutex
	generation int64 // the load the cache holds: 1 after Start, one more per refresh
	started    int64
	refreshes  int64
	stopped    int64
}

// refreshEvery is how often Run refreshes the cache on its own.
const refreshEvery = 30 * time.Second

var cache = &warmCache{refresh: make(chan chan error)}

// hook returns the cache's hook, configured from the environment.
func (c *warmCache) hook() gotask.Hook {
	c.fail = os.Getenv("GOTASK_EXAMPLE_HOOK_FAIL")
	c.logFile = os.Getenv("GOTASK_EXAMPLE_HOOK_LOG")
	return gotask.Hook{Name: "warm-cache", Start: c.start, Run: c.run, Stop: c.stop}
}

func (c *warmCache) start(ctx context.Context) error {
	c.log("start")
	if c.fail == "start" {
		return errors.New("cannot load the cache: GOTASK_EXAMPLE_HOOK_FAIL=start")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.generation = 1
	c.started++
	return nil
}

// run refreshes the cache every refreshEvery and when App.RefreshCache asks,
// until ctx ends. A refresh that fails ends it with the refresh's error.
func (c *warmCache) run(ctx context.Context) error {
	c.log("run")
	c.running.add(1)
	defer c.running.add(-1)
	t := time.NewTicker(refreshEvery)
	defer t.Stop()
	for {
		var asked chan error
		select {
		case <-ctx.Done():
			c.log("run ended")
			return nil
		case <-t.C:
		case asked = <-c.refresh:
		}
		err := c.reload()
		if asked != nil {
			asked <- err
		}
		if err != nil {
			return err
		}
	}
}

func (c *warmCache) reload() error {
	if c.fail == "run" {
		return errors.New("refreshing the cache: GOTASK_EXAMPLE_HOOK_FAIL=run")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.generation++
	c.refreshes++
	return nil
}

func (c *warmCache) stop(ctx context.Context) error {
	c.log("stop")
	c.mu.Lock()
	c.generation = 0
	c.stopped++
	c.mu.Unlock()
	if c.fail == "stop" {
		return errors.New("dropping the cache: GOTASK_EXAMPLE_HOOK_FAIL=stop")
	}
	return nil
}

// log appends step as a line to GOTASK_EXAMPLE_HOOK_LOG, if it names a file.
func (c *warmCache) log(step string) {
	if c.logFile == "" {
		return
	}
	f, err := os.OpenFile(c.logFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err == nil {
		_, err = fmt.Fprintln(f, step)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "warm-cache: logging %q: %v\n", step, err)
	}
}

// HookState waits until the cache's Run is running if args.Running is 1,
// then returns what the cache's hook did: {"started": ..., "running": ...,
// "stopped": ..., "refreshes": ..., "generation": ...}. Python sends
// {"running": 1}, or nothing not to wait.
func (a *App) HookState(ctx context.Context, args struct {
	Running int64 `msgpack:"running"`
}, r *map[string]int64) error {
	running, err := cache.running.wait(ctx, args.Running)
	if err != nil {
		return err
	}
	cache.mu.Lock()
	defer cache.mu.Unlock()
	*r = map[string]int64{
		"started":    cache.started,
		"running":    running,
		"stopped":    cache.stopped,
		"refreshes":  cache.refreshes,
		"generation": cache.generation,
	}
	return nil
}

// RefreshCache has the cache's Run refresh the cache now, and returns the
// generation it then holds, or the refresh's error (which also ends the Run,
// and so the sidecar).
func (a *App) RefreshCache(ctx context.Context, _ any, r *int64) error {
	asked := make(chan error, 1)
	select {
	case cache.refresh <- asked:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-asked:
		if err != nil {
			return err
		}
	case <-ctx.Done():
		return ctx.Err()
	}
	cache.mu.Lock()
	defer cache.mu.Unlock()
	*r = cache.generation
	return nil
}
