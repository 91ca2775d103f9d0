//go:build !unix

package gotask

import "os"

// takeStdout returns the original os.Stdout and points os.Stdout at standard
// error, so that what Go code prints there becomes standard error; descriptor
// (handle) redirection is left to Unix.
func takeStdout(poll bool) (*os.File, error) {
	out := os.Stdout
	os.Stdout = os.Stderr
	return out, nil
}

// takeStdin returns the original os.Stdin and points os.Stdin at nothing, so
// that Go code reading it finds it empty; handle redirection is left to Unix.
func takeStdin() (*os.File, error) {
	in := os.Stdin
	null, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	os.Stdin = null
	return in, nil
}

// surviveClosedPipes does nothing: SIGPIPE is a Unix signal.
func surviveClosedPipes() {}
