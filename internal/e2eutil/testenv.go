// Package e2eutil starts real servers (Prometheus, promtool backfills, Redis) for tests,
// on 127.0.0.1 with free ports, and tears everything down through t.Cleanup.
package e2eutil

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// modulePath identifies the repository's own go.mod, so a nested module (or a
// go.mod of a dependency checked out below the tree) is never taken for the root.
const modulePath = "github.com/ethos-io/prometheus-multi-tenant-proxy"

// RepoRoot returns the directory holding the project's go.mod, found by walking
// up from the working directory (go test runs in the package's directory).
func RepoRoot(t testing.TB) string {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatalf("e2eutil: %v", err)
	}
	return root
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repository root: %w", err)
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && goModModule(string(data)) == modulePath {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("find repository root: no go.mod with module %s above the working directory", modulePath)
		}
		dir = parent
	}
}

func goModModule(goMod string) string {
	for _, line := range strings.Split(goMod, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}

// goModRequire returns the version of module mod required by goMod, in either
// the single-line or the block form of require.
func goModRequire(goMod, mod string) string {
	inBlock := false
	for _, line := range strings.Split(goMod, "\n") {
		if i := strings.Index(line, "//"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
		case f[0] == "require" && len(f) >= 2 && f[1] == "(":
			inBlock = true
		case inBlock && f[0] == ")":
			inBlock = false
		case f[0] == "require" && len(f) >= 3 && f[1] == mod:
			return f[2]
		case inBlock && len(f) >= 2 && f[0] == mod:
			return f[1]
		}
	}
	return ""
}

var (
	portsMu     sync.Mutex
	portsHanded = map[int]bool{}
)

// FreePort returns a TCP port that was free on 127.0.0.1 a moment ago. The
// kernel may hand the same port out again once it is closed, so ports already
// returned in this process are skipped; servers that still lose the race are
// restarted on another port by the Start functions.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatalf("e2eutil: %v", err)
	}
	return port
}

func freePort() (int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("find a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if !portsHanded[port] {
			portsHanded[port] = true
			return port, nil
		}
	}
	return 0, errors.New("find a free port: every port offered was already handed out")
}

// process is one child server whose output goes to a log file.
type process struct {
	name    string
	path    string
	args    []string
	logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed once the child has exited and been reaped
}

func (p *process) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running() {
		return fmt.Errorf("start %s: already running", p.name)
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("start %s: open log: %w", p.name, err)
	}
	defer func() { _ = logf.Close() }() // the child holds its own descriptor
	_, _ = fmt.Fprintf(logf, "=== %s %s %s\n", time.Now().Format(time.RFC3339Nano), p.path, strings.Join(p.args, " "))
	cmd := exec.Command(p.path, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	return nil
}

// running reports whether the child is alive; callers hold mu.
func (p *process) running() bool {
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// exited returns a channel closed when the current child exits.
func (p *process) exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return p.done
}

// stop sends sig and waits for the child; after grace it is killed outright.
func (p *process) stop(sig os.Signal, grace time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

func (p *process) kill() { p.stop(os.Kill, time.Minute) }

// logTail returns at most the last maxBytes of the log, cut at a line start.
func (p *process) logTail(maxBytes int64) string {
	f, err := os.Open(p.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(log unreadable: %v)", err)
	}
	if off := st.Size() - maxBytes; off > 0 {
		if _, err := f.Seek(off, 0); err != nil {
			return fmt.Sprintf("(log unreadable: %v)", err)
		}
		// Drop the partial first line.
		r := bufio.NewReader(f)
		_, _ = r.ReadString('\n')
		var b strings.Builder
		b.WriteString("[...]\n")
		_, _ = r.WriteTo(&b)
		return b.String()
	}
	var b strings.Builder
	_, _ = bufio.NewReader(f).WriteTo(&b)
	return b.String()
}

const logTailBytes = 16 << 10

// cleanup kills the child at the end of the test and prints its log if the
// test failed. Register it after t.TempDir so it runs before the directory goes.
func (p *process) cleanup(t testing.TB) {
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("e2eutil: %s log (%s):\n%s", p.name, p.logPath, p.logTail(logTailBytes))
		}
	})
}

// waitReady polls check until it succeeds, the child exits, or timeout passes.
func (p *process) waitReady(timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	exited := p.exited()
	var last error
	for {
		if last = check(); last == nil {
			return nil
		}
		select {
		case <-exited:
			return &exitedEarlyError{name: p.name, tail: p.logTail(4 << 10)}
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v (last check: %w); its log follows at the end of the test", p.name, timeout, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// exitedEarlyError keeps the log tail for portTaken; the log itself is
// printed once, by cleanup, when the test fails.
type exitedEarlyError struct{ name, tail string }

func (e *exitedEarlyError) Error() string {
	return e.name + " exited before it was ready; its log follows at the end of the test"
}

// portTaken tells whether a start failed because another process took the
// port between FreePort and the server's bind.
func portTaken(err error) bool {
	var ee *exitedEarlyError
	return errors.As(err, &ee) && strings.Contains(strings.ToLower(ee.tail), "address already in use")
}

const startAttempts = 3

// lookBinary resolves a binary from an environment override or a default path
// (searched in PATH when it has no slash); hint says how to get it.
func lookBinary(t testing.TB, envVar, def, hint string) string {
	t.Helper()
	if v := os.Getenv(envVar); v != "" {
		def = v
	}
	path, err := exec.LookPath(def)
	if err != nil {
		t.Fatalf("e2eutil: %s not found (%v): %s, or set %s to its path", def, err, hint, envVar)
	}
	return path
}
