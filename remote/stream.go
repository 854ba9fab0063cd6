package remote

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"
)

// ErrStreamBroken marks a remote-read answer that broke off after some of
// its series were handed on: the caller cannot fail over any more, and
// must not answer with what it got.
var ErrStreamBroken = errors.New("remote-read answer broke off")

// ErrUnsortedAnswer marks a streamed answer that came out of label order.
// The client reads that backend's answers whole from then on, so the same
// read made again succeeds.
var ErrUnsortedAnswer = errors.New("the answer is not sorted by labels")

// readAhead is how many complete series a stream holds in sent batches
// before its reader asks for them (with the batch being filled, up to
// readAhead+streamBatch are decoded ahead). While the merge waits for a slower group, a group's
// answer keeps arriving (and is charged to the query's budget, so a query
// over its limit fails without waiting for the slow group); the bound keeps
// what a group holds for its reader small (Prometheus sends frames of at
// most 1 MB, typically one series of a few kB).
const readAhead = 256

// streamBatch is how many series the producer hands on at once: a reader
// (the engine expands a selector's whole set before evaluating it) takes
// series faster than they are decoded, so handing them on one by one
// parked and woke it once a series, a few percent of the proxy's CPU.
// The first series is sent alone (Read waits for it), then a batch when
// full and at the end of the answer; the series of a batch not sent when
// the answer breaks never reached the reader.
const streamBatch = 128

// streamSet hands on one query's series as their frames are decoded. A
// goroutine reads the frames, up to readAhead series ahead of the reader,
// and hands them on in batches of streamBatch. A
// long series spans frames that repeat its labels: frames are read one ahead
// so that those are handed on as one series. Each series is charged to the
// budget when it is complete.
//
// It is not safe for concurrent use, like every storage.SeriesSet.
type streamSet struct {
	c     *Client
	ch    chan []storage.Series // closed when the producer ends
	stop  chan struct{}         // closed by Close
	close func()
	// endErr is why the producer ended early, read after ch is closed.
	endErr error

	cur      storage.Series
	batch    []storage.Series // received, not handed on yet
	handed   int              // series handed on
	peeked   bool             // cur was read by Read and is not handed on yet
	finished bool
	err      error
}

// newStreamSet starts the producer over frames (the library's set, one
// series per frame). wait is the call's Client.waitTimer: it runs only
// while the producer waits on the backend. done ends the call (cancels its
// context) and ctx is that context.
func newStreamSet(ctx context.Context, c *Client, frames storage.SeriesSet, budget Budget, wait *time.Timer, cancel context.CancelFunc) *streamSet {
	s := &streamSet{c: c, ch: make(chan []storage.Series, readAhead/streamBatch), stop: make(chan struct{})}
	done := sync.OnceFunc(func() {
		wait.Stop()
		cancel()
		if c.closed.Load() {
			// The client was closed while this stream used a connection.
			c.closeIdle()
		}
	})
	s.close = sync.OnceFunc(func() { close(s.stop); done() })
	p := &producer{c: c, frames: frames, budget: budget, wait: wait, timeout: time.Duration(c.cfg.Timeout)}
	go func() {
		defer close(s.ch)
		defer done()
		s.endErr = p.run(ctx, s.ch, s.stop)
	}()
	return s
}

// Next implements storage.SeriesSet.
func (s *streamSet) Next() bool {
	if s.peeked {
		s.peeked = false
		s.handed++
		return true
	}
	if s.finished {
		return false
	}
	if len(s.batch) == 0 {
		batch, ok := <-s.ch
		if !ok {
			s.finished = true
			if s.endErr != nil {
				s.fail(s.endErr)
			}
			return false
		}
		s.batch = batch
	}
	s.cur = s.batch[0]
	s.batch[0] = nil // the reader keeps what it wants; the batch holds nothing
	s.batch = s.batch[1:]
	s.handed++
	return true
}

func (s *streamSet) fail(err error) {
	if s.handed > 0 {
		err = fmt.Errorf("%w after %d series: %w", ErrStreamBroken, s.handed, err)
	}
	s.err = fmt.Errorf("backend %s: remote read: %w", s.c.URL(), s.c.scrub(err))
}

// At implements storage.SeriesSet.
func (s *streamSet) At() storage.Series { return s.cur }

// Err implements storage.SeriesSet.
func (s *streamSet) Err() error { return s.err }

// Warnings implements storage.SeriesSet.
func (*streamSet) Warnings() annotations.Annotations { return nil }

// Close ends the call when its answer is not read to the end (the reader
// gave up): the connection is torn down rather than left streaming.
func (s *streamSet) Close() {
	s.finished, s.peeked, s.batch = true, false, nil
	s.close()
}

// producer decodes one answer into complete series.
type producer struct {
	c       *Client
	frames  storage.SeriesSet
	budget  Budget
	wait    *time.Timer
	timeout time.Duration

	ahead     storage.Series // first frame of the next series, read ahead
	aheadLset labels.Labels
	prev      labels.Labels
	produced  int
}

// run sends every series on ch, in batches, and returns nil at the end of
// the answer, or why it stopped early: a broken answer, the call's end, or
// Close.
func (p *producer) run(ctx context.Context, ch chan<- []storage.Series, stop <-chan struct{}) (err error) {
	defer func() {
		// A broken backend must fail its query, not the process: the
		// decoders check what they read, this is in case one misses it.
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrBadResponse, r)
		}
	}()
	send := func(batch []storage.Series) error {
		select {
		case ch <- batch:
			return nil
		case <-stop:
			return errors.New("closed by its reader")
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	batch := make([]storage.Series, 0, 1) // the first series goes alone
	for {
		series, more, err := p.next()
		if err != nil {
			return err
		}
		if !more {
			if len(batch) == 0 {
				return nil
			}
			return send(batch)
		}
		batch = append(batch, series)
		// The first series goes alone: Read waits for it to decide
		// whether the caller may still fail over.
		if len(batch) == streamBatch || p.produced == 1 {
			if err := send(batch); err != nil {
				return err
			}
			batch = make([]storage.Series, 0, streamBatch)
		}
	}
}

// next decodes the next complete series.
func (p *producer) next() (storage.Series, bool, error) {
	if p.ahead == nil {
		if more, err := p.advance(); !more {
			return nil, false, err
		}
	}
	lset := p.aheadLset
	parts := []storage.Series{p.ahead}
	p.ahead = nil
	for {
		more, err := p.advance()
		if err != nil {
			// The frame that broke may have continued this series.
			return nil, false, err
		}
		if !more || !labels.Equal(p.aheadLset, lset) {
			break
		}
		parts = append(parts, p.ahead)
		p.ahead = nil
	}
	if p.produced > 0 && labels.Compare(p.prev, lset) >= 0 {
		// Prometheus sorts a streamed answer by the labels as stored and
		// adds its external labels afterwards: a series storing its own
		// value of an external label's name (federation, honor_labels,
		// remote write) sorts elsewhere once the others get the external
		// value. The backend's reads are buffered from now on, where
		// sortedRuns merges whatever order comes; this read breaks off, and
		// the query is evaluated again (engine.ReEvaluating).
		p.c.unsorted.Store(true)
		return nil, false, fmt.Errorf("%w: %w: series %s after %s (series storing an external label's name?); reads from this backend are buffered from now on", ErrBadResponse, ErrUnsortedAnswer, lset, p.prev)
	}
	if p.budget != nil {
		if err := p.budget.AddSeries(lset.Hash()); err != nil {
			return nil, false, err
		}
	}
	series := parts[0]
	if len(parts) > 1 {
		if joined, ok := joinFrames(parts); ok {
			series = joined
		} else {
			series = labeledSeries{Series: storage.ChainedSeriesMerge(parts...), lset: lset}
		}
	}
	p.prev = lset
	p.produced++
	return series, true, nil
}

// advance reads the next frame into ahead, with the wait timer running:
// false at the end of the answer or on an error.
func (p *producer) advance() (bool, error) {
	p.wait.Reset(p.timeout)
	defer p.wait.Stop()
	if p.frames.Next() {
		p.ahead = p.frames.At()
		p.aheadLset = p.ahead.Labels()
		return true, nil
	}
	return false, p.frames.Err()
}
