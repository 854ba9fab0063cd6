package harness

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil/e2ehost"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/fsutil"
)

// server is a running child that answers HTTP on 127.0.0.1.
type server struct {
	proc *e2ehost.Process
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
	s := &server{Name: name, proc: &e2ehost.Process{Name: name, Path: bin, LogPath: filepath.Join(dir, "prometheus.log")}}
	procs.add(s.proc)
	err := s.proc.StartOnFreePort(startAttempts, func(port int) error {
		s.URL = "http://127.0.0.1:" + strconv.Itoa(port)
		s.proc.Args = e2ehost.PrometheusArgs(cfgFile, data, "127.0.0.1:"+strconv.Itoa(port), true)
		return nil
	}, 2*time.Minute, s.ready("/-/ready"))
	if err != nil {
		return nil, e2ehost.WithLog(err)
	}
	return s, nil
}

var readyClient = &http.Client{Timeout: 2 * time.Second}

// ready checks that path answers 200; it reads s.URL when called, so it
// follows the port StartOnFreePort picks.
func (s *server) ready(path string) func() error {
	return func() error { return e2ehost.HTTPReady(readyClient, s.URL+path, "")() }
}

// stop asks the server to stop and kills it after grace.
func (s *server) stop(grace time.Duration) { s.proc.Stop(syscall.SIGTERM, grace) }

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
	dir := filepath.Join(workDir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	s := &server{Name: name, Role: "proxy", proc: &e2ehost.Process{Name: name, Path: bin, LogPath: filepath.Join(dir, "proxy.log")}}
	procs.add(s.proc)
	cfgFile := filepath.Join(dir, "config.yaml")
	s.cacheSection = kind.caching
	for {
		if err := os.WriteFile(cfgFile, []byte(proxyConfig(groups, kind, s.cacheSection)), 0o644); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		err := s.proc.StartOnFreePort(startAttempts, func(port int) error {
			s.URL = "http://127.0.0.1:" + strconv.Itoa(port)
			s.proc.Args = []string{"--config=" + cfgFile, "--listen-address=127.0.0.1:" + strconv.Itoa(port), "--log-level=warn"}
			return nil
		}, time.Minute, s.ready("/ready"))
		var ne *e2ehost.NotReadyError
		switch {
		case err == nil:
			return s, nil
		case s.cacheSection && errors.As(err, &ne) && ne.Exited && strings.Contains(ne.Tail, "cache"):
			s.cacheSection = false
		default:
			return nil, e2ehost.WithLog(err)
		}
	}
}
