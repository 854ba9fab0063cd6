package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/plan"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/remote"
)

// The scripts again, in a mixed fleet: group g0 is a real Prometheus of
// the 3.5 LTS line, g1 and g2 are evaluated by the proxy's own engine as in
// TestPromQLScriptsThroughPushDown. A pushed query takes the production
// path to g0: groupJobs, one folded query (foldGroup), evaluatesAsProxy
// with the version the server reports, remote.Client.Query, split,
// fragmentSeries. So any way 3.5 evaluates differently that the
// compatibility table (releases.go) does not know shows up as a wrong
// combined answer; and g0's answer to the folded query is also compared
// bit for bit with the proxy's engine on the same data, which catches a
// difference the combination would hide.
//
// One LTS group, not three: that is the mixed fleet the table is for, and
// each script segment then costs one fresh server (3.5's head keeps
// tombstones of deleted series until it is compacted, hiding a series that
// a later segment writes again, so deleting between segments is unsound).
// The series are spread over the groups by hash, so every series of a
// script reaches 3.5 in one segment or another.

// ltsDiffers lists evals (file:line, their text) whose answer through a
// 3.5 group differs from the reference, with the reason. Each must still
// differ, so the list cannot hide anything else.
var ltsDiffers = map[string]struct{ eval, why string }{}

// ltsStats counts what happened to the scripts' evals in one mode.
type ltsStats struct {
	comparisonStats
	evals, pushed, toLTS, ltsAnswered int
	refused, skipped                  map[string]int
}

func newLTSStats() *ltsStats {
	return &ltsStats{refused: map[string]int{}, skipped: map[string]int{}}
}

// ltsSegment is a script segment with g0's data on a 3.5 server, started
// when the first pushed query needs it.
type ltsSegment struct {
	*scriptSegment
	prom    *e2eutil.Prometheus
	client  *remote.Client
	version string
}

// ltsFleet keeps the one 3.5 server of the current segment: the one
// before is killed when the next starts.
type ltsFleet struct {
	t       *testing.T
	cur     *ltsSegment
	starts  int
	samples int
}

func (f *ltsFleet) stop() {
	if f.cur != nil && f.cur.prom != nil {
		f.cur.client.Close()
		f.cur.prom.Kill()
		f.cur.prom = nil
	}
}

// server returns the 3.5 server holding g0's data of seg, starting it and
// writing the data on first use.
func (f *ltsFleet) server(seg *ltsSegment) *ltsSegment {
	t := f.t
	if seg.prom != nil {
		return seg
	}
	f.stop()
	f.cur = seg
	seg.load(t)
	series, n := storageSeries(t, seg.stores[0])
	seg.prom = e2eutil.StartPrometheus(t, e2eutil.V3LTS, nil, e2eutil.WithName("lts-g0"),
		// Native histograms are stored behind a flag in 3.5 (always since 3.8).
		e2eutil.WithFlags("--web.enable-remote-write-receiver", "--enable-feature=native-histograms"))
	f.starts++
	f.samples += n
	c, err := remote.New(seg.prom.URL, remote.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	seg.client = c
	ctx := context.Background()
	if seg.version, err = c.Version(ctx); err != nil {
		t.Fatalf("version of the 3.5 server: %v", err)
	}
	if releaseOf(seg.version) != "3.5" {
		t.Fatalf("the LTS server reports version %q, not 3.5.x", seg.version)
	}
	flags, err := c.Flags(ctx)
	if err != nil {
		t.Fatalf("flags of the 3.5 server: %v", err)
	}
	if ff := answerChangingFeature(flags["enable-feature"]); ff != "" {
		t.Fatalf("the 3.5 server runs with %s: production would push nothing to it", ff)
	}
	remoteWrite(t, seg.prom.URL, series)
	checkHead(t, seg.prom.URL, series)
	return seg
}

// storedSeries is one series with its samples (stale markers included):
// a float, or where h holds one, a histogram (load_with_nhcb stores
// classic histograms as native ones with custom buckets).
type storedSeries struct {
	lset labels.Labels
	t    []int64
	f    []float64
	h    []*histogram.FloatHistogram
}

// storageSeries reads every series of s.
func storageSeries(t *testing.T, s storage.Storage) ([]storedSeries, int) {
	q, err := s.Querier(math.MinInt64, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = q.Close() }()
	ss := q.Select(context.Background(), true, nil, labels.MustNewMatcher(labels.MatchRegexp, model.MetricNameLabel, ".*"))
	var (
		out []storedSeries
		n   int
		it  chunkenc.Iterator
	)
	for ss.Next() {
		s := storedSeries{lset: ss.At().Labels()}
		it = ss.At().Iterator(it)
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			var (
				ts int64
				v  float64
				h  *histogram.FloatHistogram
			)
			switch vt {
			case chunkenc.ValFloat:
				ts, v = it.At()
			case chunkenc.ValHistogram, chunkenc.ValFloatHistogram:
				ts, h = it.AtFloatHistogram(nil)
			default:
				t.Fatalf("%s: a %v sample", s.lset, vt)
			}
			s.t, s.f, s.h = append(s.t, ts), append(s.f, v), append(s.h, h)
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		n += len(s.t)
		out = append(out, s)
	}
	if err := ss.Err(); err != nil {
		t.Fatal(err)
	}
	return out, n
}

// remoteWrite sends series to a fresh server's remote-write receiver. The
// head refuses a sample older than an hour before the newest it holds
// (out of bounds), so the samples go in time order, in batches.
func remoteWrite(t *testing.T, url string, series []storedSeries) {
	type ref struct{ s, i int }
	var all []ref
	for s := range series {
		for i := range series[s].t {
			all = append(all, ref{s, i})
		}
	}
	sort.SliceStable(all, func(a, b int) bool { return series[all[a].s].t[all[a].i] < series[all[b].s].t[all[b].i] })
	const batch = 20000
	for len(all) > 0 {
		n := min(batch, len(all))
		var (
			req   prompb.WriteRequest
			index = map[int]int{}
		)
		for _, r := range all[:n] {
			k, ok := index[r.s]
			if !ok {
				k = len(req.Timeseries)
				index[r.s] = k
				ts := prompb.TimeSeries{}
				series[r.s].lset.Range(func(l labels.Label) {
					ts.Labels = append(ts.Labels, prompb.Label{Name: l.Name, Value: l.Value})
				})
				req.Timeseries = append(req.Timeseries, ts)
			}
			ts, s := &req.Timeseries[k], series[r.s]
			if h := s.h[r.i]; h != nil {
				ts.Histograms = append(ts.Histograms, prompb.FromFloatHistogram(s.t[r.i], h))
			} else {
				ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: s.t[r.i], Value: s.f[r.i]})
			}
		}
		all = all[n:]
		body, err := req.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		hreq, err := http.NewRequest(http.MethodPost, url+"/api/v1/write", bytes.NewReader(snappy.Encode(nil, body)))
		if err != nil {
			t.Fatal(err)
		}
		hreq.Header.Set("Content-Encoding", "snappy")
		hreq.Header.Set("Content-Type", "application/x-protobuf")
		hreq.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
		resp, err := http.DefaultClient.Do(hreq)
		if err != nil {
			t.Fatalf("remote write to the 3.5 server: %v", err)
		}
		var msg bytes.Buffer
		_, _ = msg.ReadFrom(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("remote write to the 3.5 server: %s: %s", resp.Status, msg.String())
		}
	}
}

// checkHead asks the server what its head holds: every series written, over
// the samples' span.
func checkHead(t *testing.T, url string, series []storedSeries) {
	resp, err := http.Get(url + "/api/v1/status/tsdb")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var st struct {
		Data struct {
			HeadStats struct {
				NumSeries int   `json:"numSeries"`
				Min       int64 `json:"minTime"`
				Max       int64 `json:"maxTime"`
			} `json:"headStats"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("/api/v1/status/tsdb of the 3.5 server: %v", err)
	}
	mint, maxt := int64(math.MaxInt64), int64(math.MinInt64)
	for _, s := range series {
		if len(s.t) > 0 {
			mint, maxt = min(mint, s.t[0]), max(maxt, s.t[len(s.t)-1])
		}
	}
	h := st.Data.HeadStats
	if h.NumSeries != len(series) || len(series) > 0 && (h.Min != mint || h.Max != maxt) {
		t.Fatalf("the 3.5 server holds %d series over [%d, %d], written %d over [%d, %d]", h.NumSeries, h.Min, h.Max, len(series), mint, maxt)
	}
}

func TestPromQLScriptsThroughLTS(t *testing.T) {
	groups := make([]plan.Group, 3)
	for i := range groups {
		groups[i] = plan.Group{Name: "g" + strconv.Itoa(i), Labels: labels.FromStrings(shardLabel, "g"+strconv.Itoa(i)), LabelsAdded: true}
	}
	ng := proxyEngine(t)
	modes := []plan.FloatSums{plan.FloatSumsExact, plan.FloatSumsReassociate}
	planners := map[plan.FloatSums]*plan.Planner{}
	stats := map[plan.FloatSums]*ltsStats{}
	for _, mode := range modes {
		planners[mode] = plan.New(plan.Config{Enabled: true, FloatSums: mode}, Parser())
		stats[mode] = newLTSStats()
	}
	fleet := &ltsFleet{t: t}
	found := map[string]bool{}
	for _, file := range scriptFiles(t) {
		base := filepath.Base(file)
		lines := strings.Split(readScript(t, file), "\n")
		fleet.stop()
		seg := &ltsSegment{scriptSegment: &scriptSegment{}}
		droppedSeries := &scriptStats{droppedSeries: map[string]int{}}
		for i := 0; i < len(lines); i++ {
			l := strings.TrimSpace(lines[i])
			switch {
			case l == "clear":
				fleet.stop()
				seg = &ltsSegment{scriptSegment: &scriptSegment{}}
			case patScriptLoad.MatchString(l):
				var series []string
				for i+1 < len(lines) && strings.TrimSpace(lines[i+1]) != "" {
					i++
					series = append(series, strings.TrimSpace(lines[i]))
				}
				if seg.prom != nil || seg.ref != nil {
					// A load after evals: the data changes under them.
					fleet.stop()
					old := seg.scriptSegment
					seg = &ltsSegment{scriptSegment: &scriptSegment{}}
					for g := range old.groups {
						seg.groups[g].WriteString(old.groups[g].String())
					}
					seg.union.WriteString(old.union.String())
				}
				seg.addLoad(l, series, droppedSeries)
			case strings.HasPrefix(l, "eval"):
				ev, err := parseScriptEval(l)
				if err != nil {
					t.Fatalf("%s: %v", l, err)
				}
				key := fmt.Sprintf("%s:%d", base, i+1)
				for _, mode := range modes {
					st := stats[mode]
					st.evals++
					if strings.HasPrefix(l, "eval_fail") {
						st.skipped["eval_fail: an error, not an answer"]++
						continue
					}
					if ex, listed := notReassociable[key]; listed && mode == plan.FloatSumsReassociate {
						st.skipped[ex.why]++
						continue
					}
					problem := compareLTSEval(t, fleet, ev, seg, ng, planners[mode], groups, mode, st)
					ex, listed := ltsDiffers[key]
					switch {
					case listed && ex.eval != l:
						t.Fatalf("%s is %q, not the listed %q", key, l, ex.eval)
					case listed && problem == "":
						t.Errorf("%s %s (%s): listed as differing on 3.5, yet equal", key, l, mode)
					case listed:
						found[key] = true
						st.skipped["3.5 differs (listed): "+ex.why]++
					case problem != "":
						t.Errorf("%s %s (%s): %s", key, l, mode, problem)
					}
				}
			}
		}
	}
	fleet.stop()
	for key := range ltsDiffers {
		if !found[key] {
			t.Errorf("%s: listed as differing on 3.5, not found", key)
		}
	}
	t.Logf("3.5 servers started: %d (one per script segment a pushed query reached), %d samples written", fleet.starts, fleet.samples)
	for _, mode := range modes {
		st := stats[mode]
		refused := 0
		for _, n := range st.refused {
			refused += n
		}
		t.Logf("float_sums %s: %d evals; %d pushed, %d of them to 3.5; %d refused for 3.5 by evaluatesAsProxy, %d evaluated by 3.5 (g0's answer bit-equal to the proxy's engine's on the same data); %d compared and equal to the reference (%d values bit-equal, %d within %g, largest relative difference %.3g)",
			mode, st.evals, st.pushed, st.toLTS, refused, st.ltsAnswered, st.compared, st.bitEqual, st.within, reassocTolerance, st.maxRel)
		for _, why := range slices.Sorted(maps.Keys(st.refused)) {
			t.Logf("  refused for 3.5 (%d): %s", st.refused[why], why)
		}
		for _, why := range slices.Sorted(maps.Keys(st.skipped)) {
			t.Logf("  not compared (%d): %s", st.skipped[why], why)
		}
		if least := map[plan.FloatSums]int{plan.FloatSumsExact: 30, plan.FloatSumsReassociate: 100}[mode]; st.ltsAnswered < least {
			t.Errorf("float_sums %s: only %d evals answered by 3.5: the scripts do not exercise it", mode, st.ltsAnswered)
		}
		if mode == plan.FloatSumsExact && st.within > 0 {
			t.Errorf("%d values differ with float_sums exact", st.within)
		}
	}
}

// compareLTSEval plans one eval and, where it is pushed, answers it as the
// proxy would with g0 on 3.5 and compares with the reference: it says how
// they differ, or "".
func compareLTSEval(t *testing.T, fleet *ltsFleet, ev scriptEval, seg *ltsSegment, ng *PromQL, planner *plan.Planner, groups []plan.Group, mode plan.FloatSums, st *ltsStats) string {
	pl, want, wantAnnos, ok := planScriptEval(t, ev, seg.scriptSegment, ng, planner, groups, &st.pushed, st.skipped)
	if !ok {
		return ""
	}
	jobs, err := groupJobs(pl, ev.r, pushDownFuzzLookback)
	if err != nil {
		st.skipped["the selectors' spans cannot be computed (the proxy falls back)"]++
		return ""
	}
	ctx := context.Background()
	answers := map[string][]storage.Series{}
	for _, j := range jobs {
		g := slices.IndexFunc(groups, func(x plan.Group) bool { return x.Name == j.group.Name })
		lts := g == 0
		var srv *ltsSegment
		if lts {
			st.toLTS++
			srv = fleet.server(seg)
			for _, q := range j.queries {
				if ok, why := evaluatesAsProxy(srv.version, q); !ok {
					why = strings.TrimPrefix(why, "runs Prometheus "+srv.version+", ")
					st.refused[strings.TrimPrefix(why, "which ")]++
					return ""
				}
			}
		}
		found := func(mint, maxt int64, sets [][]*labels.Matcher) bool {
			if lts {
				f, _, err := srv.client.SeriesLimit(ctx, mint, maxt, sets, 1)
				if err != nil {
					t.Fatalf("series of the 3.5 server: %v", err)
				}
				return len(f) > 0
			}
			return storeHas(t, seg.stores[g], mint, maxt, sets)
		}
		const probed = "a group holds a series of another group's label (probe; the proxy falls back)"
		mint, maxt := probeWindow(j.spans)
		fq := foldGroup(j.queries, j.probe, j.mixed, mint, maxt)
		if fq.probesApart {
			if found(mint, maxt, j.probe) {
				st.skipped[probed]++
				return ""
			}
			for _, mp := range j.mixed {
				if found(mint, maxt, mp.Stored) && found(mint, maxt, mp.Lacking) {
					st.skipped[probed]++
					return ""
				}
			}
		}
		local, localAnnos, localErr := evalScript(ng, seg.stores[g], fq.query, ev.r)
		var ans *remote.QueryAnswer
		if lts {
			ans, err = srv.client.Query(ctx, remote.QueryParams{
				Query: fq.query, Start: ev.r.start.UnixMilli(), End: ev.r.end.UnixMilli(), Step: ev.r.step,
				LookbackDelta: pushDownFuzzLookback, Spans: j.spans,
			})
			var apiErr *remote.APIError
			switch {
			case errors.As(err, &apiErr) && apiErr.Code < 500:
				if localErr == nil {
					// Production falls back (answer.refused): right,
					// but a push-down lost to a difference the table
					// does not name.
					return fmt.Sprintf("3.5 refuses the folded query the proxy's engine answers: %s\nquery %s", apiErr.Msg, fq.query)
				}
				st.skipped["a group's query fails (the proxy falls back)"]++
				return ""
			case err != nil:
				t.Fatalf("query to the 3.5 server: %v", err)
			case localErr != nil:
				return fmt.Sprintf("3.5 answers the folded query the proxy's engine refuses (%v)\nquery %s", localErr, fq.query)
			case len(ans.Warnings) > 0 != (localAnnos > 0):
				return fmt.Sprintf("3.5 answers with %d annotations (%v), the proxy's engine with %d\nquery %s", len(ans.Warnings), ans.Warnings, localAnnos, fq.query)
			}
		} else {
			switch {
			case localErr != nil:
				st.skipped["a group's query fails (the proxy falls back)"]++
				return ""
			case localAnnos > 0:
				st.skipped["a group answers with annotations (the proxy falls back)"]++
				return ""
			}
			ans = matrixAnswer(local)
		}
		if len(ans.Warnings) > 0 {
			st.skipped["a group answers with annotations (the proxy falls back)"]++
			return ""
		}
		if ans.Histograms {
			st.skipped["a group answers native histograms (the proxy falls back)"]++
			return ""
		}
		parts, err := fq.split(ans)
		if err != nil {
			return fmt.Sprintf("splitting the answer to %q: %v", fq.query, err)
		}
		if lts {
			// g0's answer itself, before the combination can hide a
			// difference: each fragment's part bit for bit the proxy's
			// engine's, each probe found or not alike (a probe part's
			// labels are never read).
			lparts, err := fq.split(matrixAnswer(local))
			if err != nil {
				return fmt.Sprintf("splitting the proxy's engine's answer to %q: %v", fq.query, err)
			}
			if lparts.probeFound != parts.probeFound || !slices.Equal(lparts.storedFound, parts.storedFound) {
				return fmt.Sprintf("3.5's probes found %v %v, the proxy's engine's %v %v\nquery %s", parts.probeFound, parts.storedFound, lparts.probeFound, lparts.storedFound, fq.query)
			}
			for k := range parts.fragments {
				if _, w, rel, diff := compareWithin(answerMatrix(lparts.fragments[k]), answerMatrix(parts.fragments[k]), 0); diff != "" || w > 0 {
					return fmt.Sprintf("3.5's answer to fragment %s differs from the proxy's engine's on the same data: %s (%d values, largest relative difference %g)\nquery %s", j.frags[k].ID, diff, w, rel, fq.query)
				}
			}
		}
		if parts.probeFound {
			st.skipped[probed]++
			return ""
		}
		for k, f := range parts.storedFound {
			if f && found(mint, maxt, j.mixed[k].Lacking) {
				st.skipped[probed]++
				return ""
			}
		}
		for k, f := range j.frags {
			ss, err := fragmentSeries(f, j.group, parts.fragments[k], ev.r)
			if err != nil {
				return fmt.Sprintf("fragment %s on %s: %v", f.ID, j.group.Name, err)
			}
			answers[f.ID] = append(answers[f.ID], ss...)
		}
	}
	if err := sortDisjoint(answers); err != nil {
		return err.Error() + ", yet the groups are disjoint"
	}
	for _, f := range pl.Fragments {
		if f.Ranked != nil && rankedDecided(f, answers[f.ID]) != nil {
			st.skipped["a tie decides a combined topk/bottomk (the proxy falls back)"]++
			return ""
		}
	}
	ltsIn := slices.ContainsFunc(jobs, func(j *groupJob) bool { return j.group.Name == groups[0].Name })
	if ltsIn {
		st.ltsAnswered++
	}
	return st.compareCombined(ng, seg.scriptSegment, answers, pl, ev, mode, want, wantAnnos)
}

// answerMatrix is a backend's answer as a matrix, to compare with one
// evaluation by the proxy's engine.
func answerMatrix(ans *remote.QueryAnswer) promql.Matrix {
	m := make(promql.Matrix, 0, len(ans.Series))
	for _, s := range ans.Series {
		ser := promql.Series{Metric: s.Labels}
		for i, ts := range s.T {
			ser.Floats = append(ser.Floats, promql.FPoint{T: ts, F: s.F[i]})
		}
		m = append(m, ser)
	}
	return m
}

// storeHas reports whether s holds a series matching one of sets with
// samples in [mint, maxt], as the series endpoint would answer.
func storeHas(t *testing.T, s storage.Storage, mint, maxt int64, sets [][]*labels.Matcher) bool {
	q, err := s.Querier(mint, maxt)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = q.Close() }()
	for _, set := range sets {
		ss := q.Select(context.Background(), false, &storage.SelectHints{Start: mint, End: maxt, Func: "series"}, set...)
		if ss.Next() {
			return true
		}
		if err := ss.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return false
}
