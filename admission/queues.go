package admission

// queues is what the scheduler decides with: one FIFO queue per tenant,
// the tenants with queued requests in a ring, and the slots in use. It has
// no lock, no clock and no metrics, so fairness is tested one step at a
// time (queues_test.go); Scheduler wraps it with all three.
type queues struct {
	mode    SchedulerMode
	cfg     *Config // each tenant's limits
	slots   int
	running int
	tenants map[string]*tenantQueue // only tenants with work
	// ring holds the tenants with queued requests, in the order their
	// queues became non-empty; next is where the round-robin resumes.
	ring []*tenantQueue
	next int
	// shared says whether more than one tenant asked lately (the
	// Scheduler decides, it has the clock): only then does a tenant
	// without a max_concurrent_requests of its own keep to its share of
	// the machine. Alone, a tenant's dashboard runs its panels side by side.
	shared bool
}

type tenantQueue struct {
	name    string
	limits  Limits
	running int
	waiting []*waiter
	// byShare: limits.MaxConcurrentRequests is the tenant share
	// (TenantShare), not a limit configured for the tenant.
	byShare bool
}

// waiter is one request for a slot.
type waiter struct {
	q       *tenantQueue
	granted bool
	ready   chan struct{} // Scheduler closes it when granted
}

func newQueues(cfg *Config, slots int) *queues {
	return &queues{mode: cfg.Scheduler, cfg: cfg, slots: slots, tenants: map[string]*tenantQueue{}}
}

// queueFor returns the tenant's queue, made with its limits in Fair mode;
// in FIFO mode everyone shares one queue without per-tenant limits.
func (qs *queues) queueFor(tenant string) *tenantQueue {
	if qs.mode == FIFO {
		tenant = ""
	}
	q := qs.tenants[tenant]
	if q == nil {
		l := qs.cfg.For(tenant)
		if qs.mode == FIFO {
			l.MaxConcurrentRequests, l.MaxQueuedRequests = 0, 0
		}
		byShare := qs.mode != FIFO && l.MaxConcurrentRequests == 0
		if byShare {
			// Without a limit of its own a tenant could hold every slot,
			// and another tenant's request would wait for one to free up.
			l.MaxConcurrentRequests = qs.cfg.TenantShare(qs.slots)
		}
		q = &tenantQueue{name: tenant, limits: l, byShare: byShare}
		qs.tenants[tenant] = q
	}
	return q
}

// canRun reports whether q may start one more request: under its limit,
// or over its share while no other tenant asked lately.
func (qs *queues) canRun(q *tenantQueue) bool {
	return q.limits.MaxConcurrentRequests <= 0 || q.running < q.limits.MaxConcurrentRequests || (q.byShare && !qs.shared)
}

// add grants w a slot at once when one is free, the tenant is under its
// own limit and nobody of the tenant waits before it; else it queues w.
// It returns false, queuing nothing, when the tenant's queue is full. A
// free slot with other tenants waiting cannot happen: done hands slots out
// until every waiting tenant is at its own limit.
func (qs *queues) add(tenant string, w *waiter) bool {
	q := qs.queueFor(tenant)
	w.q = q
	if qs.running < qs.slots && qs.canRun(q) && len(q.waiting) == 0 {
		qs.grant(w)
		return true
	}
	if m := q.limits.MaxQueuedRequests; m > 0 && len(q.waiting) >= m {
		qs.dropIfIdle(q)
		return false
	}
	q.waiting = append(q.waiting, w)
	if len(q.waiting) == 1 {
		qs.ring = append(qs.ring, q)
	}
	return true
}

func (qs *queues) grant(w *waiter) {
	w.granted = true
	qs.running++
	w.q.running++
}

// remove takes a waiter that gave up out of its queue. It returns false
// when the waiter was granted a slot in the meantime (it must use it).
func (qs *queues) remove(w *waiter) bool {
	if w.granted {
		return false
	}
	q := w.q
	for i, x := range q.waiting {
		if x == w {
			q.waiting = append(q.waiting[:i], q.waiting[i+1:]...)
			break
		}
	}
	if len(q.waiting) == 0 {
		qs.leaveRing(q)
	}
	qs.dropIfIdle(q)
	return true
}

// done gives back a slot of q's and returns the waiters it granted slots
// to, in order.
func (qs *queues) done(q *tenantQueue) []*waiter {
	qs.running--
	q.running--
	granted := qs.dispatch()
	qs.dropIfIdle(q)
	return granted
}

// dispatch hands free slots out round-robin over the tenants in the ring,
// skipping those at their own limit.
func (qs *queues) dispatch() []*waiter {
	var out []*waiter
	for qs.running < qs.slots && len(qs.ring) > 0 {
		granted := false
		for range len(qs.ring) {
			if qs.next >= len(qs.ring) {
				qs.next = 0
			}
			q := qs.ring[qs.next]
			if !qs.canRun(q) {
				qs.next++
				continue
			}
			w := q.waiting[0]
			q.waiting = q.waiting[1:]
			qs.grant(w)
			out = append(out, w)
			granted = true
			if len(q.waiting) == 0 {
				qs.leaveRing(q) // the next tenant moves into qs.next
			} else {
				qs.next++
			}
			break
		}
		if !granted {
			break
		}
	}
	return out
}

func (qs *queues) leaveRing(q *tenantQueue) {
	for i, x := range qs.ring {
		if x == q {
			qs.ring = append(qs.ring[:i], qs.ring[i+1:]...)
			if i < qs.next {
				qs.next--
			}
			return
		}
	}
}

// dropIfIdle forgets a tenant with nothing running or queued, so the map
// holds only tenants with work.
func (qs *queues) dropIfIdle(q *tenantQueue) {
	if q.running == 0 && len(q.waiting) == 0 && qs.tenants[q.name] == q {
		delete(qs.tenants, q.name)
	}
}
