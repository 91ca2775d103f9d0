//go:build !unix

package gotask

import "os"

// pollable returns f: only Unix pipes are switched to the network poller.
func pollable(f *os.File) *os.File { return f }

// takeStdout returns the original os.Stdout and points os.Stdout at standard
// error, so that what Go code prints there becomes standard error; descriptor
// (handle) redirection is left to Unix.
func takeStdout(poll bool) (*os.File, error) {
	out := os.Stdout
	os.Stdout = os.Stderr
	return out, nil
}

// surviveClosedPipes does nothing: SIGPIPE is a Unix signal.
func surviveClosedPipes() {}
