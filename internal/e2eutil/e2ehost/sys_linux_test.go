package e2ehost

import (
	"errors"
	"net"
	"os"
	"path/filepath"
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
	if bindable(addr) == nil {
		t.Fatal("a held port could be bound")
	}
	release()
	if err := bindable(addr); err != nil {
		t.Fatalf("the port let go cannot be bound: %v", err)
	}
}

// startSleeper starts a child on a free port that only sleeps; up is its
// readiness check, addr the address it was started for.
func startSleeper(t *testing.T) (p *Process, addr string, up func() error) {
	t.Helper()
	marker := filepath.Join(t.TempDir(), "up")
	p = &Process{Name: "server", Path: "/bin/sh", LogPath: filepath.Join(t.TempDir(), "log")}
	t.Cleanup(p.Kill)
	up = func() error { _, err := os.Stat(marker); return err }
	if err := p.StartOnFreePort(1, func(port int) error {
		addr = "127.0.0.1:" + strconv.Itoa(port)
		p.Args = []string{"-c", "touch " + marker + "; exec sleep 30"}
		return nil
	}, 20*time.Second, up); err != nil {
		t.Fatal(WithLog(err))
	}
	return p, addr, up
}

// bindable says whether a socket can bind addr now.
func bindable(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err == nil {
		_ = l.Close()
	}
	return err
}

// TestStopHoldingPort: the port a child was started on is held from its
// stop to its restart.
func TestStopHoldingPort(t *testing.T) {
	p, addr, up := startSleeper(t)
	p.StopHoldingPort(syscall.SIGTERM, 10*time.Second)
	if bindable(addr) == nil {
		t.Fatal("the stopped child's port could be bound")
	}
	if err := p.RestartOnPort(20*time.Second, up); err != nil {
		t.Fatal(WithLog(err))
	}
	if err := bindable(addr); err != nil {
		t.Fatalf("after the restart the port is still held: %v", err)
	}
}

// TestLetGoOfPort: a child stopped for good gives its held port back.
func TestLetGoOfPort(t *testing.T) {
	p, addr, _ := startSleeper(t)
	p.StopHoldingPort(os.Kill, time.Minute)
	if bindable(addr) == nil {
		t.Fatal("the stopped child's port could be bound")
	}
	p.LetGoOfPort()
	if err := bindable(addr); err != nil {
		t.Fatalf("the port is still held after LetGoOfPort: %v", err)
	}
	p.LetGoOfPort() // nothing held: a no-op
}
