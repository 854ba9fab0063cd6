package e2eutil

import (
	"path/filepath"
	"testing"
)

// helmModule is the module tools/helm builds helm from.
const helmModule = "helm.sh/helm/v4"

// HelmVersion returns the helm version tools/helm/go.mod requires, e.g.
// v4.3.2: the binary is cached under that name.
func HelmVersion(t testing.TB) string {
	t.Helper()
	return requiredVersion(t, "tools/helm/go.mod", helmModule)
}

// HelmBinary returns the path of helm (.cache/helm-<version>/helm, or $HELM),
// or fails the test saying how to build it.
func HelmBinary(t testing.TB) string {
	t.Helper()
	v := HelmVersion(t)
	path := filepath.Join(RepoRoot(t), ".cache", "helm-"+v, "helm")
	return lookBinary(t, "HELM", path, "run `make helm-tool` (builds helm "+v+" into "+filepath.Dir(path)+")")
}
