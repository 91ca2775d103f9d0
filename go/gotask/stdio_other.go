//go:build !unix

package gotask

import "os"

// pollable returns f: only Unix pipes are switched to the network poller.
func pollable(f *os.File) *os.File { return f }
