package engine

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	promremote "github.com/prometheus/prometheus/storage/remote"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/remote"
)

// fakeBackends serves fixed groups and records passive health observations.
type fakeBackends struct {
	groups []*discovery.Group
	mu     sync.Mutex
	failed map[string]int
}

func (b *fakeBackends) Groups() []*discovery.Group { return b.groups }

func (b *fakeBackends) ObserveCall(r *discovery.Replica, err error, _ time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil {
		b.failed[r.URL]++
	}
}

func newTestFanout(t *testing.T, partial discovery.PartialMode, groups ...discovery.StaticGroup) (*Fanout, *fakeBackends) {
	t.Helper()
	b := &fakeBackends{groups: discovery.StaticGroups(groups), failed: map[string]int{}}
	f, err := NewFanout(b, FanoutOptions{PartialResponse: partial, Remote: remote.DefaultConfig()})
	if err != nil {
		t.Fatal(err)
	}
	return f, b
}

// answer returns the backend's URL, or fails for URLs holding "bad".
func answer(_ context.Context, _ *discovery.Group, _ [][]*labels.Matcher, c *remote.Client) (string, error) {
	if strings.Contains(c.URL(), "bad") {
		return "", errors.New("backend " + c.URL() + ": refused")
	}
	return c.URL(), nil
}

func warnings(w annotations.Annotations) string {
	s, _ := w.AsStrings("", 0, 0)
	return strings.Join(s, "\n")
}

func TestFanOutFailsOverWithinGroup(t *testing.T) {
	f, b := newTestFanout(t, discovery.PartialWarn, discovery.StaticGroup{Name: "a", URLs: []string{"http://bad-1", "http://good-1"}})
	for range 4 { // round-robin starts on each replica in turn
		out, warns, err := fanOut(context.Background(), f, nil, "read", nil, answer)
		if err != nil || len(warns) != 0 || len(out) != 1 || out[0] != "http://good-1" {
			t.Fatalf("out=%v warns=%v err=%v; want the good replica's answer alone", out, warnings(warns), err)
		}
	}
	if b.failed["http://bad-1"] == 0 {
		t.Error("the failing replica's errors were not reported to discovery")
	}
}

func TestFanOutPartialResponse(t *testing.T) {
	groups := []discovery.StaticGroup{
		{Name: "a", URLs: []string{"http://good-a"}},
		{Name: "b", URLs: []string{"http://bad-b1", "http://bad-b2"}},
	}
	t.Run("warn", func(t *testing.T) {
		f, _ := newTestFanout(t, discovery.PartialWarn, groups...)
		out, warns, err := fanOut(context.Background(), f, nil, "read", nil, answer)
		w := warnings(warns)
		if err != nil || len(out) != 1 || !strings.Contains(w, "group b unavailable") || !strings.Contains(w, "http://bad-b1: refused") || !strings.Contains(w, "http://bad-b2: refused") {
			t.Errorf("out=%v err=%v warnings=%q; want group a's answer and a warning naming group b and both replicas", out, err, w)
		}
		// partial_response=false overrides warn.
		_, _, err = fanOut(WithPartialResponse(context.Background(), false), f, nil, "read", nil, answer)
		if ue := (*UnavailableError)(nil); !errors.As(err, &ue) || !errors.Is(err, tsdb.ErrNotReady) {
			t.Errorf("partial_response=false: err = %v, want UnavailableError", err)
		}
	})
	t.Run("abort", func(t *testing.T) {
		f, _ := newTestFanout(t, discovery.PartialAbort, groups...)
		_, _, err := fanOut(context.Background(), f, nil, "read", nil, answer)
		if !errors.Is(err, tsdb.ErrNotReady) || !strings.Contains(err.Error(), "group b unavailable") {
			t.Errorf("err = %v, want unavailable naming group b", err)
		}
		out, warns, err := fanOut(WithPartialResponse(context.Background(), true), f, nil, "read", nil, answer)
		if err != nil || len(out) != 1 || len(warns) != 1 {
			t.Errorf("partial_response=true: out=%v warns=%q err=%v; want a warned partial answer", out, warnings(warns), err)
		}
	})
	t.Run("every group failed", func(t *testing.T) {
		f, _ := newTestFanout(t, discovery.PartialWarn, groups[1], discovery.StaticGroup{Name: "c", URLs: []string{"http://bad-c"}})
		_, _, err := fanOut(context.Background(), f, nil, "read", nil, answer)
		if !errors.Is(err, tsdb.ErrNotReady) || !strings.Contains(err.Error(), "group b") || !strings.Contains(err.Error(), "group c") {
			t.Errorf("err = %v, want unavailable naming both groups (nothing answered, so nothing is partial)", err)
		}
	})
}

// TestFanOutRemembersFailedGroups: within one query, a group that failed is
// not asked again by later selectors (a hung group costs one timeout).
func TestFanOutRemembersFailedGroups(t *testing.T) {
	f, _ := newTestFanout(t, discovery.PartialWarn,
		discovery.StaticGroup{Name: "a", URLs: []string{"http://good-a"}},
		discovery.StaticGroup{Name: "b", URLs: []string{"http://bad-b"}})
	var calls atomic.Int64
	counting := func(ctx context.Context, g *discovery.Group, s [][]*labels.Matcher, c *remote.Client) (string, error) {
		calls.Add(1)
		return answer(ctx, g, s, c)
	}
	failed := &failedGroups{}
	for i := range 3 {
		_, warns, err := fanOut(context.Background(), f, failed, "read", nil, counting)
		if err != nil || !strings.Contains(warnings(warns), "group b unavailable") {
			t.Fatalf("select %d: err=%v warnings=%q; want the warning every time", i, err, warnings(warns))
		}
	}
	if got := calls.Load(); got != 2+1+1 {
		t.Errorf("%d backend calls for three selects, want 4 (group b asked once)", got)
	}
}

func TestFanOutContextEnds(t *testing.T) {
	f, _ := newTestFanout(t, discovery.PartialWarn, discovery.StaticGroup{Name: "a", URLs: []string{"http://slow"}})
	block := func(ctx context.Context, _ *discovery.Group, _ [][]*labels.Matcher, _ *remote.Client) (string, error) {
		<-ctx.Done()
		return "", ctx.Err()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, _, err := fanOut(ctx, f, nil, "read", nil, block)
	if eqt := promql.ErrQueryTimeout(""); !errors.As(err, &eqt) {
		t.Errorf("deadline: err = %v (%T), want promql.ErrQueryTimeout", err, err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	_, _, err = fanOut(ctx, f, nil, "read", nil, block)
	if eqc := promql.ErrQueryCanceled(""); !errors.As(err, &eqc) {
		t.Errorf("cancel: err = %v (%T), want promql.ErrQueryCanceled", err, err)
	}
}

func TestFanOutPanicIsAGroupError(t *testing.T) {
	f, _ := newTestFanout(t, discovery.PartialWarn,
		discovery.StaticGroup{Name: "a", URLs: []string{"http://good-a"}},
		discovery.StaticGroup{Name: "b", URLs: []string{"http://panics"}})
	out, warns, err := fanOut(context.Background(), f, nil, "read", nil, func(ctx context.Context, _ *discovery.Group, _ [][]*labels.Matcher, c *remote.Client) (string, error) {
		if strings.Contains(c.URL(), "panics") {
			panic("decoder bug")
		}
		return answer(ctx, nil, nil, c)
	})
	if err != nil || len(out) != 1 || !strings.Contains(warnings(warns), "group b unavailable: internal error: decoder bug") {
		t.Errorf("out=%v err=%v warnings=%q", out, err, warnings(warns))
	}
}

// fullGate is a query budget whose calls in flight are all taken (by the
// tenant's other requests): every call waits until its context ends.
type fullGate struct{ remote.Budget }

func (fullGate) AcquireCall(ctx context.Context) (func(), error) {
	<-ctx.Done()
	return nil, context.Cause(ctx)
}

// TestWaitInOwnGateIsNotTheReplicas: a tenant's flood that times out
// waiting for its share of backend calls in flight fails that tenant's
// query with a timeout, asks no backend and reports nothing against the
// replica, which stays healthy for everyone else.
func TestWaitInOwnGateIsNotTheReplicas(t *testing.T) {
	f, b := newTestFanout(t, discovery.PartialWarn, discovery.StaticGroup{Name: "a", URLs: []string{"http://good-1"}})
	var calls atomic.Int64
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(remote.WithBudget(context.Background(), fullGate{}), 20*time.Millisecond)
			defer cancel()
			_, _, err := fanOut(ctx, f, nil, "read", nil, func(ctx context.Context, g *discovery.Group, s [][]*labels.Matcher, c *remote.Client) (string, error) {
				calls.Add(1)
				return answer(ctx, g, s, c)
			})
			if tm := promql.ErrQueryTimeout(""); !errors.As(err, &tm) {
				t.Errorf("query waiting in the proxy's own gate: %v, want a query timeout", err)
			}
		})
	}
	wg.Wait()
	if n := calls.Load(); n != 0 {
		t.Errorf("%d backend calls made past a full gate", n)
	}
	if len(b.failed) != 0 {
		t.Errorf("waits in the proxy's own gate were reported against replicas: %v", b.failed)
	}
	r := b.groups[0].Replicas[0]
	if !r.Healthy() {
		t.Error("replica marked unhealthy")
	}
}

// TestReadsOwnTheirHints: a select's reads start after Select returns (at
// the first Next, beside the query's other reads), while the engine goes
// on and sorts an aggregation's grouping in place, the slice the hints
// hold. Each read sends the grouping as it was when selected; a read that
// shared the slice sent whatever the engine left in it, and one encoding
// it mid-sort broke its request ("index out of range").
func TestReadsOwnTheirHints(t *testing.T) {
	db := costTestStorage(t, 2)
	read := promremote.NewReadHandler(nil, nil, db, func() config.Config { return config.Config{} }, 0, 1, 1<<20)
	var (
		mu   sync.Mutex
		sent [][]string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Error(err)
			return
		}
		var req prompb.ReadRequest
		if raw, err := snappy.Decode(nil, body); err != nil || req.Unmarshal(raw) != nil {
			t.Errorf("undecodable read request: %v", err)
			return
		}
		mu.Lock()
		for _, q := range req.Queries {
			sent = append(sent, q.Hints.Grouping)
		}
		mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		read.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f, _ := newTestFanout(t, discovery.PartialAbort, discovery.StaticGroup{Name: "a", URLs: []string{srv.URL}})
	q, err := f.Querier(0, 3_600_000)
	if err != nil {
		t.Fatal(err)
	}
	grouping := []string{"pod", "namespace"}
	hints := &storage.SelectHints{Start: 0, End: 3_600_000, Func: "sum", By: true, Grouping: grouping}
	ss := q.Select(context.Background(), false, hints, labels.MustNewMatcher(labels.MatchEqual, "__name__", "requests_total"))
	// What the engine does next: sort the aggregation's grouping.
	slices.Sort(grouping)
	n := 0
	for ss.Next() {
		n++
	}
	if err := ss.Err(); err != nil || n != 2 {
		t.Fatalf("read %d series, err %v; want 2", n, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sent) != 1 || !slices.Equal(sent[0], []string{"pod", "namespace"}) {
		t.Errorf("groupings sent %q; want the one selected, [pod namespace]", sent)
	}
}
