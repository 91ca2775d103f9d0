//go:build !unix

package gotask

// descriptorLimit is 0: there is no RLIMIT_NOFILE to read.
func descriptorLimit() uint64 { return 0 }
