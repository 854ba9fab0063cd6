package admission

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// maxRefusalWait is the longest a request waits for its tenant's refusal
// debt to drain; a longer wait is answered 429 at once with Retry-After,
// so waiting requests stay few and short.
const maxRefusalWait = 5 * time.Second

// refusalSweepAt is the number of tenants with a debt above which a new
// refusal first forgets the drained ones (tenants named by unverified
// headers are not bounded by the policies).
const refusalSweepAt = 1024

// refusals is every tenant's refusal debt: each request refused by a limit
// adds one, and it drains at the tenant's refusals_per_second. A request
// arriving while the debt is over refusal_burst waits until it is back
// under. A loop that sends again at once what was just refused costs the
// proxy reading, parsing and answering every copy, outside any slot and
// turn: at 500 refusals a second that was most of a 2-core machine. The
// wait costs nothing, and a client that waits for its answer before
// sending the next request is held to the drain rate.
type refusals struct {
	mu    sync.Mutex
	debts map[string]*refusalDebt
}

type refusalDebt struct {
	level   float64   // refusals not yet drained, as of at
	at      time.Time // when level was last brought up to date
	rate    float64   // the tenant's refusals_per_second at its last refusal
	waiting int       // requests waiting for the debt to drain
}

// drain brings the debt up to now at rate per second.
func (d *refusalDebt) drain(now time.Time, rate float64) {
	if el := now.Sub(d.at).Seconds(); el > 0 {
		d.level = max(0, d.level-el*rate)
	}
	d.at = now
}

// NoteRefused adds one refused request to tenant's debt (limits without a
// refusals_per_second keep none).
func (s *Scheduler) NoteRefused(tenant string, l Limits) {
	if l.RefusalsPerSecond <= 0 {
		return
	}
	now := time.Now()
	r := &s.refusals
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.debts == nil {
		r.debts = map[string]*refusalDebt{}
	}
	d := r.debts[tenant]
	if d == nil {
		if len(r.debts) >= refusalSweepAt {
			r.sweep(now)
		}
		d = &refusalDebt{at: now}
		r.debts[tenant] = d
	}
	d.drain(now, l.RefusalsPerSecond)
	d.level++
	d.rate = l.RefusalsPerSecond
}

// sweep forgets the debts drained by now, each at its tenant's rate
// (called with mu held).
func (r *refusals) sweep(now time.Time) {
	for t, d := range r.debts {
		if d.waiting == 0 && d.level-now.Sub(d.at).Seconds()*d.rate <= 0 {
			delete(r.debts, t)
		}
	}
}

// AwaitRefusals holds a request of tenant (label: its metrics label)
// while the tenant's refusal debt is over refusal_burst, until it drains
// back under, and returns how long it waited. A wait over maxRefusalWait,
// or more waiting requests than the tenant's max_queued_requests, is a
// *QueueError at once (429); ctx ending first is ErrCanceled.
func (s *Scheduler) AwaitRefusals(ctx context.Context, tenant, label string, l Limits) (time.Duration, error) {
	if l.RefusalsPerSecond <= 0 {
		return 0, nil
	}
	now := time.Now()
	r := &s.refusals
	r.mu.Lock()
	d := r.debts[tenant]
	if d == nil {
		r.mu.Unlock()
		return 0, nil
	}
	d.drain(now, l.RefusalsPerSecond)
	over := d.level - float64(l.RefusalBurst)
	if over <= 0 {
		r.mu.Unlock()
		return 0, nil
	}
	wait := time.Duration(over / l.RefusalsPerSecond * float64(time.Second))
	if wait > maxRefusalWait || (l.MaxQueuedRequests > 0 && d.waiting >= l.MaxQueuedRequests) {
		debt := int(d.level)
		r.mu.Unlock()
		s.Rejected(label, ReasonRefusalBackoff)
		return 0, &QueueError{Reason: ReasonRefusalBackoff, RetryAfter: max(time.Second, wait),
			Msg: fmt.Sprintf("%d of the tenant's recent requests were refused by limits; send again later (limits.refusals_per_second)", debt)}
	}
	d.waiting++
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		d.waiting--
		r.mu.Unlock()
	}()
	t := time.NewTimer(wait)
	defer t.Stop()
	defer func() { s.metrics.refusalWait.WithLabelValues(label).Observe(time.Since(now).Seconds()) }()
	select {
	case <-t.C:
		return wait, nil
	case <-ctx.Done():
		return time.Since(now), ErrCanceled
	}
}
