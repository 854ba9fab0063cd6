package httpapi

import (
	"context"
	"sync/atomic"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

// readStats counts what one request read from the backends, for the request
// log. A cache hit reads nothing and shows as zero.
type readStats struct {
	series, samples atomic.Int64
}

type readStatsKey struct{}

func withReadStats(ctx context.Context) (context.Context, *readStats) {
	st := &readStats{}
	return context.WithValue(ctx, readStatsKey{}, st), st
}

// countingQueryable counts the series and samples the engine and the series
// endpoint read through it, into the readStats of the request's context.
type countingQueryable struct {
	storage.SampleAndChunkQueryable
}

func (q countingQueryable) Querier(mint, maxt int64) (storage.Querier, error) {
	inner, err := q.SampleAndChunkQueryable.Querier(mint, maxt)
	if err != nil {
		return nil, err
	}
	return countingQuerier{inner}, nil
}

type countingQuerier struct{ storage.Querier }

func (q countingQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	set := q.Querier.Select(ctx, sortSeries, hints, ms...)
	st, _ := ctx.Value(readStatsKey{}).(*readStats)
	if st == nil {
		return set
	}
	return &countingSet{SeriesSet: set, st: st}
}

type countingSet struct {
	storage.SeriesSet
	st *readStats
}

func (s *countingSet) Next() bool {
	if s.SeriesSet.Next() {
		s.st.series.Add(1)
		return true
	}
	return false
}

func (s *countingSet) At() storage.Series { return countingSeries{s.SeriesSet.At(), s.st} }

type countingSeries struct {
	storage.Series
	st *readStats
}

func (s countingSeries) Iterator(it chunkenc.Iterator) chunkenc.Iterator {
	// The engine hands back the previous series' iterator for reuse:
	// pass the wrapped one down, so the reuse still works.
	if ci, ok := it.(*countingIterator); ok {
		ci.flush()
		ci.Iterator = s.Series.Iterator(ci.Iterator)
		ci.st = s.st
		return ci
	}
	return &countingIterator{Iterator: s.Series.Iterator(it), st: s.st}
}

// countingIterator counts samples locally and adds them to the request's
// total in batches: an atomic add per sample costs a tenth of a query's time.
// Samples after the last batch of a series the engine stops reading early
// are not counted, so the total is a close lower bound.
type countingIterator struct {
	chunkenc.Iterator
	st *readStats
	n  int64
}

const countBatch = 1024

func (it *countingIterator) Next() chunkenc.ValueType {
	v := it.Iterator.Next()
	if v == chunkenc.ValNone {
		it.flush()
		return v
	}
	if it.n++; it.n == countBatch {
		it.flush()
	}
	return v
}

func (it *countingIterator) flush() {
	if it.n > 0 {
		it.st.samples.Add(it.n)
		it.n = 0
	}
}
