package engine

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// The proxy pushes only to backends of its own engine's release; the
// release is derived from the module version in the build.
func TestEngineRelease(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "github.com/prometheus/prometheus").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	// v0.316.0 → 3.16
	parts := strings.Split(strings.TrimSpace(string(out)), ".")
	minor, err := strconv.Atoi(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	want := strconv.Itoa(minor/100) + "." + strconv.Itoa(minor%100)
	if engineRelease != want {
		t.Fatalf("engine release %q, want %q", engineRelease, want)
	}
	for v, ok := range map[string]bool{want + ".0": true, want: true, want + "1.0": false, "2.42.0": false, "": false} {
		if sameEngine(v) != ok {
			t.Errorf("sameEngine(%q) = %v", v, !ok)
		}
	}
}
