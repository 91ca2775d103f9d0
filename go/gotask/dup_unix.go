//go:build unix && !linux && !solaris

package gotask

import "syscall"

// dup2 makes descriptor newfd a copy of oldfd.
func dup2(oldfd, newfd int) error { return syscall.Dup2(oldfd, newfd) }
