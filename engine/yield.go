package engine

import (
	"context"

	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

// YieldFunc pauses the calling request while others should run first (the
// admission package's time sharing). It returns ctx's error if ctx ends
// during the pause.
type YieldFunc func(context.Context) error

type yieldKey struct{}

// WithYield makes the reads and the evaluation of queries run with ctx call
// yield as they go: once per series read and every yieldEvery samples the
// engine reads. Without it they never pause.
func WithYield(ctx context.Context, yield YieldFunc) context.Context {
	if yield == nil {
		return ctx
	}
	return context.WithValue(ctx, yieldKey{}, yield)
}

func yieldFrom(ctx context.Context) YieldFunc {
	y, _ := ctx.Value(yieldKey{}).(YieldFunc)
	return y
}

// yieldEvery is how many samples an iterator steps between yields: often
// enough that a pause starts within a fraction of a millisecond, rarely
// enough that the check costs nothing measurable.
const yieldEvery = 512

// yieldingAt is s, with iterators that call yield as they step when yield
// is set: what a series set reading for a request with a yield function
// hands the engine.
func yieldingAt(ctx context.Context, s storage.Series, yield YieldFunc) storage.Series {
	if yield == nil {
		return s
	}
	return yieldingSeries{Series: s, ctx: ctx, yield: yield}
}

// yieldingSeries hands out iterators that yield as they step.
type yieldingSeries struct {
	storage.Series
	ctx   context.Context
	yield YieldFunc
}

func (s yieldingSeries) Iterator(reuse chunkenc.Iterator) chunkenc.Iterator {
	if y, ok := reuse.(*yieldingIterator); ok {
		y.Iterator = s.Series.Iterator(y.Iterator)
		y.ctx, y.yield, y.steps = s.ctx, s.yield, 0
		return y
	}
	return &yieldingIterator{Iterator: s.Series.Iterator(reuse), ctx: s.ctx, yield: s.yield}
}

type yieldingIterator struct {
	chunkenc.Iterator
	ctx   context.Context
	yield YieldFunc
	steps int
}

func (it *yieldingIterator) step() {
	if it.steps++; it.steps == yieldEvery {
		it.steps = 0
		// An error is the context ending: the engine checks the context
		// itself and reports it.
		_ = it.yield(it.ctx)
	}
}

// The steps are counted where the engine reads a sample's value or time:
// Next and Seek would be the natural places, but a method named Seek with
// this signature is refused by go vet's standard-methods check.
func (it *yieldingIterator) At() (int64, float64) {
	it.step()
	return it.Iterator.At()
}

func (it *yieldingIterator) AtT() int64 {
	it.step()
	return it.Iterator.AtT()
}
