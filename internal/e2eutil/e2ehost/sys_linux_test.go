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

// TestStopHoldingPort: the port a child was started on is held from its
// stop to its restart.
func TestStopHoldingPort(t *testing.T) {
	var port int
	marker := filepath.Join(t.TempDir(), "up")
	p := &Process{Name: "server", Path: "/bin/sh", LogPath: filepath.Join(t.TempDir(), "log")}
	defer p.Kill()
	up := func() error { _, err := os.Stat(marker); return err }
	if err := p.StartOnFreePort(1, func(pt int) error {
		port = pt
		p.Args = []string{"-c", "touch " + marker + "; exec sleep 30"}
		return nil
	}, 20*time.Second, up); err != nil {
		t.Fatal(WithLog(err))
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	p.StopHoldingPort(syscall.SIGTERM, 10*time.Second)
	if l, err := net.Listen("tcp", addr); err == nil {
		_ = l.Close()
		t.Fatal("the stopped child's port could be bound")
	}
	if err := p.RestartOnPort(20*time.Second, up); err != nil {
		t.Fatal(WithLog(err))
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("after the restart the port is still held: %v", err)
	}
	_ = l.Close()
}

// TestLetGoOfPort: a child stopped for good gives its held port back.
func TestLetGoOfPort(t *testing.T) {
	var port int
	marker := filepath.Join(t.TempDir(), "up")
	p := &Process{Name: "server", Path: "/bin/sh", LogPath: filepath.Join(t.TempDir(), "log")}
	defer p.Kill()
	if err := p.StartOnFreePort(1, func(pt int) error {
		port = pt
		p.Args = []string{"-c", "touch " + marker + "; exec sleep 30"}
		return nil
	}, 20*time.Second, func() error { _, err := os.Stat(marker); return err }); err != nil {
		t.Fatal(WithLog(err))
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	p.StopHoldingPort(os.Kill, time.Minute)
	if l, err := net.Listen("tcp", addr); err == nil {
		_ = l.Close()
		t.Fatal("the stopped child's port could be bound")
	}
	p.LetGoOfPort()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("the port is still held after LetGoOfPort: %v", err)
	}
	_ = l.Close()
	p.LetGoOfPort() // nothing held: a no-op
}
