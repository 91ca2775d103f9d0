package gotask

import "syscall"

// dup2 makes descriptor newfd a copy of oldfd; linux/arm64 and newer ports
// have no dup2 system call, only dup3.
func dup2(oldfd, newfd int) error { return syscall.Dup3(oldfd, newfd, 0) }
