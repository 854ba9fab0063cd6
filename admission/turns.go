package admission

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Turns shares the CPU between the tenants' running requests. Slots bound
// how many requests run; they do not stop one tenant's long query from
// taking the cores a neighbour's short query needs. So a running request
// yields, at points the query path offers (each series read, every few
// hundred samples evaluated), to a request of another tenant that has run
// for less time than it has (least attained service first: the short query
// finishes first, the long one pays the short one's run time). What a
// request has run counts its tenant's recent requests too (their run time,
// halved every halfLife), so the unit of the share is the tenant: a tenant
// that keeps sending heavy queries starts each new one behind a neighbour
// that has asked for little, instead of level with it. The wait
// ends when the other request finishes, waits for a third one itself, or
// has run as long, and never lasts more than maxWait in a row; after such a wait
// the request runs for grace without yielding, so a stream of neighbours
// cannot starve it.
type Turns struct {
	quantum, maxWait, grace time.Duration
	halfLife                time.Duration // 0: a request's own run time only

	// tenants is how many distinct tenants have running requests; below
	// two, Yield returns at once without taking the lock.
	tenants atomic.Int32

	mu      sync.Mutex
	running map[*Turn]struct{}
	perTen  map[string]int
	// history is the run time of each tenant's ended requests, decayed
	// with halfLife; entries that decayed to nothing are dropped.
	history map[string]decayed
	// changed is closed and replaced when a request ends or starts or
	// stops waiting: what the waiters wait for may have changed.
	changed chan struct{}
}

// Turn is one running request's share of Turns. A nil *Turn never yields.
type Turn struct {
	turns  *Turns
	tenant string
	start  time.Time

	// Guarded by turns.mu.
	waiting   int       // goroutines of the request waiting in Yield
	waitStart time.Time // when waiting went from 0 to 1
	waited    time.Duration
	graceEnd  time.Time
}

// NewTurns returns a CPU share where a request yields only to requests
// that have run at least quantum less than it has, its tenant's ended
// requests counted with halfLife (0: not counted).
func NewTurns(quantum, maxWait, grace, halfLife time.Duration) *Turns {
	return &Turns{quantum: quantum, maxWait: maxWait, grace: grace, halfLife: halfLife,
		running: map[*Turn]struct{}{}, perTen: map[string]int{}, history: map[string]decayed{},
		changed: make(chan struct{})}
}

// defaultTurns: a short query (a few ms) is never held back by a long one;
// a long query waits at most 250 ms in a row, then runs 50 ms unhindered;
// a tenant's queries of the last few seconds count towards its share.
func defaultTurns() *Turns {
	return NewTurns(5*time.Millisecond, 250*time.Millisecond, 50*time.Millisecond, time.Second)
}

// decayed is a run time that halves every halfLife after at.
type decayed struct {
	v  time.Duration
	at time.Time
}

func (d decayed) valueAt(now time.Time, halfLife time.Duration) time.Duration {
	if d.v <= 0 || halfLife <= 0 {
		return 0
	}
	return time.Duration(float64(d.v) * math.Exp2(-float64(now.Sub(d.at))/float64(halfLife)))
}

// past is what tenant's ended requests count now.
func (ts *Turns) past(tenant string, now time.Time) time.Duration {
	return ts.history[tenant].valueAt(now, ts.halfLife)
}

// remember adds an ended request's run time to its tenant's history and
// drops what has decayed below a microsecond, so the map holds only the
// tenants of the last minute or so.
func (ts *Turns) remember(tenant string, ran time.Duration, now time.Time) {
	if ts.halfLife <= 0 {
		return
	}
	ts.history[tenant] = decayed{v: ts.past(tenant, now) + ran, at: now}
	if len(ts.history) > 2*len(ts.perTen)+16 {
		for name, d := range ts.history {
			if d.valueAt(now, ts.halfLife) < time.Microsecond {
				delete(ts.history, name)
			}
		}
	}
}

// Start registers a running request of tenant; Done ends it.
func (ts *Turns) Start(tenant string) *Turn {
	t := &Turn{turns: ts, tenant: tenant, start: time.Now()}
	ts.mu.Lock()
	ts.running[t] = struct{}{}
	if ts.perTen[tenant]++; ts.perTen[tenant] == 1 {
		ts.tenants.Add(1)
	}
	ts.mu.Unlock()
	return t
}

// Done ends the request's turn; the requests waiting for it resume.
func (t *Turn) Done() {
	if t == nil {
		return
	}
	ts := t.turns
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if _, ok := ts.running[t]; !ok {
		return
	}
	delete(ts.running, t)
	now := time.Now()
	ts.remember(t.tenant, t.attained(now), now)
	if ts.perTen[t.tenant]--; ts.perTen[t.tenant] == 0 {
		delete(ts.perTen, t.tenant)
		ts.tenants.Add(-1)
	}
	ts.notify()
}

func (ts *Turns) notify() {
	close(ts.changed)
	ts.changed = make(chan struct{})
}

// attained is how long t has run, not counting its waits in Yield.
func (t *Turn) attained(now time.Time) time.Duration {
	a := now.Sub(t.start) - t.waited
	if t.waiting > 0 {
		a -= now.Sub(t.waitStart)
	}
	return a
}

// share is what t counts as having run: its own run time and its
// tenant's recent past.
func (ts *Turns) share(t *Turn, now time.Time) time.Duration {
	return t.attained(now) + ts.past(t.tenant, now)
}

// blockedFor reports whether t must yield now, and how long until the
// first request it yields to has run as long as t (when it stops being a
// reason to wait; t's past decays meanwhile, which only shortens that).
func (ts *Turns) blockedFor(t *Turn, now time.Time) (time.Duration, bool) {
	return ts.blockedAmong(t, now, nil)
}

// blockedAmong is blockedFor, with resumes memoizing resumesNow (made
// when a waiting request is first looked at). A request
// waiting in Yield is a reason to wait only when it resumes now: one that
// waits for a third keeps no core busy, but one whose reason just ended
// will run, and must not find the longer request it was yielding to
// running beside it because that one happened to look first.
func (ts *Turns) blockedAmong(t *Turn, now time.Time, resumes map[*Turn]bool) (time.Duration, bool) {
	mine := ts.share(t, now)
	var until time.Duration
	blocked := false
	for o := range ts.running {
		if o.tenant == t.tenant {
			continue
		}
		gap := mine - ts.quantum - ts.share(o, now)
		if gap <= 0 {
			continue
		}
		if o.waiting > 0 {
			if resumes == nil {
				resumes = map[*Turn]bool{}
			}
			if !ts.resumesNow(o, now, resumes) {
				continue
			}
		}
		if !blocked || gap < until {
			until = gap
		}
		blocked = true
	}
	return until, blocked
}

// resumesNow reports whether the waiting request o ends its wait now, as
// its Yield decides it. The requests it looks at have run less than o, so
// the recursion ends.
func (ts *Turns) resumesNow(o *Turn, now time.Time, memo map[*Turn]bool) bool {
	if r, ok := memo[o]; ok {
		return r
	}
	r := !now.After(o.graceEnd) || now.Sub(o.waitStart) >= ts.maxWait
	if !r {
		_, blocked := ts.blockedAmong(o, now, memo)
		r = !blocked
	}
	memo[o] = r
	return r
}

func (t *Turn) beginWait(now time.Time) {
	if t.waiting++; t.waiting == 1 {
		t.waitStart = now
		t.turns.notify() // who waits for t may run now
	}
}

func (t *Turn) endWait(now time.Time) {
	if t.waiting--; t.waiting == 0 {
		t.waited += now.Sub(t.waitStart)
		t.turns.notify()
	}
}

// neighbourWindow is how recently another tenant's request must have
// ended to count for Contended: a neighbour's dashboard sends its next
// query within seconds, and a long query sent whole between two of them
// would hold the backends when the next one comes.
const neighbourWindow = 10 * time.Second

// Contended reports whether t is ahead of a neighbour: another tenant,
// running now or within neighbourWindow, has run at least a quantum less
// than t counts as having run. Work t cannot pause once started (a query a
// backend evaluates) is then better cut short; a request level with its
// neighbours, or alone, goes whole.
func (t *Turn) Contended() bool {
	if t == nil {
		return false
	}
	ts := t.turns
	ts.mu.Lock()
	defer ts.mu.Unlock()
	now := time.Now()
	ahead := ts.share(t, now) - ts.quantum
	if ahead <= 0 {
		return false
	}
	for o := range ts.running {
		if o.tenant != t.tenant && ts.share(o, now) < ahead {
			return true
		}
	}
	for name, d := range ts.history {
		if name != t.tenant && ts.perTen[name] == 0 && now.Sub(d.at) < neighbourWindow && d.valueAt(now, ts.halfLife) < ahead {
			return true
		}
	}
	return false
}

// Yield waits while another tenant's request that has run for less time
// than this one runs (see Turns). It returns ctx's error when ctx ends
// during the wait, else nil.
func (t *Turn) Yield(ctx context.Context) error {
	if t == nil || t.turns.tenants.Load() < 2 {
		return nil
	}
	ts := t.turns
	began := time.Now()
	waiting := false
	for {
		ts.mu.Lock()
		now := time.Now()
		d, blocked := time.Duration(0), false
		if now.After(t.graceEnd) {
			d, blocked = ts.blockedFor(t, now)
		}
		if blocked && now.Sub(began) >= ts.maxWait {
			t.graceEnd = now.Add(ts.grace)
			blocked = false
		}
		if !blocked {
			if waiting {
				t.endWait(now)
			}
			ts.mu.Unlock()
			return nil
		}
		if !waiting {
			t.beginWait(now)
			waiting = true
		}
		changed := ts.changed
		ts.mu.Unlock()

		timer := time.NewTimer(min(d, ts.maxWait-now.Sub(began)))
		select {
		case <-changed:
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			ts.mu.Lock()
			t.endWait(time.Now())
			ts.mu.Unlock()
			return ctx.Err()
		}
		timer.Stop()
	}
}

// Paused returns, per tenant, how many of its running requests are waiting
// in Yield now.
func (ts *Turns) Paused() map[string]int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	out := map[string]int{}
	for t := range ts.running {
		if t.waiting > 0 {
			out[t.tenant]++
		}
	}
	return out
}
