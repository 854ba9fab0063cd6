package engine

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
)

func TestPolicySeriesSetYields(t *testing.T) {
	calls := 0
	var stop error
	ctx := WithYield(context.Background(), func(context.Context) error { calls++; return stop })
	series := []storage.Series{
		storage.NewListSeries(labels.FromStrings("__name__", "a"), chunks.GenerateSamples(0, 3*yieldEvery)),
		storage.NewListSeries(labels.FromStrings("__name__", "b"), chunks.GenerateSamples(0, 10)),
	}
	ss := &policySeriesSet{SeriesSet: newList(series), ctx: ctx, yield: yieldFrom(ctx)}
	if !ss.Next() || calls != 1 {
		t.Fatalf("after the first series: %d yields, want 1", calls)
	}
	var it chunkenc.Iterator
	it = ss.At().Iterator(it)
	n := 0
	for it.Next() != chunkenc.ValNone {
		it.At()
		n++
	}
	if n != 3*yieldEvery || calls != 1+3 {
		t.Fatalf("%d samples read, %d yields; want %d and 4", n, calls, 3*yieldEvery)
	}
	// The iterator is reused across series, still yielding.
	if it2 := ss.At().Iterator(it); it2 != it {
		t.Error("the yielding iterator was not reused")
	}
	stop = context.Canceled
	if ss.Next() || !errors.Is(ss.Err(), context.Canceled) {
		t.Fatalf("a yield ending with the context must end the set with its error, got %v", ss.Err())
	}
}

func newList(s []storage.Series) storage.SeriesSet { return &seriesList{series: s} }
