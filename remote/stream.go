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

// streamSet hands on one query's series as their frames are decoded. A long
// series spans frames that repeat its labels: frames are read one ahead so
// that those are handed on as one series. Each series is charged to the
// budget when it is complete.
//
// It is not safe for concurrent use, like every storage.SeriesSet.
type streamSet struct {
	c      *Client
	frames storage.SeriesSet // one series per frame, in the backend's order
	budget Budget
	done   func()      // ends the call: cancels its context, at most once
	wait   *time.Timer // Client.waitTimer: runs only while Next waits on the backend

	ahead     storage.Series // first frame of the next series, read ahead
	aheadLset labels.Labels
	cur       storage.Series
	prev      labels.Labels
	handed    int  // series handed on
	peeked    bool // cur was read by Read and is not handed on yet
	finished  bool
	err       error
}

func newStreamSet(c *Client, frames storage.SeriesSet, budget Budget, cancel context.CancelFunc) *streamSet {
	return &streamSet{c: c, frames: frames, budget: budget, done: sync.OnceFunc(func() {
		cancel()
		if c.closed.Load() {
			// The client was closed while this stream used a connection.
			c.http.CloseIdleConnections()
		}
	})}
}

// Next implements storage.SeriesSet.
func (s *streamSet) Next() (ok bool) {
	if s.peeked {
		s.peeked = false
		s.handed++
		return true
	}
	if s.finished {
		return false
	}
	if s.wait != nil {
		s.wait.Reset(time.Duration(s.c.cfg.Timeout))
		defer s.wait.Stop()
	}
	defer func() {
		// The decoding library trusts frames that pass their checksum (a
		// frame without series panics it); a broken backend must fail its
		// query, not the process.
		if r := recover(); r != nil {
			s.fail(fmt.Errorf("%w: %v", ErrBadResponse, r))
			ok = false
		}
	}()
	if s.ahead == nil && !s.advance() {
		return false
	}
	lset := s.aheadLset
	parts := []storage.Series{s.ahead}
	s.ahead = nil
	for s.advance() {
		if !labels.Equal(s.aheadLset, lset) {
			break
		}
		parts = append(parts, s.ahead)
		s.ahead = nil
	}
	if s.err != nil {
		// The frame that broke may have continued this series.
		return false
	}
	if s.handed > 0 && labels.Compare(s.prev, lset) >= 0 {
		s.fail(fmt.Errorf("%w: series %s after %s: the answer is not sorted by labels", ErrBadResponse, lset, s.prev))
		return false
	}
	if s.budget != nil {
		if err := s.budget.AddSeries(lset.Hash()); err != nil {
			s.fail(err)
			return false
		}
	}
	var series storage.Series = labeledSeries{Series: parts[0], lset: lset}
	if len(parts) > 1 {
		series = labeledSeries{Series: storage.ChainedSeriesMerge(parts...), lset: lset}
	}
	s.cur, s.prev = series, lset
	s.handed++
	return true
}

// advance reads the next frame into ahead; false at the end of the answer
// or on an error (then in err).
func (s *streamSet) advance() bool {
	if s.frames.Next() {
		s.ahead = s.frames.At()
		s.aheadLset = s.ahead.Labels()
		return true
	}
	if err := s.frames.Err(); err != nil {
		s.fail(err)
		return false
	}
	s.finished = true
	s.done()
	return false
}

func (s *streamSet) fail(err error) {
	if s.err == nil {
		if s.handed > 0 {
			err = fmt.Errorf("%w after %d series: %w", ErrStreamBroken, s.handed, err)
		}
		s.err = fmt.Errorf("backend %s: remote read: %w", s.c.URL(), s.c.scrub(err))
	}
	s.finished = true
	s.ahead = nil
	s.done()
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
	if !s.finished {
		s.finished = true
		s.peeked = false
		s.done()
	}
}
