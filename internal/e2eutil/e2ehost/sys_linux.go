package e2ehost

import (
	"errors"
	"syscall"
)

// sysProcAttr makes the kernel kill the child when its parent dies, even on
// SIGKILL or a test timeout, so no server outlives its run. (Linux ties this
// to the starting thread; Go keeps threads alive unless a goroutine that
// called runtime.LockOSThread exits, which nothing starting servers does.)
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// Alive reports whether a process with id pid exists.
func Alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || !errors.Is(err, syscall.ESRCH)
}
