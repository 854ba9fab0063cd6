package engine

import (
	"context"
	"fmt"

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
//
// Identical selects of one query (same matchers, time range and hints, as
// in `up or up or …`) share one read: each is a view of it, and a read
// with several views is read whole once and replayed to each.
type lazySeriesSet struct {
	r  *sharedRead
	ss storage.SeriesSet
}

// sharedRead is one fan-out of a query and the views that read it.
type sharedRead struct {
	// start runs the fan-out; buffered reads every answer whole.
	start func(buffered bool) storage.SeriesSet
	q     *querier
	key   string

	// Guarded by q.mu. Once claimed, the read leaves q.reads: a later
	// identical select gets a read of its own.
	views   int
	claimed bool

	done   chan struct{} // closed when answer is set (read whole)
	answer *readAnswer
}

// readAnswer is a read held whole, replayed to each of its views.
type readAnswer struct {
	series []storage.Series
	warns  annotations.Annotations
	err    error
}

func (a *readAnswer) replay() storage.SeriesSet {
	if a.err != nil {
		return storage.ErrSeriesSet(a.err)
	}
	return &seriesList{series: a.series, warns: a.warns}
}

// hold reads ss whole.
func hold(ss storage.SeriesSet) *readAnswer {
	a := &readAnswer{}
	for ss.Next() {
		a.series = append(a.series, ss.At())
	}
	a.err = ss.Err()
	a.warns = ss.Warnings()
	return a
}

func (l *lazySeriesSet) Next() bool {
	if l.ss == nil {
		l.ss = l.r.take()
	}
	return l.ss.Next()
}

// claim makes the caller the one to run the read; it reports false when
// someone already did. views is the number of selects sharing the read.
func (r *sharedRead) claim() (ok bool, views int) {
	r.q.mu.Lock()
	defer r.q.mu.Unlock()
	if r.claimed {
		return false, r.views
	}
	r.claimed = true
	if r.q.reads[r.key] == r {
		delete(r.q.reads, r.key)
	}
	return true, r.views
}

// take returns a view's answer: the read held whole (prefetched, or shared
// with identical selects), or a streamed fan-out run now, which starts the
// prefetch of the query's other reads.
func (r *sharedRead) take() storage.SeriesSet {
	ok, views := r.claim()
	if !ok {
		<-r.done
		return r.answer.replay()
	}
	if !r.q.f.opts.Remote.SequentialSelects {
		r.q.prefetchOthers(r)
	}
	if views == 1 {
		return r.start(false)
	}
	r.answer = hold(r.start(true))
	close(r.done)
	return r.answer.replay()
}

// prefetchOthers starts the fan-out of every read of the query not started
// yet, each in its own goroutine, read whole.
func (q *querier) prefetchOthers(except *sharedRead) {
	q.mu.Lock()
	pending := q.pending
	q.pending = nil
	q.mu.Unlock()
	for _, r := range pending {
		if r == except {
			continue
		}
		if ok, _ := r.claim(); ok {
			go func() {
				r.answer = hold(r.start(true))
				close(r.done)
			}()
		}
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
