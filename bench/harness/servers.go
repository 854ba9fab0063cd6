package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/fsutil"
)

const modulePath = "github.com/ethos-io/prometheus-multi-tenant-proxy"

// FindRepoRoot walks up from the working directory to the project's go.mod.
func FindRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repository root: %w", err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && goModField(string(b), "module") == modulePath {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("find repository root: no go.mod of %s above the working directory", modulePath)
		}
		dir = parent
	}
}

// goModField returns the first word after key on a line of go.mod, e.g. the
// module path, or the version of a required module (key = module path).
func goModField(goMod, key string) string {
	for _, line := range strings.Split(goMod, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "require" {
			f = f[1:]
		}
		if len(f) >= 2 && f[0] == key {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}

// defaultPrometheusDir is where `make tools` builds Prometheus and promtool
// from the module version the proxy links.
func defaultPrometheusDir(root string) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return "", err
	}
	v := goModField(string(b), "github.com/prometheus/prometheus")
	if v == "" {
		return "", errors.New("go.mod does not require github.com/prometheus/prometheus")
	}
	return filepath.Join(root, ".cache", "prometheus-"+v), nil
}

func checkBinary(path, hint string) error {
	if st, err := os.Stat(path); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is missing or not executable: %s", path, hint)
	}
	return nil
}

// buildProxy compiles cmd/proxy into cacheDir. It builds to a temporary name
// and renames, so a run already using the binary is not disturbed.
func buildProxy(ctx context.Context, root, cacheDir string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("build proxy: the go command is needed on PATH: %w", err)
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("build proxy: %w", err)
	}
	out := filepath.Join(cacheDir, "prometheus-multi-tenant-proxy")
	tmp := fmt.Sprintf("%s.tmp-%d", out, os.Getpid())
	// The version names the tree measured in the report.
	version := "dev"
	if b, err := exec.CommandContext(ctx, "git", "-C", root, "describe", "--tags", "--always", "--dirty").Output(); err == nil {
		version = strings.TrimSpace(string(b))
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-ldflags", "-X main.version="+version, "-o", tmp, "./cmd/proxy")
	cmd.Dir = root
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if b, err := cmd.CombinedOutput(); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("go build ./cmd/proxy: %w\n%s", err, lastBytes(b, 4<<10))
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", fmt.Errorf("build proxy: %w", err)
	}
	return out, nil
}

// server is a running child that answers HTTP on 127.0.0.1.
type server struct {
	*proc
	Name string
	URL  string
	// Role is "backend", "reference" or "proxy" in the memory table.
	Role string
	// cacheSection tells whether a proxy's config carried a `cache` section.
	cacheSection bool
	// Target and Concurrency: the uncached configuration and level a proxy
	// instance was started for (empty for the others).
	Target      string
	Concurrency int
}

// group is one backend as the proxy's static discovery names it. cluster,
// when set, is the group's configured `labels: {cluster: …}`: the value
// every series of the shard stores, which tells the proxy the groups are
// disjoint. The series store it, so answers stay the reference's.
type group struct{ name, url, cluster string }

const startAttempts = 3

// startPrometheus copies blocks into a fresh data directory below workDir and
// serves them with an empty scrape configuration.
func startPrometheus(bin, name, blocks, workDir string, procs *procSet) (*server, error) {
	dir := filepath.Join(workDir, name)
	data := filepath.Join(dir, "data")
	if err := fsutil.CopyTree(blocks, data); err != nil {
		return nil, fmt.Errorf("%s: copy blocks: %w", name, err)
	}
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte("scrape_configs: []\n"), 0o644); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var lastErr error
	for range startAttempts {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		p, err := startProc(name, filepath.Join(dir, "prometheus.log"), bin,
			"--config.file="+cfgFile,
			"--storage.tsdb.path="+data,
			"--storage.tsdb.retention.time=100y", // the data is months old
			"--web.listen-address="+addr,
			// The proxy's engine parses with experimental functions on; the
			// reference must accept the same queries.
			"--enable-feature=promql-experimental-functions",
		)
		if err != nil {
			return nil, err
		}
		procs.add(p)
		s := &server{proc: p, Name: name, URL: "http://" + addr}
		if lastErr = p.waitReady(2*time.Minute, httpOK(s.URL+"/-/ready")); lastErr == nil {
			return s, nil
		}
		p.stop(5 * time.Second)
		if !portTaken(lastErr) {
			break
		}
	}
	return nil, lastErr
}

// proxyKind is how a proxy instance is configured.
type proxyKind struct {
	caching, pushDown bool
	// reassociate sets `float_sums: reassociate` (with pushDown): sums and
	// means combined across groups, equal to the reference within rounding.
	reassociate bool
}

// proxyConfig is the YAML the proxy runs with. withCacheSection adds the
// `cache` section; builds of the proxy that do not know it refuse unknown
// keys, so startProxy retries without it. Push-down is always named: off,
// or on with the label that proves the groups disjoint and the float_sums
// asked.
func proxyConfig(groups []group, kind proxyKind, withCacheSection bool) string {
	var b strings.Builder
	b.WriteString("discovery:\n  static:\n")
	for _, g := range groups {
		fmt.Fprintf(&b, "    - name: %s\n      urls: [%q]\n", g.name, g.url)
		if g.cluster != "" {
			fmt.Fprintf(&b, "      labels: {cluster: %q}\n", g.cluster)
		}
	}
	fmt.Fprintf(&b, "proxy:\n  enable_caching: %t\n  enable_request_logging: false\n", kind.caching)
	if kind.caching && withCacheSection {
		b.WriteString("cache:\n  backend: memory\n")
	}
	// Named either way: push-down is on by default.
	if kind.pushDown {
		sums := "exact"
		if kind.reassociate {
			sums = "reassociate"
		}
		fmt.Fprintf(&b, "engine:\n  push_down:\n    enabled: true\n    label: cluster\n    float_sums: %s\n", sums)
	} else {
		b.WriteString("engine:\n  push_down:\n    enabled: false\n")
	}
	return b.String()
}

// startProxy runs the proxy binary over the backends and waits for /ready.
func startProxy(bin, name, workDir string, groups []group, kind proxyKind, procs *procSet) (*server, error) {
	caching := kind.caching
	dir := filepath.Join(workDir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	withCache := true
	var lastErr error
	for attempt := 0; attempt < startAttempts+1; attempt++ {
		cfgFile := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(cfgFile, []byte(proxyConfig(groups, kind, withCache)), 0o644); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		p, err := startProc(name, filepath.Join(dir, "proxy.log"), bin,
			"--config="+cfgFile, "--listen-address="+addr, "--log-level=warn")
		if err != nil {
			return nil, err
		}
		procs.add(p)
		s := &server{proc: p, Name: name, URL: "http://" + addr, Role: "proxy", cacheSection: caching && withCache}
		if lastErr = p.waitReady(time.Minute, httpOK(s.URL+"/ready")); lastErr == nil {
			return s, nil
		}
		p.stop(5 * time.Second)
		var ee *exitedError
		switch {
		case caching && withCache && errors.As(lastErr, &ee) && strings.Contains(ee.log, "cache"):
			withCache = false
		case !portTaken(lastErr):
			return nil, lastErr
		}
	}
	return nil, lastErr
}

var readyClient = &http.Client{Timeout: 2 * time.Second}

func httpOK(url string) func() error {
	return func() error {
		resp, err := readyClient.Get(url)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}
