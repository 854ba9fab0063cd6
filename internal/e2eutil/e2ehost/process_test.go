package e2ehost

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestExitedEarly: a child that dies before it is ready is told apart from
// a slow one, and one that lost its port from one that failed otherwise.
func TestExitedEarly(t *testing.T) {
	dir := t.TempDir()
	p := &Process{Name: "quitter", Path: "/bin/sh", Args: []string{"-c", "echo 'listen: address already in use'; exit 1"}, LogPath: filepath.Join(dir, "log")}
	err := p.StartReady(10*time.Second, func() error { return errors.New("not yet") })
	var ne *NotReadyError
	if !errors.As(err, &ne) || !ne.Exited {
		t.Fatalf("err = %v, want an exited NotReadyError", err)
	}
	if !PortTaken(err) {
		t.Errorf("PortTaken(%v) = false; tail %q", err, ne.Tail)
	}
	if !strings.Contains(WithLog(err).Error(), "address already in use") {
		t.Errorf("WithLog leaves the log out: %v", WithLog(err))
	}
	if strings.Contains(err.Error(), "address already in use") {
		t.Errorf("the error holds the log; callers decide where it goes: %v", err)
	}

	p.Args = []string{"-c", "echo bad flag; exit 2"}
	if err := p.StartReady(10*time.Second, func() error { return errors.New("not yet") }); err == nil || PortTaken(err) {
		t.Errorf("another failure: err = %v, PortTaken %v", err, PortTaken(err))
	}
}

// TestStartOnFreePort: a child that loses its port is started again on
// another one, and the caller sees the port that served.
func TestStartOnFreePort(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = busy.Close() }()
	busyPort := busy.Addr().(*net.TCPAddr).Port

	p := &Process{Name: "server", Path: "/bin/sh", LogPath: filepath.Join(t.TempDir(), "log")}
	defer p.Kill()
	var ports []int
	marker := filepath.Join(t.TempDir(), "up")
	err = p.StartOnFreePort(3, func(port int) error {
		if len(ports) == 0 {
			port = busyPort // as if another process took it first
		}
		ports = append(ports, port)
		if port == busyPort {
			p.Args = []string{"-c", "echo bind: Address already in use; exit 1"}
		} else {
			p.Args = []string{"-c", "touch " + marker + "; exec sleep 30"}
		}
		return nil
	}, 20*time.Second, func() error {
		_, err := os.Stat(marker)
		return err
	})
	if err != nil {
		t.Fatal(WithLog(err))
	}
	if len(ports) != 2 || ports[1] == busyPort {
		t.Errorf("ports tried %v, want the taken one then another", ports)
	}
	if !p.Running() {
		t.Error("the second start is not running")
	}
}

// TestUsage: a child that spins has used CPU time and memory, read from
// /proc; its peak memory is remembered once it has stopped.
func TestUsage(t *testing.T) {
	p := &Process{Name: "spin", Path: "/bin/sh",
		Args:    []string{"-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; exec sleep 30"},
		LogPath: filepath.Join(t.TempDir(), "spin.log")}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	deadline := time.Now().Add(20 * time.Second)
	for p.CPUTime() < 50*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatalf("spinning child used %v of CPU, want at least 50ms", p.CPUTime())
		}
		time.Sleep(20 * time.Millisecond)
	}
	rss, err := RSS(p.PID())
	if err != nil || rss <= 0 {
		t.Errorf("RSS = %d, %v", rss, err)
	}
	live := p.PeakRSS()
	if live < rss {
		t.Errorf("peak RSS %d below RSS %d", live, rss)
	}
	p.Stop(syscall.SIGTERM, 5*time.Second)
	if p.Running() || p.CPUTime() != 0 {
		t.Errorf("after Stop: running %v, CPU %v", p.Running(), p.CPUTime())
	}
	if got := p.PeakRSS(); got < live {
		t.Errorf("peak RSS after stop %d, want at least %d read while it ran", got, live)
	}
}

func TestLogTail(t *testing.T) {
	log := filepath.Join(t.TempDir(), "log")
	var b strings.Builder
	for i := range 100 {
		b.WriteString("line " + strconv.Itoa(i) + "\n")
	}
	if err := os.WriteFile(log, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &Process{LogPath: log}
	got := p.LogTail(20)
	if got != "[...]\nline 98\nline 99\n" {
		t.Errorf("LogTail(20) = %q", got)
	}
	if got := p.LogTail(1 << 20); got != b.String() {
		t.Errorf("LogTail of the whole log = %q", got)
	}
}

func TestRepo(t *testing.T) {
	root, err := RepoRootFromWorkDir()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "internal", "e2eutil", "e2ehost")); err != nil {
		t.Errorf("root %s: %v", root, err)
	}
	if _, err := RepoRoot(t.TempDir()); err == nil {
		t.Error("RepoRoot outside the repository found one")
	}
	dir, err := PrometheusDir(root)
	if err != nil || filepath.Dir(dir) != filepath.Join(root, ".cache") || !strings.HasPrefix(filepath.Base(dir), "prometheus-v") {
		t.Errorf("PrometheusDir = %q, %v", dir, err)
	}
	dir, v, err := ToolDir(root, "helm", "tools/helm/go.mod", "helm.sh/helm/v4")
	if err != nil || filepath.Base(dir) != "helm-"+v || !strings.HasPrefix(v, "v4.") {
		t.Errorf("ToolDir(helm) = %q, %q, %v", dir, v, err)
	}
	if _, _, err := ToolDir(root, "x", "go.mod", "example.com/not/required"); err == nil {
		t.Error("ToolDir of a module go.mod does not require found one")
	}
}

func TestGoModRequire(t *testing.T) {
	goMod := "module x\n\nrequire a.b/c v1.2.3 // indirect\n\nrequire (\n\td.e/f v0.1.0\n\tg.h/i v2.0.0 // indirect\n)\n"
	for mod, want := range map[string]string{"a.b/c": "v1.2.3", "d.e/f": "v0.1.0", "g.h/i": "v2.0.0", "x": "", "d.e": ""} {
		if got := goModRequire(goMod, mod); got != want {
			t.Errorf("goModRequire(%s) = %q, want %q", mod, got, want)
		}
	}
	if got := goModModule(goMod); got != "x" {
		t.Errorf("goModModule = %q", got)
	}
}

func TestLookBinary(t *testing.T) {
	t.Setenv("E2EHOST_TEST_BIN", "/bin/sh")
	if got, err := LookBinary("E2EHOST_TEST_BIN", "/nonexistent/x", "hint"); err != nil || got != "/bin/sh" {
		t.Errorf("override: %q, %v", got, err)
	}
	_, err := LookBinary("", t.TempDir(), "run make tools")
	if err == nil || !strings.Contains(err.Error(), "run make tools") {
		t.Errorf("a directory: %v, want the hint", err)
	}
}

// TestRestartOnPort: a restart that finds its port taken is tried again
// until the port is free, on the same port (its Args unchanged).
func TestRestartOnPort(t *testing.T) {
	dir := t.TempDir()
	tried, marker := filepath.Join(dir, "tried"), filepath.Join(dir, "up")
	script := "if [ ! -f " + tried + " ]; then touch " + tried + "; echo 'bind: address already in use'; exit 1; fi; touch " + marker + "; exec sleep 30"
	p := &Process{Name: "server", Path: "/bin/sh", Args: []string{"-c", script}, LogPath: filepath.Join(dir, "log")}
	defer p.Kill()
	err := p.RestartOnPort(20*time.Second, func() error {
		_, err := os.Stat(marker)
		return err
	})
	if err != nil {
		t.Fatal(WithLog(err))
	}
	if _, err := os.Stat(tried); err != nil || !p.Running() {
		t.Errorf("first start not made (%v) or second not running (%v)", err, p.Running())
	}
}
