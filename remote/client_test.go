package remote

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunks"
)

func series(name string, ts ...int64) storage.Series {
	var s []chunks.Sample
	for _, t := range ts {
		s = append(s, testSample{t: t, f: float64(t)})
	}
	return storage.NewListSeries(labels.FromStrings("__name__", name), s)
}

func TestSortedRunsMergesQueriesAndFrames(t *testing.T) {
	// Two queries' answers back to back, the second repeating a series of the
	// first, and a series split over two frames.
	in := &listSeriesSet{series: []storage.Series{
		series("a", 1), series("b", 1), series("b", 2), series("c", 1),
		series("a", 1), series("d", 1),
	}}
	runs, err := sortedRuns(in, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 3 {
		t.Fatalf("got %d runs, want 3", len(runs))
	}
	merged := storage.NewMergeSeriesSet(runs, 0, storage.ChainedSeriesMerge)
	var names []string
	var bSamples int
	for merged.Next() {
		s := merged.At()
		names = append(names, s.Labels().Get("__name__"))
		if s.Labels().Get("__name__") == "b" {
			it := s.Iterator(nil)
			for it.Next() != 0 {
				bSamples++
			}
		}
	}
	if got := len(names); got != 4 || names[0] != "a" || names[3] != "d" {
		t.Errorf("merged series %v, want [a b c d]", names)
	}
	if bSamples != 2 {
		t.Errorf("series b has %d samples, want both frames' 2", bSamples)
	}
}

func TestSelector(t *testing.T) {
	ms := []*labels.Matcher{
		labels.MustNewMatcher(labels.MatchEqual, "__name__", "up"),
		labels.MustNewMatcher(labels.MatchRegexp, "job", `a"b.*`),
	}
	if got, want := Selector(ms), `{__name__="up",job=~"a\"b.*"}`; got != want {
		t.Errorf("Selector = %s, want %s", got, want)
	}
}

func TestTimeRangeOmitsUnboundedEnds(t *testing.T) {
	p := timeRange(apiMinTime, apiMaxTime, nil)
	if p.Has("start") || p.Has("end") {
		t.Errorf("unbounded range sent as %v", p)
	}
	p = timeRange(1500, 2000, nil)
	if p.Get("start") != "1.500" || p.Get("end") != "2.000" {
		t.Errorf("range sent as %v", p)
	}
}

// TestEngineFactsAreReused: a backend's version and flags are read once
// and reused while young; an old reading, or a failed one, is read again.
func TestEngineFactsAreReused(t *testing.T) {
	var p atomic.Pointer[fetched[string]]
	reads := 0
	get := func() (string, error) { reads++; return "3.16.0", nil }
	for range 3 {
		if v, err := reuse(&p, get); err != nil || v != "3.16.0" {
			t.Fatalf("reuse = %q, %v", v, err)
		}
	}
	if reads != 1 {
		t.Fatalf("%d reads for three uses within %v, want 1", reads, engineFactsFor)
	}
	p.Store(&fetched[string]{"3.15.0", time.Now().Add(-engineFactsFor - time.Second)})
	if v, _ := reuse(&p, get); v != "3.16.0" || reads != 2 {
		t.Errorf("an old reading was reused (%q, %d reads): a restarted backend would not be noticed", v, reads)
	}
	p.Store(nil)
	if _, err := reuse(&p, func() (string, error) { return "", errors.New("down") }); err == nil || p.Load() != nil {
		t.Error("a failed reading was kept")
	}
}
