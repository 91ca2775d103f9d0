//go:build unix

package gotask

import (
	"os"
	"os/signal"
	"syscall"
)

// takeStdout returns a new File for standard output, close-on-exec, and points
// descriptor 1 at standard error, so that whatever else the program writes to
// standard output (os.Stdout follows descriptor 1, and so do C code and the
// processes that methods start with it) becomes standard error. With poll,
// the returned File is in non-blocking mode, served by the network poller; a
// terminal, whose mode its other users share, must not be.
func takeStdout(poll bool) (*os.File, error) {
	fd, err := dupCloseOnExec(1)
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

// takeStdin returns a new File for standard input, close-on-exec and served by
// the network poller, and points descriptor 0 at the null device: with
// -listen-on-pipe the frames arrive there, and a method that reads standard
// input (os.Stdin follows descriptor 0) must find it empty, not take them.
func takeStdin() (*os.File, error) {
	fd, err := dupCloseOnExec(0)
	if err != nil {
		return nil, err
	}
	null, err := os.Open(os.DevNull)
	if err == nil {
		err = dup2(int(null.Fd()), 0)
		null.Close()
	}
	if err != nil {
		syscall.Close(fd)
		return nil, err
	}
	syscall.SetNonblock(fd, true)
	return os.NewFile(uintptr(fd), "/dev/stdin"), nil
}

// dupCloseOnExec returns a close-on-exec copy of descriptor fd. Held for
// reading, the lock keeps a fork from copying it before it is close-on-exec.
func dupCloseOnExec(fd int) (int, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	dup, err := syscall.Dup(fd)
	if err == nil {
		syscall.CloseOnExec(dup)
	}
	return dup, err
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
