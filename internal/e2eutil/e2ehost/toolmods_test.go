package e2ehost

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// toolModules are the tool modules whose builds share packages with the
// proxy's test build and with each other (client-go, grpc, OpenTelemetry,
// x/net, ...). The Go build cache shares a compiled package only when its
// version and the versions of everything below it are the same, so one
// module at two versions recompiles all that depends on it: on a fresh
// machine that was a third of what `make test` compiled.
var toolModules = []string{"tools/kube-apiserver", "tools/helm", "tools/etcd"}

func TestToolModulesShareDependencyVersions(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root, err := RepoRoot(wd)
	if err != nil {
		t.Fatal(err)
	}
	versions := map[string]map[string]string{} // module → go.mod → version
	for _, dir := range append([]string{"."}, toolModules...) {
		data, err := os.ReadFile(filepath.Join(root, dir, "go.mod"))
		if err != nil {
			t.Fatal(err)
		}
		for mod, v := range requiredVersions(string(data)) {
			if versions[mod] == nil {
				versions[mod] = map[string]string{}
			}
			versions[mod][filepath.Join(dir, "go.mod")] = v
		}
	}
	var mismatched []string
	for mod, byFile := range versions {
		seen := map[string]bool{}
		for _, v := range byFile {
			seen[v] = true
		}
		if len(seen) < 2 {
			continue
		}
		var parts []string
		for file, v := range byFile {
			parts = append(parts, file+" "+v)
		}
		sort.Strings(parts)
		mismatched = append(mismatched, mod+": "+strings.Join(parts, ", "))
	}
	sort.Strings(mismatched)
	if len(mismatched) > 0 {
		t.Errorf("modules required at different versions; raise the lower ones (go get MODULE@VERSION in that folder) so the builds share compiled packages:\n  %s",
			strings.Join(mismatched, "\n  "))
	}
}

func TestRequiredVersions(t *testing.T) {
	got := requiredVersions(`module x

require a.io/one v1.2.0

require (
	b.io/two v0.3.0 // indirect
	k8s.io/api v0.0.0
	k8s.io/gone v0.0.0
)

replace (
	k8s.io/api => k8s.io/api v0.37.2
	k8s.io/gone => ../gone
)
`)
	want := map[string]string{"a.io/one": "v1.2.0", "b.io/two": "v0.3.0", "k8s.io/api": "v0.37.2"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for m, v := range want {
		if got[m] != v {
			t.Errorf("%s: got %q, want %q", m, got[m], v)
		}
	}
}

// requiredVersions reads a go.mod's require lines, with a replace by
// another version taking the place of the required one; a module replaced
// by a directory is left out (nothing of it is shared).
func requiredVersions(gomod string) map[string]string {
	out := map[string]string{}
	replaced := map[string]string{}
	block := ""
	for _, line := range strings.Split(gomod, "\n") {
		line, _, _ = strings.Cut(line, "//")
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
			continue
		case len(f) == 2 && f[1] == "(":
			block = f[0]
			continue
		case f[0] == ")":
			block = ""
			continue
		}
		directive := block
		if directive == "" {
			directive, f = f[0], f[1:]
		}
		switch {
		case directive == "require" && len(f) == 2:
			out[f[0]] = f[1]
		case directive == "replace" && len(f) >= 3 && f[1] == "=>":
			if len(f) == 4 {
				replaced[f[0]] = f[3]
			} else {
				replaced[f[0]] = ""
			}
		}
	}
	for m, v := range replaced {
		if _, ok := out[m]; !ok {
			continue
		}
		if v == "" {
			delete(out, m)
		} else {
			out[m] = v
		}
	}
	return out
}
