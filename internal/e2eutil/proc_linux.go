package e2eutil

import (
	"errors"
	"syscall"
)

// sysProcAttr makes the kernel kill the child when the test binary dies, even
// on SIGKILL or a test timeout, so no server outlives its test run. (Linux ties
// this to the starting thread; Go keeps threads alive unless a goroutine that
// called runtime.LockOSThread exits, which tests starting servers do not do.)
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || !errors.Is(err, syscall.ESRCH)
}
