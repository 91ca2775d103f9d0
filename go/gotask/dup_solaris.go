package gotask

import (
	"fmt"
	"syscall"
)

// dup2 makes descriptor newfd a copy of oldfd. Package syscall has no Dup2 on
// Solaris and illumos: newfd is closed, and dup takes the lowest free
// descriptor, which is newfd unless another goroutine opened one meanwhile.
func dup2(oldfd, newfd int) error {
	syscall.Close(newfd)
	fd, err := syscall.Dup(oldfd)
	if err != nil {
		return err
	}
	if fd != newfd {
		syscall.Close(fd)
		return fmt.Errorf("descriptor %d was taken while it was being replaced", newfd)
	}
	return nil
}
