package gotask

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestWorkersRunEveryTaskAndExitWhenDone(t *testing.T) {
	done := make(chan struct{})
	w := newWorkers(done)
	var ran atomic.Int32
	var wg sync.WaitGroup
	release := make(chan struct{})
	for i := 0; i < 50; i++ {
		wg.Add(1)
		w.run(func() {
			defer wg.Done()
			<-release // all 50 at once: none can be reused, each needs a worker
			ran.Add(1)
		})
	}
	close(release)
	wg.Wait()
	for i := 0; i < 50; i++ { // now idle workers take them (or new ones, if none is back yet)
		wg.Add(1)
		w.run(func() { defer wg.Done(); ran.Add(1) })
		wg.Wait()
	}
	if got := ran.Load(); got != 100 {
		t.Fatalf("ran %d tasks, want 100", got)
	}
	close(done)
	exited := make(chan struct{})
	go func() { w.live.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(hangGuard):
		t.Fatal("idle workers did not exit when done was closed")
	}
}
