// Package e2ehost is what end-to-end runs need from the machine — the
// repository and its cached tools, free ports, child server processes and
// what they cost — without the testing package: e2eutil's test helpers and
// the benchmark binary share it, and the benchmark links neither testing
// nor client-go for it.
package e2ehost

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ModulePath identifies the repository's own go.mod, so a nested module (or
// a go.mod of a dependency checked out below the tree) is never taken for
// the root.
const ModulePath = "github.com/ethos-io/prometheus-multi-tenant-proxy"

// PrometheusModule is the module the proxy links and `make tools` builds
// the Prometheus servers from.
const PrometheusModule = "github.com/prometheus/prometheus"

// RepoRoot returns the directory holding the project's go.mod, found by
// walking up from dir.
func RepoRoot(dir string) (string, error) {
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && goModModule(string(data)) == ModulePath {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("find repository root: no go.mod of %s above %s", ModulePath, dir)
		}
		dir = parent
	}
}

// RepoRootFromWorkDir is RepoRoot from the working directory (go test runs
// in the package's directory, go run where it is called).
func RepoRootFromWorkDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repository root: %w", err)
	}
	return RepoRoot(dir)
}

// RequiredVersion returns the version of module that the go.mod at
// goModPath requires (e.g. v0.316.0).
func RequiredVersion(goModPath, module string) (string, error) {
	data, err := os.ReadFile(goModPath)
	if err != nil {
		return "", err
	}
	v := goModRequire(string(data), module)
	if v == "" {
		return "", fmt.Errorf("%s does not require %s", goModPath, module)
	}
	return v, nil
}

// ToolDir is where the Makefile caches a tool built from module, at the
// version that the go.mod at goMod (slash-separated, below root) requires:
// root/.cache/<name>-<version>. The version is returned too, for hints.
func ToolDir(root, name, goMod, module string) (dir, version string, err error) {
	version, err = RequiredVersion(filepath.Join(root, filepath.FromSlash(goMod)), module)
	if err != nil {
		return "", "", err
	}
	return filepath.Join(root, ".cache", name+"-"+version), version, nil
}

// PrometheusDir is where `make tools` builds prometheus and promtool from
// the Prometheus module version the proxy's go.mod requires.
func PrometheusDir(root string) (string, error) {
	dir, _, err := ToolDir(root, "prometheus", "go.mod", PrometheusModule)
	return dir, err
}

// LookBinary resolves a binary from the environment variable envVar (when
// named and set) or def (searched in PATH when it has no slash); hint says
// how to get it when it is missing.
func LookBinary(envVar, def, hint string) (string, error) {
	if envVar != "" {
		if v := os.Getenv(envVar); v != "" {
			def = v
		}
	}
	path, err := exec.LookPath(def)
	switch {
	case err == nil:
		return path, nil
	case envVar != "":
		return "", fmt.Errorf("%s not found (%w): %s, or set %s to its path", def, err, hint, envVar)
	default:
		return "", fmt.Errorf("%s not found (%w): %s", def, err, hint)
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

// goModRequire returns the version of module mod required by goMod, in
// either the single-line or the block form of require.
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

// PrometheusArgs are the flags of a Prometheus server over the TSDB in
// dataDir, with configFile, listening on addr. experimental turns on the
// experimental PromQL functions: the proxy's engine parses with them, and a
// server answering the same queries (a reference, a push-down target) must
// accept them too.
func PrometheusArgs(configFile, dataDir, addr string, experimental bool) []string {
	args := []string{
		"--config.file=" + configFile,
		"--storage.tsdb.path=" + dataDir,
		"--storage.tsdb.retention.time=100y", // test and benchmark data is months old
		"--web.listen-address=" + addr,
	}
	if experimental {
		args = append(args, "--enable-feature=promql-experimental-functions")
	}
	return args
}
