package harness

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"testing"
	"time"
)

// spinForProfile keeps a CPU busy for d, so a profile has samples of it.
func spinForProfile(d time.Duration) float64 {
	x := 1.0
	for end := time.Now().Add(d); time.Now().Before(end); {
		for i := 0; i < 1000; i++ {
			x = x*1.0000001 + 1e-9
		}
	}
	return x
}

// TestMergeProfiles: two CPU profiles merge into one that pprof reads and
// that holds the samples of both.
func TestMergeProfiles(t *testing.T) {
	dir := t.TempDir()
	var files []string
	for _, name := range []string{"a.pprof", "b.pprof"} {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			t.Fatal(err)
		}
		if spinForProfile(300*time.Millisecond) <= 0 {
			t.Fatal("the spin computed nothing")
		}
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		files = append(files, f.Name())
	}
	out := filepath.Join(dir, "default.pgo")
	if err := mergeProfiles(context.Background(), out, files); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(out + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("the temporary file is left behind: %v", err)
	}
	top := func(file string) string {
		t.Helper()
		b, err := exec.Command("go", "tool", "pprof", "-top", file).CombinedOutput()
		if err != nil {
			t.Fatalf("go tool pprof -top %s: %v\n%s", file, err, b)
		}
		return string(b)
	}
	merged := top(out)
	if !strings.Contains(merged, "spinForProfile") {
		t.Fatalf("the merged profile lacks the profiled function:\n%s", merged)
	}
	// Each input's total is in the merged one: "Total samples = Xs".
	total := func(s string) time.Duration {
		i := strings.Index(s, "Total samples = ")
		if i < 0 {
			t.Fatalf("no total in:\n%s", s)
		}
		f := strings.Fields(s[i+len("Total samples = "):])[0]
		d, err := time.ParseDuration(f)
		if err != nil {
			t.Fatalf("total %q: %v", f, err)
		}
		return d
	}
	a, b, m := total(top(files[0])), total(top(files[1])), total(merged)
	if m != a+b {
		t.Errorf("merged total %v, want %v + %v", m, a, b)
	}
	if err := mergeProfiles(context.Background(), out, []string{filepath.Join(dir, "missing.pprof")}); err == nil {
		t.Error("merging a missing profile succeeded")
	}
}
