package cache

import (
	"context"
	"math"
	"sort"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/tracing"
)

// grid is a range query's evaluation timestamps, start + k·step, in ms as
// the engine computes them. Extents are runs of `points` consecutive grid
// points at absolute positions (offset + i·points·step), so the extents of a
// window that slides by whole steps are the same as before.
type grid struct {
	start, last int64 // first and last evaluation timestamps
	step        int64
	offset      int64 // start mod step, in [0, step)
	points      int64 // grid points per extent
}

func newGrid(start, end time.Time, step, split time.Duration) (grid, bool) {
	g := grid{start: timeMilliseconds(start), step: int64(step / time.Millisecond)}
	e := timeMilliseconds(end)
	if g.step <= 0 || e < g.start {
		return grid{}, false
	}
	g.last = g.start + (e-g.start)/g.step*g.step
	g.offset = floorMod(g.start, g.step)
	g.points = max(1, int64(math.Round(float64(split)/float64(step))))
	return g, true
}

func (g grid) extent(t int64) int64 { return floorDiv(t-g.offset, g.step*g.points) }

func (g grid) extentStart(i int64) int64 { return g.offset + i*g.step*g.points }

func (g grid) extentEnd(i int64) int64 { return g.extentStart(i) + (g.points-1)*g.step }

// floor is the last grid point at or before t.
func (g grid) floor(t int64) int64 { return t - floorMod(t-g.offset, g.step) }

func (g grid) onGrid(t int64) bool { return floorMod(t-g.offset, g.step) == 0 }

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

func floorMod(a, b int64) int64 { return a - floorDiv(a, b)*b }

// rangeQuery is one cacheable range query.
type rangeQuery struct {
	e     *Engine
	q     storage.Queryable
	opts  promql.QueryOpts
	qs    string
	grid  grid
	key   keyFields // fields shared by all extents of the query
	lead  int64
	atMax int64
}

// slot is the part of one extent that the query needs, and what the store
// had for it.
type slot struct {
	idx      int64
	from, to int64 // needed grid points
	key      string
	digest   digest
	cached   *extent // nil when missing
}

const (
	noTime  = math.MinInt64
	endTime = math.MaxInt64
)

func (rq *rangeQuery) exec(ctx context.Context, inner promql.Query) *execResult {
	e, g := rq.e, rq.grid
	cutoff := e.cutoff(rq.lead)
	settledTo := g.floor(cutoff) // nothing after it is read from or written to the store
	if rq.atMax > cutoff {
		settledTo = noTime
	}

	lookupCtx, span := tracing.StartSpan(ctx, "cache lookup", attribute.String("kind", "range"))
	slots := rq.lookup(lookupCtx, settledTo)
	if span.IsRecording() {
		hits := 0
		for _, sl := range slots {
			if sl.cached != nil {
				hits++
			}
		}
		span.SetAttributes(attribute.Int("extents", len(slots)), attribute.Int("extents_hit", hits), attribute.Int("extents_missed", len(slots)-hits))
	}
	span.End()

	// One run of the wrapped engine from the first missing point to the last.
	runFrom, runTo := int64(endTime), int64(noTime)
	for _, sl := range slots {
		// The needed points the entry covers, if any: an entry may hold
		// another part of the extent than this query needs.
		lo, hi := sl.from, int64(noTime)
		if c := sl.cached; c != nil {
			lo, hi = max(sl.from, c.from), min(sl.to, c.to)
		}
		if lo > hi {
			runFrom, runTo = min(runFrom, sl.from), max(runTo, sl.to)
			continue
		}
		if sl.from < lo {
			runFrom, runTo = min(runFrom, sl.from), max(runTo, lo-g.step)
		}
		if hi < sl.to {
			runFrom, runTo = min(runFrom, hi+g.step), max(runTo, sl.to)
		}
	}

	r := &execResult{}
	var run []series
	if runFrom <= runTo {
		q := inner
		if runFrom != g.start || runTo != g.last {
			sub, err := e.next.NewRangeQuery(ctx, rq.q, rq.opts, rq.qs, fromMilliseconds(runFrom), fromMilliseconds(runTo), time.Duration(g.step)*time.Millisecond)
			if err != nil {
				return &execResult{err: err}
			}
			defer sub.Close()
			q = sub
		}
		if span := trace.SpanFromContext(ctx); span.IsRecording() {
			span.AddEvent("evaluating the missing points", trace.WithAttributes(attribute.String("from", fromMilliseconds(runFrom).UTC().Format(time.RFC3339)), attribute.String("to", fromMilliseconds(runTo).UTC().Format(time.RFC3339))))
		}
		res := q.Exec(ctx)
		r.warnings, r.err = res.Warnings, res.Err
		if st := q.Stats(); st != nil {
			r.samples = st.Samples
		}
		if res.Err != nil {
			return r
		}
		mat, _ := res.Value.(promql.Matrix)
		run = fromMatrix(mat)
	} else {
		runFrom, runTo = g.last+g.step, g.last // empty
	}

	// Stitch in time order: cached points before the run, the run, cached
	// points after it.
	a := newAssembler()
	for _, sl := range slots {
		if sl.cached != nil {
			a.add(sl.cached.series, sl.from, min(sl.to, runFrom-g.step), true)
		}
	}
	a.add(run, runFrom, runTo, false)
	for _, sl := range slots {
		if sl.cached != nil {
			a.add(sl.cached.series, max(sl.from, runTo+g.step), sl.to, true)
		}
	}
	r.value = a.matrix()

	// A run with warnings may be partial: none of it is kept.
	if run != nil && len(r.warnings) == 0 {
		e.set(ctx, rq.entries(slots, run, runFrom, runTo, settledTo))
	}
	return r
}

// lookup builds the query's slots and fills in what the store holds for
// those that may be cached at all.
func (rq *rangeQuery) lookup(ctx context.Context, settledTo int64) []slot {
	e, g := rq.e, rq.grid
	first, last := g.extent(g.start), g.extent(g.last)
	slots := make([]slot, 0, last-first+1)
	var keys []string
	for i := first; i <= last; i++ {
		sl := slot{idx: i, from: max(g.start, g.extentStart(i)), to: min(g.last, g.extentEnd(i))}
		if sl.from <= settledTo {
			sl.digest = rq.key.int(g.extentStart(i)).digest()
			sl.key = rq.e.storeKey(sl.digest)
			keys = append(keys, sl.key)
		}
		slots = append(slots, sl)
	}
	if len(keys) == 0 {
		return slots
	}
	vals, ok := e.get(ctx, keys)
	if !ok {
		return slots
	}
	j := 0
	for i := range slots {
		sl := &slots[i]
		if sl.key == "" {
			continue
		}
		b := vals[j]
		j++
		if b == nil {
			e.countLookup(false)
			continue
		}
		ext, err := rq.decode(b, sl, settledTo)
		if err != nil {
			e.corrupt(sl.key, err)
		}
		e.countLookup(ext != nil)
		sl.cached = ext
	}
	return slots
}

// decode opens an extent and checks that its coverage lies on this query's
// grid inside the extent; it is clipped to what is settled now.
func (rq *rangeQuery) decode(b []byte, sl *slot, settledTo int64) (*extent, error) {
	g := rq.grid
	p, ok := rq.e.sealer.open(b, kindExtent, sl.digest)
	if !ok {
		return nil, errCorrupt
	}
	ext, err := decodeExtent(p)
	if err != nil {
		return nil, err
	}
	if !g.onGrid(ext.from) || !g.onGrid(ext.to) || ext.from > ext.to ||
		ext.from < g.extentStart(sl.idx) || ext.to > g.extentEnd(sl.idx) {
		return nil, errCorrupt
	}
	ext.to = min(ext.to, settledTo)
	if ext.from > ext.to {
		return nil, nil
	}
	return ext, nil
}

// entries returns the extents the run adds to or extends. An extent's
// coverage stays one contiguous run of grid points: the run's part, joined
// with what was cached when the two touch.
func (rq *rangeQuery) entries(slots []slot, run []series, runFrom, runTo, settledTo int64) []Entry {
	g := rq.grid
	var out []Entry
	for _, sl := range slots {
		if sl.key == "" {
			continue // not settled
		}
		rf, rt := max(runFrom, g.extentStart(sl.idx)), min(runTo, g.extentEnd(sl.idx))
		if rf > rt {
			continue
		}
		from, to := rf, rt
		c := sl.cached
		if c != nil && c.from <= rt+g.step && c.to >= rf-g.step {
			from, to = min(from, c.from), max(to, c.to)
		} else {
			c = nil
		}
		to = min(to, settledTo)
		if from > to || (c != nil && from == c.from && to == c.to) {
			continue
		}
		a := newAssembler()
		if c != nil {
			a.add(c.series, from, min(to, rf-g.step), true)
		}
		a.add(run, rf, min(rt, to), true)
		if c != nil {
			a.add(c.series, max(from, rt+g.step), to, true)
		}
		ext := &extent{from: from, to: to, series: a.finish()}
		out = append(out, Entry{Key: sl.key, Value: rq.e.sealer.seal(appendExtent(newValue(kindExtent, sl.digest), ext))})
	}
	return out
}

// fromMatrix views an engine result as series with encoded label blocks.
func fromMatrix(m promql.Matrix) []series {
	ss := make([]series, len(m))
	for i, s := range m {
		ss[i] = series{lblock: appendLabels(nil, s.Metric), metric: s.Metric, hasMetric: true, dropName: s.DropName, floats: s.Floats, hists: s.Histograms}
	}
	return ss
}

// assembler joins pieces of series by label set, points in the order the
// pieces are added. Pieces are only noted by add; finish sizes every
// series once and copies the points.
type assembler struct {
	index  map[string]int
	out    []series
	nf, nh []int
	pieces []piece
	sb     labels.ScratchBuilder
}

type piece struct {
	ss     []series
	idx    []int // position in out of each series, -1 when it has no point here
	lo, hi int64
	owned  bool
}

func newAssembler() *assembler {
	return &assembler{index: map[string]int{}, sb: labels.NewScratchBuilder(8)}
}

// add notes the points of ss between lo and hi. Histograms of pieces that
// are not owned (the engine's, recycled when its query closes) are copied.
func (a *assembler) add(ss []series, lo, hi int64, owned bool) {
	if lo > hi || len(ss) == 0 {
		return
	}
	p := piece{ss: ss, idx: make([]int, len(ss)), lo: lo, hi: hi, owned: owned}
	for i := range ss {
		s := &ss[i]
		nf, nh := s.countFloats(lo, hi), len(histsIn(s.hists, lo, hi))
		if nf == 0 && nh == 0 {
			p.idx[i] = -1
			continue
		}
		j, ok := a.index[string(s.lblock)]
		if !ok {
			j = len(a.out)
			a.out = append(a.out, series{lblock: s.lblock, metric: s.metric, hasMetric: s.hasMetric, dropName: s.dropName})
			a.nf, a.nh = append(a.nf, 0), append(a.nh, 0)
			a.index[string(s.lblock)] = j
		}
		a.nf[j] += nf
		a.nh[j] += nh
		p.idx[i] = j
	}
	a.pieces = append(a.pieces, p)
}

// finish copies the noted points into series sized exactly.
func (a *assembler) finish() []series {
	for j := range a.out {
		if a.nf[j] > 0 {
			a.out[j].floats = make([]promql.FPoint, 0, a.nf[j])
		}
		if a.nh[j] > 0 {
			a.out[j].hists = make([]promql.HPoint, 0, a.nh[j])
		}
	}
	for _, p := range a.pieces {
		for i := range p.ss {
			j := p.idx[i]
			if j < 0 {
				continue
			}
			s, o := &p.ss[i], &a.out[j]
			o.floats = s.appendFloats(o.floats, p.lo, p.hi)
			for _, h := range histsIn(s.hists, p.lo, p.hi) {
				if !p.owned {
					h.H = copyHistogram(h.H)
				}
				o.hists = append(o.hists, h)
			}
		}
	}
	a.pieces = nil
	return a.out
}

// matrix returns the joined series sorted by labels, as the engine sorts
// range query results.
func (a *assembler) matrix() promql.Matrix {
	out := a.finish()
	m := make(promql.Matrix, 0, len(out))
	for _, s := range out {
		ls := s.metric
		if !s.hasMetric {
			var err error
			if ls, err = labelsFromBlock(s.lblock, &a.sb); err != nil {
				continue // cannot happen: blocks were checked when decoded
			}
		} else {
			ls = ls.Copy()
		}
		m = append(m, promql.Series{Metric: ls, DropName: s.dropName, Floats: s.floats, Histograms: s.hists})
	}
	sort.Sort(m)
	return m
}

func floatsIn(ps []promql.FPoint, lo, hi int64) []promql.FPoint {
	i := sort.Search(len(ps), func(i int) bool { return ps[i].T >= lo })
	j := sort.Search(len(ps), func(j int) bool { return ps[j].T > hi })
	if i >= j {
		return nil
	}
	return ps[i:j]
}

func histsIn(ps []promql.HPoint, lo, hi int64) []promql.HPoint {
	i := sort.Search(len(ps), func(i int) bool { return ps[i].T >= lo })
	j := sort.Search(len(ps), func(j int) bool { return ps[j].T > hi })
	if i >= j {
		return nil
	}
	return ps[i:j]
}

// copyHistogram copies every field, keeping nil and empty slices apart.
func copyHistogram(h *histogram.FloatHistogram) *histogram.FloatHistogram {
	if h == nil {
		return nil
	}
	c := *h
	c.PositiveSpans = cloneSlice(h.PositiveSpans)
	c.NegativeSpans = cloneSlice(h.NegativeSpans)
	c.PositiveBuckets = cloneSlice(h.PositiveBuckets)
	c.NegativeBuckets = cloneSlice(h.NegativeBuckets)
	c.CustomValues = cloneSlice(h.CustomValues)
	return &c
}

func cloneSlice[T any](s []T) []T {
	if s == nil {
		return nil
	}
	return append(make([]T, 0, len(s)), s...)
}
