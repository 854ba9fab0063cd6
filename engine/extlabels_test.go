package engine

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
)

// haGroup is a group whose replicas reported cluster="eu" and their own
// replica label, as after a health-check round.
func haGroup(t testing.TB) *discovery.Group {
	t.Helper()
	cfg := discovery.DefaultConfig()
	cfg.Static = []discovery.StaticGroup{{Name: "eu", URLs: []string{"http://r0", "http://r1"}}}
	m, err := discovery.NewManager(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	m.CheckNow(context.Background(), func(_ context.Context, _ *discovery.Group, r *discovery.Replica) (labels.Labels, error) {
		return labels.FromStrings("cluster", "eu", "prometheus_replica", r.URL), nil
	})
	return m.Groups()[0]
}

// mockSeries has n samples at start, start+1, ...
func mockSeries(lset []string, start, n int) storage.Series {
	return storage.NewListSeries(labels.FromStrings(lset...), chunks.GenerateSamples(start, n))
}

// TestApplyToSeriesSetSortsAndMerges: adding cluster and dropping the
// replica label reorders series and makes two of them one; the result must
// still be a sorted set with every series once, samples merged.
func TestApplyToSeriesSetSortsAndMerges(t *testing.T) {
	g := haGroup(t)
	in := []storage.Series{
		// Sorted as a backend sends them.
		mockSeries([]string{"__name__", "up", "job", "a"}, 1, 2),
		mockSeries([]string{"__name__", "up", "job", "a", "prometheus_replica", "x"}, 2, 2),
		mockSeries([]string{"__name__", "up", "cluster", "us", "job", "b"}, 5, 1),
	}
	slices.SortFunc(in, func(a, b storage.Series) int { return labels.Compare(a.Labels(), b.Labels()) })
	out := applyToSeriesSet(g, &seriesList{series: in})
	var got []string
	var prev labels.Labels
	for i := 0; out.Next(); i++ {
		s := out.At()
		if i > 0 && labels.Compare(prev, s.Labels()) >= 0 {
			t.Errorf("not sorted: %s after %s", s.Labels(), prev)
		}
		prev = s.Labels()
		var ts []int64
		it := s.Iterator(nil)
		for it.Next() == chunkenc.ValFloat {
			tt, _ := it.At()
			ts = append(ts, tt)
		}
		got = append(got, s.Labels().String()+" "+fmtInts(ts))
	}
	if err := out.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		`{__name__="up", cluster="eu", job="a"} [1 2 3]`,
		`{__name__="up", cluster="us", job="b"} [5]`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("got\n%v\nwant\n%v", got, want)
	}
}

func fmtInts(v []int64) string {
	s := "["
	for i, x := range v {
		if i > 0 {
			s += " "
		}
		s += strconv.FormatInt(x, 10)
	}
	return s + "]"
}

// TestApplyToLabelSets: label sets get the same treatment (series API).
func TestApplyToLabelSets(t *testing.T) {
	g := haGroup(t)
	got := applyToLabelSets(g, []labels.Labels{
		labels.FromStrings("__name__", "up", "job", "a", "prometheus_replica", "r"),
		labels.FromStrings("__name__", "up", "job", "a"),
	})
	if len(got) != 1 || !labels.Equal(got[0], labels.FromStrings("__name__", "up", "cluster", "eu", "job", "a")) {
		t.Errorf("got %v", got)
	}
}

// BenchmarkApplyToSeriesSet measures what showing external labels costs a
// remote-read answer of 10k series, against passing the same answer on
// untouched (baseline) and against a group with no labels to add.
func BenchmarkApplyToSeriesSet(b *testing.B) {
	in := make([]storage.Series, 10_000)
	for i := range in {
		in[i] = storage.NewListSeries(labels.FromStrings("__name__", "up", "instance", strconv.Itoa(100000+i), "job", "api", "prometheus_replica", "r0"), nil)
	}
	plain := discovery.DefaultConfig()
	plain.Static, plain.ReplicaLabels = []discovery.StaticGroup{{Name: "plain", URLs: []string{"http://p"}}}, []string{}
	noLabels, err := discovery.NewManager(plain, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	drain := func(ss storage.SeriesSet) {
		n := 0
		for ss.Next() {
			n += ss.At().Labels().Len()
		}
		if n == 0 {
			b.Fatal("empty")
		}
	}
	b.Run("baseline-untouched", func(b *testing.B) {
		for b.Loop() {
			drain(&seriesList{series: in})
		}
	})
	b.Run("group-without-labels", func(b *testing.B) {
		g := noLabels.Groups()[0]
		for b.Loop() {
			drain(applyToSeriesSet(g, &seriesList{series: in}))
		}
	})
	b.Run("external-and-replica-labels", func(b *testing.B) {
		g := haGroup(b)
		for b.Loop() {
			drain(applyToSeriesSet(g, &seriesList{series: in}))
		}
	})
}
