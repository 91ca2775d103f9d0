//go:build unix

package gotask

import (
	"os"
	"os/signal"
	"syscall"
)

// pollable returns f in non-blocking mode, as a File served by the runtime's
// network poller, or f itself if the mode cannot be changed. A blocking read
// of a pipe holds a thread in a system call, and a request that woke it waited
// for the scheduler to take the thread back: a small call over the pipe
// measured p50 230-540 us, erratically, against 170-230 us pollable.
func pollable(f *os.File) *os.File {
	fd := int(f.Fd())
	if err := syscall.SetNonblock(fd, true); err != nil {
		return f
	}
	return os.NewFile(uintptr(fd), f.Name())
}

// takeStdout returns a new File for standard output, close-on-exec, and points
// descriptor 1 at standard error, so that whatever else the program writes to
// standard output (os.Stdout follows descriptor 1, and so do C code and the
// processes that methods start with it) becomes standard error. With poll,
// the returned File is in non-blocking mode, served by the network poller; a
// terminal, whose mode its other users share, must not be.
func takeStdout(poll bool) (*os.File, error) {
	// Held for reading, the lock keeps a fork from copying the descriptor
	// before it is close-on-exec.
	syscall.ForkLock.RLock()
	fd, err := syscall.Dup(1)
	if err == nil {
		syscall.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return nil, err
	}
	if err := dup2(2, 1); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	if poll {
		// os.NewFile registers a descriptor with the poller only if it is
		// already non-blocking.
		syscall.SetNonblock(fd, true)
	}
	return os.NewFile(uintptr(fd), "/dev/stdout"), nil
}

// surviveClosedPipes makes a write to a pipe nobody reads fail with EPIPE
// instead of killing the program. Go's runtime lets SIGPIPE kill it when the
// write was to descriptor 1 or 2, unless the program asks for the signal, and
// a host that died took the reading end of our standard error with it: the
// sidecar must live on to shut down in order. Notify, unlike Ignore, is not
// inherited by the processes that methods start.
func surviveClosedPipes() {
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
}
