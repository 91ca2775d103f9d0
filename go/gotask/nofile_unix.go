//go:build unix

package gotask

import "syscall"

// descriptorLimit is the process's soft RLIMIT_NOFILE (which Go raised to the
// hard limit at start), or 0 if it cannot be read.
func descriptorLimit() uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	return uint64(lim.Cur)
}
