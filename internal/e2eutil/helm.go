package e2eutil

import (
	"path/filepath"
	"testing"
)

// helmModule is the module tools/helm builds helm from.
const helmModule = "helm.sh/helm/v4"

// helmGoMod is the module that builds helm.
const helmGoMod = "tools/helm/go.mod"

// HelmVersion returns the helm version tools/helm/go.mod requires, e.g.
// v4.3.2: the binary is cached under that name.
func HelmVersion(t testing.TB) string {
	t.Helper()
	return requiredVersion(t, helmGoMod, helmModule)
}

// HelmBinary returns the path of helm (.cache/helm-<version>/helm, or $HELM),
// or fails the test saying how to build it.
func HelmBinary(t testing.TB) string {
	t.Helper()
	dir, v := toolDir(t, "helm", helmGoMod, helmModule)
	return lookBinary(t, "HELM", filepath.Join(dir, "helm"), "run `make helm-tool` (builds helm "+v+" into "+dir+")")
}
