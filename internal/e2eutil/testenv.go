// Package e2eutil starts real servers (Prometheus, promtool backfills, Redis) for tests,
// on 127.0.0.1 with free ports, and tears everything down through t.Cleanup.
// What needs no testing.TB (child processes, ports, go.mod versions, tool
// paths) lives in e2ehost, which the benchmark binary shares; the helpers
// here fail the test on its errors.
package e2eutil

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil/e2ehost"
)

// RepoRoot returns the directory holding the project's go.mod, found by walking
// up from the working directory (go test runs in the package's directory).
func RepoRoot(t testing.TB) string {
	t.Helper()
	root, err := e2ehost.RepoRootFromWorkDir()
	if err != nil {
		t.Fatalf("e2eutil: %v", err)
	}
	return root
}

// requiredVersion is the version of module that the go.mod at rel (a
// slash-separated path below the repository root) requires.
func requiredVersion(t testing.TB, rel, module string) string {
	t.Helper()
	v, err := e2ehost.RequiredVersion(filepath.Join(RepoRoot(t), filepath.FromSlash(rel)), module)
	if err != nil {
		t.Fatalf("e2eutil: %v", err)
	}
	return v
}

// toolDir is e2ehost.ToolDir below the repository root.
func toolDir(t testing.TB, name, goMod, module string) (dir, version string) {
	t.Helper()
	dir, version, err := e2ehost.ToolDir(RepoRoot(t), name, goMod, module)
	if err != nil {
		t.Fatalf("e2eutil: %v", err)
	}
	return dir, version
}

// FreePort returns a TCP port that was free on 127.0.0.1 a moment ago and
// not handed out before in this process; servers that still lose the race
// are restarted on another port by the Start functions.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := e2ehost.FreePort()
	if err != nil {
		t.Fatalf("e2eutil: %v", err)
	}
	return port
}

const logTailBytes = 16 << 10

// cleanup kills the child at the end of the test, lets go of a port held
// for a restart that did not come, and prints the child's log if the test
// failed. Register it after t.TempDir so it runs before the directory goes.
func cleanup(t testing.TB, p *e2ehost.Process) {
	t.Cleanup(func() {
		p.Kill()
		p.LetGoOfPort()
		if t.Failed() {
			t.Logf("e2eutil: %s log (%s):\n%s", p.Name, p.LogPath, p.LogTail(logTailBytes))
		}
	})
}

// fatalStart fails the test for a server that did not start; the log itself
// is printed once, by cleanup.
func fatalStart(t testing.TB, err error) {
	t.Helper()
	var ne *e2ehost.NotReadyError
	if errors.As(err, &ne) {
		t.Fatalf("e2eutil: %v; its log follows at the end of the test", err)
	}
	t.Fatalf("e2eutil: %v", err)
}

const startAttempts = 3

// lookBinary resolves a binary from an environment override or a default path
// (searched in PATH when it has no slash); hint says how to get it.
func lookBinary(t testing.TB, envVar, def, hint string) string {
	t.Helper()
	path, err := e2ehost.LookBinary(envVar, def, hint)
	if err != nil {
		t.Fatalf("e2eutil: %v", err)
	}
	return path
}
