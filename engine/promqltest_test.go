package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/storage"
	promremote "github.com/prometheus/prometheus/storage/remote"
	"github.com/prometheus/prometheus/util/teststorage"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/remote"
)

// The PromQL test scripts of the Prometheus module the proxy imports, run
// with the fan-out as the engine's storage: each script's data is spread over
// three TSDBs, each behind Prometheus' own remote-read handler on a loopback
// listener, and every query reads through the proxy's Queryable. The engine
// is the scripts' own (promqltest's options), so any difference is the
// fan-out's: its remote reads, merge and series handling.

// splitMode says how a script's samples are spread over the backends.
type splitMode int

const (
	// bySeries puts every series whole in one backend (by label hash).
	bySeries splitMode = iota
	// bySeriesAndTime also moves a series to the next backend every
	// splitSpan, so series are merged across backends sample by sample.
	bySeriesAndTime
	// asGroupData keeps every sample in one backend and reads it as a
	// group's part evaluated by the proxy does (groupData): one replica's
	// remote read, the series as stored.
	asGroupData
)

const splitSpan = int64(150 * 1000) // 2m30s, in ms: most scripts have a sample every 1m or less

// notThroughRemoteRead lists the evals that cannot apply to any store read
// over remote read, by script and expression, with the reason. Each is still
// run on local storage (TestPromQLScriptsExcludedPassLocally) so the list
// cannot hide an eval that fails everywhere.
var notThroughRemoteRead = map[string]map[string]string{
	"native_histograms.test": {
		"eval instant at 5m sum(metric)":                                hintAtRangeStart,
		"eval instant at 5m avg(metric)":                                hintAtRangeStart,
		"eval instant at 3m sum_over_time(mixed[3m])":                   hintAtRangeStart,
		"eval instant at 3m avg_over_time(mixed[3m])":                   hintAtRangeStart,
		"eval instant at 11m histogram_count(sum_over_time(mixed[2m]))": hintAtRangeStart,
		"eval instant at 11m histogram_count(avg_over_time(mixed[2m]))": hintAtRangeStart,
	},
	"range_queries.test": {
		"eval instant at 2m some_metric[2m]": hintAtRangeStart,
	},
}

// hintAtRangeStart: remote read serves chunks from the TSDB's ChunkQuerier,
// which re-encodes the open head chunk from the query's start; the first
// histogram of the re-encoded chunk loses its counter-reset hint ("not_reset"
// becomes "unknown"). Values are equal; only the hint shown (or the warning
// about conflicting hints) differs, on any Prometheus read over remote read.
const hintAtRangeStart = "counter-reset hint of the first histogram in range is lost by the backend's chunk re-encoding"

// notAcrossTime lists evals that cannot apply when one series' samples are
// split over backends by time, with the reason.
var notAcrossTime = map[string]map[string]string{
	"native_histograms.test": {
		`eval instant at 3m sum(metric{type=~"counter.*"})`: hintAcrossBackends,
		`eval instant at 3m avg(metric{type=~"counter.*"})`: hintAcrossBackends,
	},
}

// hintAcrossBackends: where a series continues in another backend,
// storage.ChainedSeriesMerge (Prometheus' own merge, as in a Prometheus
// reading several remote-read endpoints) marks the first histogram after the
// switch "unknown", since it cannot know that nothing reset in between.
const hintAcrossBackends = "counter-reset hint is set to unknown by Prometheus' merge where a series continues in another backend"

// TestPromQLScriptsThroughFanout runs Prometheus' PromQL test scripts over
// three TSDBs behind remote read, read by the fan-out (spread by series,
// then by series and time), and over one read as a group's data is read
// when the proxy evaluates the group's part of a pushed query itself.
func TestPromQLScriptsThroughFanout(t *testing.T) {
	for _, mode := range []struct {
		name string
		mode splitMode
	}{{"by_series", bySeries}, {"by_series_and_time", bySeriesAndTime}, {"as_group_data", asGroupData}} {
		t.Run(mode.name, func(t *testing.T) {
			ng := promqltest.NewTestEngine(t, false, 0, promqltest.DefaultMaxSamplesPerQuery)
			for _, file := range scriptFiles(t) {
				t.Run(filepath.Base(file), func(t *testing.T) {
					skip := excluded(filepath.Base(file), mode.mode)
					script := withoutEvals(t, readScript(t, file), skip)
					promqltest.RunTestWithStorage(t, script, ng, func(tb testing.TB) storage.Storage {
						return newSpreadStorage(tb, mode.mode)
					})
				})
			}
		})
	}
}

// TestPromQLScriptsExcludedPassLocally runs the evals left out above on
// Prometheus' own test storage, where they must pass: what is excluded is
// what the fan-out cannot do, never what is broken anyway.
func TestPromQLScriptsExcludedPassLocally(t *testing.T) {
	ng := promqltest.NewTestEngine(t, false, 0, promqltest.DefaultMaxSamplesPerQuery)
	for _, file := range scriptFiles(t) {
		base := filepath.Base(file)
		skip := excluded(base, bySeriesAndTime)
		if len(skip) == 0 {
			continue
		}
		t.Run(base, func(t *testing.T) {
			script := onlyEvals(t, readScript(t, file), skip)
			promqltest.RunTestWithStorage(t, script, ng, func(tb testing.TB) storage.Storage {
				return promqltest.NewBuiltinTestStorage(tb)
			})
		})
	}
}

func excluded(file string, mode splitMode) map[string]string {
	out := map[string]string{}
	for expr, why := range notThroughRemoteRead[file] {
		out[expr] = why
	}
	if mode == bySeriesAndTime {
		for expr, why := range notAcrossTime[file] {
			out[expr] = why
		}
	}
	return out
}

// scriptFiles finds the scripts in the module cache: they are embedded in
// promqltest but not exported one by one.
func scriptFiles(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/prometheus/prometheus").Output()
	if err != nil {
		t.Fatalf("locating the Prometheus module (go list -m; run `go mod download`): %v", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "promql", "promqltest", "testdata")
	files, err := filepath.Glob(filepath.Join(dir, "*.test"))
	if err != nil || len(files) < 10 {
		t.Fatalf("PromQL test scripts in %s: found %d, err %v", dir, len(files), err)
	}
	return files
}

func readScript(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// evalBlocks cuts a script into blocks: an eval line with its expectations
// (up to the next blank line), or any other line. expr is the eval's
// expression ("" for other lines).
func evalBlocks(script string) (blocks []string, exprs []string) {
	lines := strings.Split(script, "\n")
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(l, "eval") {
			blocks, exprs = append(blocks, lines[i]), append(exprs, "")
			continue
		}
		j := i + 1
		for j < len(lines) && strings.TrimSpace(lines[j]) != "" {
			j++
		}
		blocks = append(blocks, strings.Join(lines[i:j], "\n"))
		exprs = append(exprs, l)
		i = j - 1
	}
	return blocks, exprs
}

// withoutEvals drops the evals whose eval line is a key of skip. Every key
// must be found, so the list stays in step with the scripts.
func withoutEvals(t *testing.T, script string, skip map[string]string) string {
	return filterEvals(t, script, skip, false)
}

// onlyEvals keeps the loads and clears and only the evals named in keep.
func onlyEvals(t *testing.T, script string, keep map[string]string) string {
	return filterEvals(t, script, keep, true)
}

func filterEvals(t *testing.T, script string, set map[string]string, keep bool) string {
	t.Helper()
	blocks, exprs := evalBlocks(script)
	seen := map[string]bool{}
	var out []string
	for i, b := range blocks {
		if exprs[i] == "" {
			out = append(out, b)
			continue
		}
		_, in := set[exprs[i]]
		seen[exprs[i]] = seen[exprs[i]] || in
		if in == keep {
			out = append(out, b)
		}
	}
	for k := range set {
		if !seen[k] {
			t.Fatalf("listed eval %q not found in the script", k)
		}
	}
	return strings.Join(out, "\n")
}

// spreadStorage is a storage.Storage whose appender spreads samples over
// three TSDBs and whose querier is the fan-out over their remote-read
// endpoints.
type spreadStorage struct {
	mode    splitMode
	dbs     []*teststorage.TestStorage
	servers []*httptest.Server
	fanout  *Fanout
	// group reads the one backend as groupData (asGroupData).
	group *remote.Client
}

func newSpreadStorage(tb testing.TB, mode splitMode) *spreadStorage {
	s := &spreadStorage{mode: mode}
	var groups []discovery.StaticGroup
	backends := 3
	if mode == asGroupData {
		backends = 1
	}
	for i := range backends {
		db := promqltest.NewBuiltinTestStorage(tb)
		h := promremote.NewReadHandler(nil, nil, db, func() config.Config { return config.Config{} }, 0, 1, 1<<20)
		mux := http.NewServeMux()
		mux.Handle("/api/v1/read", h)
		srv := httptest.NewServer(mux)
		s.dbs = append(s.dbs, db)
		s.servers = append(s.servers, srv)
		groups = append(groups, discovery.StaticGroup{Name: fmt.Sprintf("g%d", i), URLs: []string{srv.URL}})
	}
	b := &fakeBackends{groups: discovery.StaticGroups(groups), failed: map[string]int{}}
	f, err := NewFanout(b, FanoutOptions{PartialResponse: discovery.PartialAbort, Remote: remote.DefaultConfig()})
	if err != nil {
		tb.Fatal(err)
	}
	s.fanout = f
	if mode == asGroupData {
		c, err := remote.New(s.servers[0].URL, remote.DefaultConfig())
		if err != nil {
			tb.Fatal(err)
		}
		s.group = c
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

func (s *spreadStorage) backend(ls labels.Labels, t int64) int {
	h := ls.Hash()
	if s.mode == bySeriesAndTime {
		span := t / splitSpan
		if t < 0 {
			span-- // floor, so negative timestamps split the same way
		}
		h += uint64(span)
	}
	return int(h % uint64(len(s.dbs)))
}

func (s *spreadStorage) Querier(mint, maxt int64) (storage.Querier, error) {
	if s.group != nil {
		return groupData{c: s.group, failed: &readFailure{}}.Querier(mint, maxt)
	}
	return s.fanout.Querier(mint, maxt)
}

func (s *spreadStorage) ChunkQuerier(int64, int64) (storage.ChunkQuerier, error) {
	return nil, errors.New("not used by the engine")
}

func (s *spreadStorage) Appender(context.Context) storage.Appender {
	panic("the scripts load through AppenderV2")
}

func (s *spreadStorage) AppenderV2(ctx context.Context) storage.AppenderV2 {
	a := &spreadAppender{s: s}
	for _, db := range s.dbs {
		a.apps = append(a.apps, db.AppenderV2(ctx))
	}
	return a
}

func (s *spreadStorage) StartTime() (int64, error) { return math.MinInt64, nil }

func (s *spreadStorage) Close() error {
	if s.fanout == nil {
		return nil
	}
	s.fanout.Close()
	if s.group != nil {
		s.group.Close()
	}
	for _, srv := range s.servers {
		srv.Close()
	}
	var errs []error
	for _, db := range s.dbs {
		errs = append(errs, db.Close())
	}
	s.fanout = nil
	return errors.Join(errs...)
}

type spreadAppender struct {
	s    *spreadStorage
	apps []storage.AppenderV2
}

// Append routes each sample by its series (and time); refs of one TSDB mean
// nothing in another, so none are passed on.
func (a *spreadAppender) Append(_ storage.SeriesRef, ls labels.Labels, st, t int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram, opts storage.AppendV2Options) (storage.SeriesRef, error) {
	_, err := a.apps[a.s.backend(ls, t)].Append(0, ls, st, t, v, h, fh, opts)
	return 0, err
}

func (a *spreadAppender) Commit() error {
	var errs []error
	for _, app := range a.apps {
		errs = append(errs, app.Commit())
	}
	return errors.Join(errs...)
}

func (a *spreadAppender) Rollback() error {
	var errs []error
	for _, app := range a.apps {
		errs = append(errs, app.Rollback())
	}
	return errors.Join(errs...)
}

var _ promql.QueryEngine = (*promql.Engine)(nil)
