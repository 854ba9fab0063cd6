//go:build !linux

package e2ehost

import "syscall"

// Only Linux can tie a child's life to its parent; elsewhere the caller's
// own cleanup is the only guard.
func sysProcAttr() *syscall.SysProcAttr { return nil }

// Alive is conservative: without a portable probe nothing is swept.
func Alive(int) bool { return true }

// holdPort holds nothing here: a restart on the same port relies on its
// retries alone.
func holdPort(int) func() { return func() {} }
