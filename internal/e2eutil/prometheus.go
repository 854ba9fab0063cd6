package e2eutil

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil/e2ehost"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/fsutil"
)

// Kind is a Prometheus major version; real fleets mix them.
type Kind int

const (
	// V3 is Prometheus built from the github.com/prometheus/prometheus module
	// version in go.mod, so it matches the library the proxy links.
	V3 Kind = iota
	// V2 is Prometheus 2.x (Debian's 2.42 by default).
	V2
	// V3LTS is Prometheus of the 3.5 LTS line, built from the
	// github.com/prometheus/prometheus module version that
	// tools/prometheus-lts/go.mod requires (v0.305.x): the other release
	// line push-down is sent to.
	V3LTS
)

func (k Kind) String() string {
	switch k {
	case V3:
		return "v3"
	case V2:
		return "v2"
	case V3LTS:
		return "v3.5"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// PrometheusModuleVersion returns the version of github.com/prometheus/prometheus
// required by the project's go.mod, e.g. v0.316.0.
func PrometheusModuleVersion(t testing.TB) string {
	t.Helper()
	return requiredVersion(t, "go.mod", e2ehost.PrometheusModule)
}

func v3Dir(t testing.TB) string {
	t.Helper()
	dir, _ := toolDir(t, "prometheus", "go.mod", e2ehost.PrometheusModule)
	return dir
}

// ltsGoMod is the module that builds the LTS server, apart from the proxy's go.mod.
const ltsGoMod = "tools/prometheus-lts/go.mod"

// PrometheusLTSModuleVersion returns the version of github.com/prometheus/prometheus
// that tools/prometheus-lts/go.mod requires, e.g. v0.305.1 (Prometheus 3.5.1).
func PrometheusLTSModuleVersion(t testing.TB) string {
	t.Helper()
	return requiredVersion(t, ltsGoMod, e2ehost.PrometheusModule)
}

func v3LTSDir(t testing.TB) string {
	t.Helper()
	dir, _ := toolDir(t, "prometheus", ltsGoMod, e2ehost.PrometheusModule)
	return dir
}

// ltsRelease is the release a Prometheus module version stands for
// (v0.305.1 → "3.5.1"), as `prometheus --version` prints it.
func ltsRelease(moduleVersion string) string {
	parts := strings.SplitN(strings.TrimPrefix(moduleVersion, "v"), ".", 3)
	if len(parts) != 3 {
		return ""
	}
	minor, err := strconv.Atoi(parts[1])
	if err != nil {
		return ""
	}
	return strconv.Itoa(minor/100) + "." + strconv.Itoa(minor%100) + "." + parts[2]
}

// PrometheusBinary returns the path of the prometheus binary of kind, or fails
// the test saying how to get it. Overrides: PROMETHEUS_V3, PROMETHEUS_V2,
// PROMETHEUS_V3LTS.
func PrometheusBinary(t testing.TB, kind Kind) string {
	t.Helper()
	switch kind {
	case V3:
		return lookBinary(t, "PROMETHEUS_V3", filepath.Join(v3Dir(t), "prometheus"),
			"run `make tools` (builds Prometheus "+PrometheusModuleVersion(t)+")")
	case V2:
		path := lookBinary(t, "PROMETHEUS_V2", "/usr/bin/prometheus",
			"run `apt-get install prometheus` (Prometheus 2.42)")
		checkMajorVersion(t, path, "2.")
		return path
	case V3LTS:
		mv := PrometheusLTSModuleVersion(t)
		path := lookBinary(t, "PROMETHEUS_V3LTS", filepath.Join(v3LTSDir(t), "prometheus"),
			"run `make tools` (builds Prometheus "+mv+" from tools/prometheus-lts)")
		// The release line, not the patch: an override may be any 3.5.x.
		release := ltsRelease(mv)
		i := strings.LastIndexByte(release, '.')
		if i < 0 {
			t.Fatalf("e2eutil: %s: %s is not a Prometheus module version (v0.MMM.P)", ltsGoMod, mv)
		}
		checkMajorVersion(t, path, release[:i+1])
		return path
	}
	t.Fatalf("e2eutil: unknown Prometheus kind %v", kind)
	return ""
}

// PromtoolBinary returns the path of the promtool matching the v3 server
// (override: PROMTOOL), or fails the test saying how to get it.
func PromtoolBinary(t testing.TB) string {
	t.Helper()
	return lookBinary(t, "PROMTOOL", filepath.Join(v3Dir(t), "promtool"),
		"run `make tools` (builds promtool "+PrometheusModuleVersion(t)+")")
}

var versionChecked sync.Map // binary path → error (nil when it is the expected version)

// checkMajorVersion guards against a PATH or override that points the V2 slot
// at a 3.x binary (or the V3LTS slot at another release line), which would
// silently make the mixed-fleet tests one-sided.
func checkMajorVersion(t testing.TB, path, prefix string) {
	t.Helper()
	v, ok := versionChecked.Load(path)
	if !ok {
		out, err := exec.Command(path, "--version").CombinedOutput()
		switch {
		case err != nil:
			err = fmt.Errorf("%s --version: %w: %s", path, err, out)
		case !strings.Contains(string(out), "version "+prefix):
			err = fmt.Errorf("%s is not Prometheus %sx: %s", path, prefix, firstLine(string(out)))
		}
		v, _ = versionChecked.LoadOrStore(path, err)
	}
	if err, _ := v.(error); err != nil {
		t.Fatalf("e2eutil: %v", err)
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// Option changes how StartPrometheus runs the server.
type Option func(*promOptions)

type promOptions struct {
	config         string
	name           string
	flags          []string
	readyTimeout   time.Duration
	externalLabels map[string]string
	blocks         string
	files          map[string]string
	tracing        string
}

// WithExternalLabels sets global.external_labels in the server's
// configuration: remote read adds them to every series it returns.
func WithExternalLabels(lbls map[string]string) Option {
	return func(o *promOptions) { o.externalLabels = lbls }
}

// WithConfig replaces the server's configuration file (by default one that
// scrapes nothing), e.g. to scrape a target so metadata exists.
func WithConfig(yaml string) Option { return func(o *promOptions) { o.config = yaml } }

// WithBlocks serves a copy of the TSDB blocks in dir (e.g. a bench
// dataset's shard) in addition to any backfilled data.
func WithBlocks(dir string) Option { return func(o *promOptions) { o.blocks = dir } }

// WithName labels the server in logs and failure messages (e.g. "shard-1").
func WithName(name string) Option { return func(o *promOptions) { o.name = name } }

// WithFlags adds command-line flags (e.g. "--query.lookback-delta=1m").
func WithFlags(flags ...string) Option {
	return func(o *promOptions) { o.flags = append(o.flags, flags...) }
}

// WithFiles writes files (e.g. rule files, by name) next to the server's
// configuration, so relative rule_files paths in WithConfig resolve to them.
func WithFiles(files map[string]string) Option {
	return func(o *promOptions) { o.files = files }
}

// WithTracing has the server export its traces over OTLP/gRPC, without
// TLS, to endpoint (host:port). It traces only requests that arrive with a
// sampled traceparent, so its spans are those of the proxy's calls.
func WithTracing(endpoint string) Option { return func(o *promOptions) { o.tracing = endpoint } }

// WithReadyTimeout bounds the wait for /-/ready (default 60 s; large data
// takes longer to open).
func WithReadyTimeout(d time.Duration) Option { return func(o *promOptions) { o.readyTimeout = d } }

// Prometheus is a Prometheus server child process serving backfilled data.
type Prometheus struct {
	// URL is the base URL, http://127.0.0.1:PORT.
	URL string
	// Addr is 127.0.0.1:PORT.
	Addr string
	Kind Kind
	// DataDir is the server's --storage.tsdb.path.
	DataDir string

	t    testing.TB
	opts promOptions
	proc *e2ehost.Process
}

// StartPrometheus backfills openMetrics (nil: no data) with promtool, starts a
// Prometheus of kind on it with an empty scrape configuration, and waits until
// /-/ready answers. The server is killed when the test ends.
func StartPrometheus(t testing.TB, kind Kind, openMetrics io.Reader, opts ...Option) *Prometheus {
	t.Helper()
	o := promOptions{readyTimeout: time.Minute}
	for _, opt := range opts {
		opt(&o)
	}
	if o.name == "" {
		o.name = "prometheus-" + kind.String()
	}
	bin := PrometheusBinary(t, kind)

	dir := t.TempDir()
	p := &Prometheus{Kind: kind, DataDir: filepath.Join(dir, "data"), t: t, opts: o}
	if err := os.Mkdir(p.DataDir, 0o755); err != nil {
		t.Fatalf("e2eutil: %v", err)
	}
	if openMetrics != nil {
		if blocks := backfill(t, openMetrics); blocks != "" {
			if err := fsutil.CopyTree(blocks, p.DataDir); err != nil {
				t.Fatalf("e2eutil: copy blocks into %s: %v", o.name, err)
			}
		}
	}
	if o.blocks != "" {
		if err := fsutil.CopyTree(o.blocks, p.DataDir); err != nil {
			t.Fatalf("e2eutil: copy blocks into %s: %v", o.name, err)
		}
	}
	configFile := filepath.Join(dir, "prometheus.yml")
	// Unless told otherwise nothing is scraped: the backfilled data is all the server holds.
	config := "scrape_configs: []\n"
	if o.config != "" {
		config = o.config
	}
	if len(o.externalLabels) > 0 {
		if strings.Contains(config, "global:") {
			t.Fatalf("e2eutil: %s: WithExternalLabels and a WithConfig holding global: conflict; put external_labels in the config", o.name)
		}
		config += "global:\n  external_labels:\n"
		for _, k := range slices.Sorted(maps.Keys(o.externalLabels)) {
			config += "    " + k + ": " + strconv.Quote(o.externalLabels[k]) + "\n"
		}
	}
	if o.tracing != "" {
		if strings.Contains(config, "tracing:") {
			t.Fatalf("e2eutil: %s: WithTracing and a WithConfig holding tracing: conflict", o.name)
		}
		config += "tracing:\n  endpoint: " + strconv.Quote(o.tracing) + "\n  client_type: grpc\n  insecure: true\n  sampling_fraction: 0\n"
	}
	if err := os.WriteFile(configFile, []byte(config), 0o644); err != nil {
		t.Fatalf("e2eutil: %v", err)
	}
	for name, body := range o.files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatalf("e2eutil: %v", err)
		}
	}

	p.proc = &e2ehost.Process{Name: o.name, Path: bin, LogPath: filepath.Join(dir, "prometheus.log")}
	cleanup(t, p.proc)
	err := p.proc.StartOnFreePort(startAttempts, func(port int) error {
		p.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		p.URL = "http://" + p.Addr
		p.proc.Name = o.name + " (" + p.URL + ")"
		// 2.42 has no experimental-functions switch worth matching: its
		// experimental functions differ anyway.
		p.proc.Args = e2ehost.PrometheusArgs(configFile, p.DataDir, p.Addr, kind != V2)
		p.proc.Args = append(p.proc.Args, o.flags...)
		return nil
	}, o.readyTimeout, p.ready())
	if err != nil {
		fatalStart(t, err)
	}
	return p
}

// ready is the server's readiness check; it reads p.URL when called, so it
// follows the port StartOnFreePort picks.
func (p *Prometheus) ready() func() error {
	client := &http.Client{Timeout: 2 * time.Second}
	return func() error { return e2ehost.HTTPReady(client, p.URL+"/-/ready", "")() }
}

// Stop shuts the server down gracefully (SIGTERM; SIGKILL after 10 s). Its
// port stays held for Restart.
func (p *Prometheus) Stop() { p.proc.StopHoldingPort(syscall.SIGTERM, 10*time.Second) }

// Kill ends the server at once with SIGKILL, as a crash would. Its port
// stays held for Restart.
func (p *Prometheus) Kill() { p.proc.StopHoldingPort(os.Kill, time.Minute) }

// Restart starts the server again on the same address and data; a running
// server is stopped first. The port was held since the stop; one taken
// before the hold is waited for, up to 15 s.
func (p *Prometheus) Restart() {
	p.t.Helper()
	p.Stop()
	if err := p.proc.RestartOnPort(p.opts.readyTimeout, p.ready()); err != nil {
		fatalStart(p.t, fmt.Errorf("restart: %w", err))
	}
}

// Log returns the end of the server's output.
func (p *Prometheus) Log() string { return p.proc.LogTail(logTailBytes) }

// Blocks from promtool are deterministic in content, so each distinct input is
// backfilled once per test binary and copied into every server's data dir.
var blockCache struct {
	mu      sync.Mutex
	dir     string
	entries map[string]*blockEntry
}

type blockEntry struct {
	done chan struct{}
	dir  string
	err  error
}

// backfill returns a directory of TSDB blocks holding openMetrics ("" for
// empty input, which promtool refuses). The directory is shared: callers must
// copy, never modify it.
func backfill(t testing.TB, openMetrics io.Reader) string {
	t.Helper()
	promtool := PromtoolBinary(t)

	// Spool to a file (promtool reads files) while hashing, so large inputs
	// never sit in memory.
	input := filepath.Join(t.TempDir(), "data.om")
	f, err := os.Create(input)
	if err != nil {
		t.Fatalf("e2eutil: backfill: %v", err)
	}
	h := sha256.New()
	size, err := io.Copy(io.MultiWriter(f, h), openMetrics)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("e2eutil: backfill: spool input: %v", err)
	}
	if size == 0 {
		return ""
	}
	h.Write([]byte(promtool))
	key := hex.EncodeToString(h.Sum(nil))[:32]

	blockCache.mu.Lock()
	if blockCache.entries == nil {
		blockCache.entries = map[string]*blockEntry{}
	}
	e, ok := blockCache.entries[key]
	if !ok {
		e = &blockEntry{done: make(chan struct{})}
		blockCache.entries[key] = e
	}
	blockCache.mu.Unlock()

	if ok {
		<-e.done
	} else {
		e.dir, e.err = runPromtool(promtool, input, key)
		close(e.done)
	}
	if e.err != nil {
		t.Fatalf("e2eutil: backfill: %v", e.err)
	}
	return e.dir
}

func runPromtool(promtool, input, key string) (string, error) {
	root, err := blockCacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, key)
	out, err := exec.Command(promtool, "tsdb", "create-blocks-from", "openmetrics",
		"--max-block-duration=24h", input, dir).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("promtool tsdb create-blocks-from openmetrics: %w\n%s", err, e2ehost.LastBytes(out, 4<<10))
	}
	return dir, nil
}

const blockCachePrefix = "e2eutil-blocks-"

// blockCacheDir lives as long as the test binary. Nothing runs when a test
// binary exits, so each one sweeps the directories of binaries no longer alive
// (named by pid) instead.
func blockCacheDir() (string, error) {
	blockCache.mu.Lock()
	defer blockCache.mu.Unlock()
	if blockCache.dir != "" {
		return blockCache.dir, nil
	}
	tmp := os.TempDir()
	if old, err := filepath.Glob(filepath.Join(tmp, blockCachePrefix+"*")); err == nil {
		for _, d := range old {
			rest := strings.TrimPrefix(filepath.Base(d), blockCachePrefix)
			pidStr, _, _ := strings.Cut(rest, "-")
			if pid, err := strconv.Atoi(pidStr); err == nil && pid != os.Getpid() && !e2ehost.Alive(pid) {
				_ = os.RemoveAll(d)
			}
		}
	}
	dir, err := os.MkdirTemp(tmp, blockCachePrefix+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return "", fmt.Errorf("block cache: %w", err)
	}
	blockCache.dir = dir
	return dir, nil
}
