package engine

import (
	"context"
	"fmt"
	"sync"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/remote"
)

// lazySeriesSet starts its fan-out when the engine first reads it. The
// engine selects every selector of a query before it evaluates any, so an
// eager streamed read would hold one open answer (and one of the backend's
// few concurrent-read slots) per selector until evaluation reaches it;
// lazily, a query streams one selector at a time.
//
// The other selectors of the query are known by then: the first set read
// starts theirs at once (prefetch), read whole so they hold no backend slot
// while they wait for the engine, so a query with k selectors waits for
// its backends about once rather than k times in a row.
type lazySeriesSet struct {
	// start runs the fan-out; buffered reads every answer whole.
	start func(buffered bool) storage.SeriesSet
	q     *querier
	ss    storage.SeriesSet

	once     sync.Once
	prefetch chan storage.SeriesSet // set when a prefetch of this set runs
}

func (l *lazySeriesSet) Next() bool {
	if l.ss == nil {
		l.ss = l.take()
	}
	return l.ss.Next()
}

// take returns the set's answer: the prefetched one, or a streamed fan-out
// run now (which starts the prefetch of the query's other sets).
func (l *lazySeriesSet) take() storage.SeriesSet {
	claimed := false
	l.once.Do(func() { claimed = true })
	if !claimed {
		return <-l.prefetch
	}
	if l.q != nil {
		l.q.prefetchOthers(l)
	}
	return l.start(false)
}

// prefetchOthers starts the fan-out of every set of the query not started
// yet, each in its own goroutine, read whole.
func (q *querier) prefetchOthers(except *lazySeriesSet) {
	q.mu.Lock()
	pending := q.pending
	q.pending = nil
	q.mu.Unlock()
	for _, l := range pending {
		if l == except {
			continue
		}
		l.once.Do(func() {
			l.prefetch = make(chan storage.SeriesSet, 1)
			go func() { l.prefetch <- l.start(true) }()
		})
	}
}

// drained reads a group's answer whole: a break is then an error of the
// call, which can still fail over, since nothing reached the engine.
func drained(ss storage.SeriesSet) (storage.SeriesSet, error) {
	var out []storage.Series
	for ss.Next() {
		out = append(out, ss.At())
	}
	if err := ss.Err(); err != nil {
		return nil, err
	}
	return &seriesList{series: out, warns: ss.Warnings()}, nil
}

func (l *lazySeriesSet) At() storage.Series { return l.ss.At() }

func (l *lazySeriesSet) Err() error {
	if l.ss == nil {
		return nil
	}
	return l.ss.Err()
}

func (l *lazySeriesSet) Warnings() annotations.Annotations {
	if l.ss == nil {
		return nil
	}
	return l.ss.Warnings()
}

// StreamError fails a query whose answer from a group broke off after some
// of its series had reached the engine: failing over then would count
// those twice, and going on would answer short.
type StreamError struct {
	Group string
	// Replica is the backend that broke off (redacted URL), which a second
	// evaluation tries last (ReEvaluating); never shown to a tenant.
	Replica string
	Err     error
}

func (e *StreamError) Error() string {
	return fmt.Sprintf("group %s: answer broke off mid-stream: %v", e.Group, e.Err)
}

func (e *StreamError) Unwrap() error { return e.Err }

// streamedGroup shows one group's streamed answer as its answers must look
// (applyToSeriesSet) and turns a stream that breaks into a query error a
// tenant may read.
func streamedGroup(ctx context.Context, f *Fanout, g *discovery.Group, backend string, ss storage.SeriesSet) storage.SeriesSet {
	if _, ok := ss.(interface{ Close() }); !ok {
		// Read whole already (several matcher sets, or buffer_reads).
		return applyToSeriesSet(g, ss)
	}
	if !ss.Next() {
		return ss
	}
	first := ss.At()
	apply := g.ExternalLabelsApplier()
	if !g.BackendsAddLabels() || !labels.Equal(apply(first.Labels()), first.Labels()) {
		// The proxy adds labels the backends do not, or drops a replica
		// label they put on every series: either can reorder the answer,
		// which must then be read whole and sorted again.
		return applyToSeriesSet(g, &replaySeriesSet{SeriesSet: ss, first: first})
	}
	return &relabeledStream{
		src:   &replaySeriesSet{SeriesSet: ss, first: first},
		apply: apply,
		fail: func(err error) error {
			if ctx.Err() != nil {
				// The query ended (timeout, client gone, a cost limit):
				// that is its error, not the backend's.
				return contextError(ctx, "read")
			}
			f.opts.Logger.Warn("backend answer broke off", "group", g.Name, "backend", backend, "err", err)
			return &UnavailableError{Err: tenantSafe(ctx, &StreamError{Group: g.Name, Replica: backend, Err: err})}
		},
	}
}

// replaySeriesSet hands on first, already read from SeriesSet, then the rest.
type replaySeriesSet struct {
	storage.SeriesSet
	first    storage.Series
	replayed bool
	onFirst  bool
}

func (r *replaySeriesSet) Next() bool {
	if !r.replayed {
		r.replayed, r.onFirst = true, true
		return true
	}
	r.onFirst = false
	return r.SeriesSet.Next()
}

func (r *replaySeriesSet) At() storage.Series {
	if r.onFirst {
		return r.first
	}
	return r.SeriesSet.At()
}

// relabeledStream applies a group's external labels to a streamed answer
// that the backends labelled themselves. Only a series storing a replica
// label of its own changes; series that become one are merged (they arrive
// next to each other when the label dropped sorts after their other ones),
// and an answer that the change would put out of order fails rather than
// reaching the merge unsorted.
type relabeledStream struct {
	src   storage.SeriesSet
	apply func(labels.Labels) labels.Labels
	fail  func(error) error

	ahead     storage.Series
	aheadLset labels.Labels
	cur       storage.Series
	prev      labels.Labels
	n         int
	done      bool
	err       error
}

func (s *relabeledStream) advance() bool {
	if !s.src.Next() {
		if err := s.src.Err(); err != nil {
			s.err = s.fail(err)
		}
		s.done = true
		return false
	}
	s.ahead = s.src.At()
	old := s.ahead.Labels()
	s.aheadLset = s.apply(old)
	if !labels.Equal(old, s.aheadLset) {
		s.ahead = relabeledSeries{Series: s.ahead, lset: s.aheadLset}
	}
	return true
}

func (s *relabeledStream) Next() bool {
	if s.err != nil || (s.done && s.ahead == nil) {
		return false
	}
	if s.ahead == nil && !s.advance() {
		return false
	}
	lset := s.aheadLset
	parts := []storage.Series{s.ahead}
	s.ahead = nil
	for s.advance() && labels.Equal(s.aheadLset, lset) {
		parts = append(parts, s.ahead)
		s.ahead = nil
	}
	if s.err != nil {
		return false
	}
	if s.n > 0 && labels.Compare(s.prev, lset) >= 0 {
		s.err = s.fail(fmt.Errorf("%w: series %s after %s once replica labels are dropped", remote.ErrBadResponse, lset, s.prev))
		return false
	}
	s.cur = parts[0]
	if len(parts) > 1 {
		s.cur = storage.ChainedSeriesMerge(parts...)
	}
	s.prev = lset
	s.n++
	return true
}

func (s *relabeledStream) At() storage.Series { return s.cur }
func (s *relabeledStream) Err() error         { return s.err }
func (s *relabeledStream) Warnings() annotations.Annotations {
	return s.src.Warnings()
}
