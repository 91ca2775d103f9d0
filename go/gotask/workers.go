package gotask

import (
	"sync"
	"time"
)

// workerIdle is how long a worker waits for another call before it exits.
const workerIdle = 10 * time.Second

// workers runs calls on goroutines that outlive a call. A fresh goroutine
// starts with a small stack, and decoding and invoking a call grows it, which
// costs a small call more than the rest of the server's work (see "What a call
// costs" in docs/performance.md). A worker keeps its grown stack for the next
// call, and exits after workerIdle without one, or once done is closed.
type workers struct {
	tasks chan func() // unbuffered: a task goes only to a worker waiting for one
	done  <-chan struct{}
	live  sync.WaitGroup
}

func newWorkers(done <-chan struct{}) *workers {
	return &workers{tasks: make(chan func()), done: done}
}

// run runs task on an idle worker, or on a new one when none is idle.
func (w *workers) run(task func()) {
	select {
	case w.tasks <- task:
	default:
		w.live.Add(1)
		go w.work(task)
	}
}

func (w *workers) work(task func()) {
	defer w.live.Done()
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		task()
		if !idle.Stop() {
			select { // drain a timer that fired while the task ran
			case <-idle.C:
			default:
			}
		}
		idle.Reset(workerIdle)
		select {
		case task = <-w.tasks:
		case <-idle.C:
			return
		case <-w.done:
			return
		}
	}
}
