package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/remote"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

const streamStart = 1_700_000_000 // seconds

// streamData is 40 series of an hour of samples every 15 s, values varied
// enough that each series takes a frame of its own of a few hundred bytes.
func streamData() string {
	var b strings.Builder
	b.WriteString("# TYPE load unknown\n")
	for i := range 40 {
		for s := 0; s < 3600; s += 15 {
			fmt.Fprintf(&b, "load{i=\"%02d\"} %g %d\n", i, float64((i+1)*(s+7)%997)/7, streamStart+s)
		}
	}
	b.WriteString("# EOF\n")
	return b.String()
}

// countingFanout is a fan-out over one group whose only replica is
// upstream, reached through a transport of its own that counts the bytes of
// remote-read answers (to know where a cut falls). Nothing stands between
// the reference read and the backend, and no other test's connections
// share its pool.
func countingFanout(t *testing.T, upstream string) (*Fanout, *atomic.Int64) {
	t.Helper()
	transport := &http.Transport{}
	t.Cleanup(transport.CloseIdleConnections)
	counter := &countingTransport{next: transport}
	groups := discovery.StaticGroups([]discovery.StaticGroup{{Name: "solo", URLs: []string{upstream}}})
	groups[0].Transport = counter
	f, err := NewFanout(&fakeBackends{groups: groups, failed: map[string]int{}}, FanoutOptions{PartialResponse: discovery.PartialWarn, Remote: remote.DefaultConfig()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f, &counter.n
}

type countingTransport struct {
	next http.RoundTripper
	n    atomic.Int64
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(req)
	if err == nil && req.URL.Path == "/api/v1/read" {
		resp.Body = countingBody{resp.Body, &c.n}
	}
	return resp, err
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// drainLines is a series set read to its end: one line per series with its
// samples, and the set's error.
func drainLines(ss storage.SeriesSet) ([]string, error) {
	var out []string
	for ss.Next() {
		s := ss.At()
		var b strings.Builder
		b.WriteString(s.Labels().String())
		it := s.Iterator(nil)
		for it.Next() == chunkenc.ValFloat {
			ts, v := it.At()
			fmt.Fprintf(&b, " %d:%g", ts, v)
		}
		out = append(out, b.String())
	}
	return out, ss.Err()
}

func selectLoad(ctx context.Context, t *testing.T, f *Fanout) ([]string, error) {
	t.Helper()
	mint, maxt := int64(streamStart)*1000, int64(streamStart+3600)*1000
	q, err := f.Querier(mint, maxt)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = q.Close() }()
	return drainLines(q.Select(ctx, false, &storage.SelectHints{Start: mint, End: maxt}, labels.MustNewMatcher(labels.MatchEqual, "__name__", "load")))
}

// TestStreamBreaks runs selects through the fan-out against a real
// Prometheus whose first replica cuts its remote-read answers: a cut before
// the first series fails over and answers exactly what the backend holds;
// a cut after some series fails the select (default partial_response
// warn included), with an error a tenant may read, and does not fail over.
func TestStreamBreaks(t *testing.T) {
	prom := e2eutil.StartPrometheus(t, e2eutil.V3, strings.NewReader(streamData()), e2eutil.WithName("stream"))
	f, bodyBytes := countingFanout(t, prom.URL)
	want, err := selectLoad(context.Background(), t, f)
	if err != nil || len(want) != 40 {
		t.Fatalf("reference read: %d series, %v", len(want), err)
	}
	total := int(bodyBytes.Load())

	check := e2eutil.LeakCheck(t, 3, http.DefaultClient.CloseIdleConnections)
	t.Run("before the first series", func(t *testing.T) {
		cut := e2eutil.CloseMidStream(t, prom.URL, 64)
		f, backends := newTestFanout(t, discovery.PartialWarn, discovery.StaticGroup{Name: "pair", URLs: []string{cut.URL, prom.URL}})
		defer f.Close()
		got, err := selectLoad(context.Background(), t, f) // round-robin starts at the cut replica
		if err != nil || strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("failover answer differs from the backend's (%d series, want %d), err %v", len(got), len(want), err)
		}
		if cut.Cuts() != 1 || backends.failed[cut.URL] != 1 {
			t.Errorf("%d cuts, %d failures reported for the cut replica; want 1 and 1 (failover exercised)", cut.Cuts(), backends.failed[cut.URL])
		}
	})
	for _, tenant := range []bool{false, true} {
		t.Run(fmt.Sprintf("after some series/tenant=%v", tenant), func(t *testing.T) {
			cut := e2eutil.CloseMidStream(t, prom.URL, total/2)
			f, _ := newTestFanout(t, discovery.PartialWarn, discovery.StaticGroup{Name: "pair", URLs: []string{cut.URL, prom.URL}})
			defer f.Close()
			ctx := context.Background()
			if tenant {
				ctx = tenancy.NewContext(ctx, &tenancy.Policy{Namespace: "team", Rules: []tenancy.Rule{{Matchers: []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, "i", ".+")}}}})
			}
			got, err := selectLoad(ctx, t, f)
			if se := (*StreamError)(nil); !errors.As(err, &se) || !errors.Is(err, remote.ErrStreamBroken) || !errors.Is(err, tsdb.ErrNotReady) {
				t.Fatalf("%d series, err = %v (%T); want an unavailable StreamError", len(got), err, err)
			}
			// ErrStreamBroken says series had reached the reader before the
			// cut (the first is handed on alone; the rest, one batch here,
			// never were).
			if len(got) >= len(want) {
				t.Errorf("%d of %d series before the break: the cut was not mid-stream", len(got), len(want))
			}
			msg := err.Error()
			if !strings.Contains(msg, "group pair") || !strings.Contains(msg, "broke off mid-stream") {
				t.Errorf("error %q does not say which group broke off", msg)
			}
			if tenant == strings.Contains(msg, cut.URL) || strings.Contains(msg, strings.TrimPrefix(cut.URL, "http://")) != !tenant {
				t.Errorf("tenant=%v: error %q; a tenant must not see the backend, an admin must", tenant, msg)
			}
			if cut.Cuts() != 1 || cut.Requests() != 1 {
				t.Errorf("%d cuts, %d requests to the cut replica; want 1 and 1", cut.Cuts(), cut.Requests())
			}
		})
	}
	check()
}

// TestStreamedSelectIsLazy: a select asks no backend until the engine reads
// it. Reading the first set starts the reads of the query's other
// selectors at once (prefetch), so that all three are asked by then; with
// backend.sequential_selects each is asked when it is read.
func TestStreamedSelectIsLazy(t *testing.T) {
	prom := e2eutil.StartPrometheus(t, e2eutil.V2, strings.NewReader(streamData()), e2eutil.WithName("lazy"))
	for _, sequential := range []bool{false, true} {
		t.Run(fmt.Sprintf("sequential=%v", sequential), func(t *testing.T) {
			pass := e2eutil.CloseMidStream(t, prom.URL, 1<<30)
			b := &fakeBackends{groups: discovery.StaticGroups([]discovery.StaticGroup{{Name: "solo", URLs: []string{pass.URL}}}), failed: map[string]int{}}
			cfg := remote.DefaultConfig()
			cfg.SequentialSelects = sequential
			f, err := NewFanout(b, FanoutOptions{Remote: cfg})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			q, err := f.Querier(int64(streamStart)*1000, int64(streamStart+3600)*1000)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = q.Close() }()
			var sets []storage.SeriesSet
			for _, i := range []string{"0.", "1.", "2."} {
				sets = append(sets, q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "load"), labels.MustNewMatcher(labels.MatchRegexp, "i", i)))
			}
			if n := pass.Requests(); n != 0 {
				t.Fatalf("%d backend requests before any set was read, want 0", n)
			}
			for i, ss := range sets {
				got, err := drainLines(ss)
				if err != nil || len(got) != 10 {
					t.Fatalf("set %d: %d series, %v; want 10", i, len(got), err)
				}
				want := int64(len(sets))
				if sequential {
					want = int64(i + 1)
				}
				// The prefetches run in goroutines of their own.
				e2eutil.WaitFor(2*time.Second, func() bool { return pass.Requests() >= want })
				if n := pass.Requests(); n != want {
					t.Errorf("after reading set %d: %d requests, want %d", i, n, want)
				}
			}
			if !e2eutil.WaitFor(2*time.Second, func() bool { f.Close(); return pass.OpenConns() == 0 }) {
				t.Errorf("%d connections open after the sets were read and the fan-out closed", pass.OpenConns())
			}
		})
	}
}

// TestIdenticalSelectsReadOnce: selects of one query with the same
// matchers (in any order), time range and hints share one read, and each
// still sees the whole answer; a different select reads on its own.
func TestIdenticalSelectsReadOnce(t *testing.T) {
	prom := e2eutil.StartPrometheus(t, e2eutil.V2, strings.NewReader(streamData()), e2eutil.WithName("dedup"))
	for _, sequential := range []bool{false, true} {
		t.Run(fmt.Sprintf("sequential=%v", sequential), func(t *testing.T) {
			pass := e2eutil.CloseMidStream(t, prom.URL, 1<<30)
			b := &fakeBackends{groups: discovery.StaticGroups([]discovery.StaticGroup{{Name: "solo", URLs: []string{pass.URL}}}), failed: map[string]int{}}
			cfg := remote.DefaultConfig()
			cfg.SequentialSelects = sequential
			f, err := NewFanout(b, FanoutOptions{Remote: cfg})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			q, err := f.Querier(int64(streamStart)*1000, int64(streamStart+3600)*1000)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = q.Close() }()
			name := labels.MustNewMatcher(labels.MatchEqual, "__name__", "load")
			i0 := labels.MustNewMatcher(labels.MatchRegexp, "i", "0.")
			i1 := labels.MustNewMatcher(labels.MatchRegexp, "i", "1.")
			sets := []storage.SeriesSet{
				q.Select(context.Background(), false, nil, name, i0),
				q.Select(context.Background(), false, nil, i0, name),
				q.Select(context.Background(), false, nil, name, i1),
				q.Select(context.Background(), false, nil, name, i0),
			}
			var first []string
			for i, ss := range sets {
				got, err := drainLines(ss)
				if err != nil || len(got) != 10 {
					t.Fatalf("set %d: %d series, %v; want 10", i, len(got), err)
				}
				if i == 0 {
					first = got
				} else if i != 2 && strings.Join(got, "\n") != strings.Join(first, "\n") {
					t.Errorf("set %d differs from the identical set 0:\n%s\nvs\n%s", i, strings.Join(got, "\n"), strings.Join(first, "\n"))
				}
			}
			if n := pass.Requests(); n != 2 {
				t.Errorf("%d backend requests for two distinct selects (four selects), want 2", n)
			}
		})
	}
}
