package e2ehost

import (
	"errors"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestHoldPort: a held port refuses connections, as a stopped server's
// does, and cannot be bound by another socket until it is let go.
func TestHoldPort(t *testing.T) {
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	release := holdPort(port)
	if c, err := net.DialTimeout("tcp", addr, 2*time.Second); err == nil {
		_ = c.Close()
		t.Error("a held port accepted a connection")
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dialling a held port: %v, want connection refused", err)
	}
	if l, err := net.Listen("tcp", addr); err == nil {
		_ = l.Close()
		t.Fatal("a held port could be bound")
	}
	release()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("the port let go cannot be bound: %v", err)
	}
	_ = l.Close()
}
