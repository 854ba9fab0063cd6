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

// holdPort binds a socket to 127.0.0.1:port without listening on it: while
// it is bound no connect() is given the port as its local one, and a
// client dialling the port is refused, as when nothing is there. It
// returns the function that lets the port go (a no-op when it could not
// be bound).
func holdPort(port int) func() {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return func() {}
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		_ = syscall.Close(fd)
		return func() {}
	}
	return func() { _ = syscall.Close(fd) }
}
