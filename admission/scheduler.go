package admission

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Scheduler hands out the proxy's global request slots. In Fair mode each
// tenant has its own FIFO queue, and a freed slot goes to the next tenant,
// in round-robin order, that has queued work and is under its own
// max_concurrent_requests: a tenant's share does not grow with the number
// of requests it sends. In FIFO mode everyone shares one queue.
type Scheduler struct {
	cfg     Config
	slots   int
	timeout time.Duration
	metrics *schedulerMetrics
	turns   *Turns // nil: running requests do not yield

	mu      sync.Mutex
	running int
	queues  map[string]*tenantQueue
	// ring holds the tenants with queued requests, in the order their
	// queues became non-empty; next is where the round-robin resumes.
	ring []*tenantQueue
	next int
}

type tenantQueue struct {
	name    string
	limits  Limits
	running int
	waiting []*waiter
}

type waiter struct {
	q        *tenantQueue
	ready    chan struct{}
	granted  bool
	enqueued time.Time
}

type schedulerMetrics struct {
	queueLength *prometheus.GaugeVec
	queueWait   *prometheus.HistogramVec
	running     *prometheus.GaugeVec
	rejections  *prometheus.CounterVec
}

// NewScheduler returns a scheduler of slots global slots (>0) whose requests
// wait at most queueTimeout. reg may be nil.
func NewScheduler(cfg Config, slots int, queueTimeout time.Duration, reg prometheus.Registerer) (*Scheduler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if slots <= 0 || queueTimeout <= 0 {
		return nil, fmt.Errorf("admission: slots and queue timeout must be positive")
	}
	m := &schedulerMetrics{
		queueLength: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "prometheus_proxy_queue_length",
			Help: "Requests waiting for a slot, by tenant (namespaces with a policy or a limits entry; others are \"other\").",
		}, []string{"tenant"}),
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "prometheus_proxy_queue_wait_seconds",
			Help:    "Time requests waited for a slot, by tenant, including those that got none.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9),
		}, []string{"tenant"}),
		running: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "prometheus_proxy_tenant_requests_in_flight",
			Help: "Requests holding a slot, by tenant.",
		}, []string{"tenant"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "prometheus_proxy_limit_rejections_total",
			Help: "Requests refused by a limit, by tenant and reason (queue_full, queue_timeout, or the cost limit's key).",
		}, []string{"tenant", "reason"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.queueLength, m.queueWait, m.running, m.rejections} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	s := &Scheduler{cfg: cfg, slots: slots, timeout: queueTimeout, metrics: m, queues: map[string]*tenantQueue{}}
	if cfg.Scheduler == Fair && cfg.TimeSharing {
		s.turns = defaultTurns()
	}
	return s, nil
}

// Config returns the limits configuration the scheduler was built with.
func (s *Scheduler) Config() *Config { return &s.cfg }

// StartTurn registers a request of tenant that holds a slot and returns
// its share of the CPU (nil without time sharing); call Done when it ends.
func (s *Scheduler) StartTurn(tenant string) *Turn {
	if s.turns == nil {
		return nil
	}
	return s.turns.Start(tenant)
}

// Rejected counts a refusal for the metrics; label is a bounded tenant label.
func (s *Scheduler) Rejected(label, reason string) {
	s.metrics.rejections.WithLabelValues(label, reason).Inc()
}

// Acquire waits for a slot for tenant (the namespace; label is its bounded
// metrics label) and returns the function that gives it back. It fails
// with a *QueueError when the tenant's queue is full or the wait exceeds
// the queue timeout, and with ErrCanceled when ctx ends first.
func (s *Scheduler) Acquire(ctx context.Context, tenant, label string) (release func(), err error) {
	start := time.Now()
	w, err := s.enqueue(tenant, start)
	if err != nil {
		s.Rejected(label, ReasonQueueFull)
		return nil, err
	}
	if w.granted {
		s.metrics.queueWait.WithLabelValues(label).Observe(0)
		return s.releaser(w.q, label), nil
	}
	s.metrics.queueLength.WithLabelValues(label).Inc()
	defer s.metrics.queueLength.WithLabelValues(label).Dec()
	t := time.NewTimer(s.timeout)
	defer t.Stop()
	var reason error
	select {
	case <-w.ready:
	case <-t.C:
		reason = &QueueError{Reason: ReasonQueueTimeout, RetryAfter: s.retryAfter(),
			Msg: fmt.Sprintf("too many outstanding requests: no slot free within queue_timeout=%s (max_concurrent_requests=%d for the proxy, %d for the tenant, 0: no own limit)",
				s.timeout, s.slots, w.q.limits.MaxConcurrentRequests)}
	case <-ctx.Done():
		reason = ErrCanceled
	}
	s.metrics.queueWait.WithLabelValues(label).Observe(time.Since(start).Seconds())
	if reason != nil && s.abandon(w) {
		if qe := (*QueueError)(nil); errors.As(reason, &qe) {
			s.Rejected(label, qe.Reason)
		}
		return nil, reason
	}
	// Granted, possibly in the same instant the wait ended: take the slot.
	return s.releaser(w.q, label), nil
}

func (s *Scheduler) retryAfter() time.Duration { return max(time.Second, s.timeout) }

func (s *Scheduler) releaser(q *tenantQueue, label string) func() {
	s.metrics.running.WithLabelValues(label).Inc()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.metrics.running.WithLabelValues(label).Dec()
			s.release(q)
		})
	}
}

// queueFor returns the tenant's queue, made with its limits in Fair mode;
// in FIFO mode everyone shares one queue without per-tenant limits.
func (s *Scheduler) queueFor(tenant string) *tenantQueue {
	if s.cfg.Scheduler == FIFO {
		tenant = ""
	}
	q := s.queues[tenant]
	if q == nil {
		l := s.cfg.For(tenant)
		if s.cfg.Scheduler == FIFO {
			l.MaxConcurrentRequests, l.MaxQueuedRequests = 0, 0
		}
		q = &tenantQueue{name: tenant, limits: l}
		s.queues[tenant] = q
	}
	return q
}

func (q *tenantQueue) canRun() bool {
	return q.limits.MaxConcurrentRequests <= 0 || q.running < q.limits.MaxConcurrentRequests
}

// enqueue grants a slot at once when one is free, the tenant is under its
// own limit and nobody of the tenant waits before it; else it queues the
// request, or refuses it when the tenant's queue is full. A free slot with
// other tenants waiting cannot happen: release hands slots out until every
// waiting tenant is at its own limit.
func (s *Scheduler) enqueue(tenant string, now time.Time) (*waiter, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queueFor(tenant)
	w := &waiter{q: q, ready: make(chan struct{}), enqueued: now}
	if s.running < s.slots && q.canRun() && len(q.waiting) == 0 {
		s.grant(w)
		return w, nil
	}
	if max := q.limits.MaxQueuedRequests; max > 0 && len(q.waiting) >= max {
		s.dropIfIdle(q)
		return nil, &QueueError{Reason: ReasonQueueFull, RetryAfter: s.retryAfter(),
			Msg: fmt.Sprintf("too many outstanding requests: the tenant's queue is full (limit max_queued_requests=%d)", max)}
	}
	q.waiting = append(q.waiting, w)
	if len(q.waiting) == 1 {
		s.ring = append(s.ring, q)
	}
	return w, nil
}

func (s *Scheduler) grant(w *waiter) {
	w.granted = true
	s.running++
	w.q.running++
	close(w.ready)
}

// abandon takes a waiter that gave up out of its queue. It returns false
// when the waiter was granted a slot in the meantime (it must use it).
func (s *Scheduler) abandon(w *waiter) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
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
		s.leaveRing(q)
	}
	s.dropIfIdle(q)
	return true
}

func (s *Scheduler) release(q *tenantQueue) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running--
	q.running--
	s.dispatch()
	s.dropIfIdle(q)
}

// dispatch hands free slots out round-robin over the tenants in the ring,
// skipping those at their own limit.
func (s *Scheduler) dispatch() {
	for s.running < s.slots && len(s.ring) > 0 {
		granted := false
		for range len(s.ring) {
			if s.next >= len(s.ring) {
				s.next = 0
			}
			q := s.ring[s.next]
			if !q.canRun() {
				s.next++
				continue
			}
			w := q.waiting[0]
			q.waiting = q.waiting[1:]
			s.grant(w)
			granted = true
			if len(q.waiting) == 0 {
				s.leaveRing(q) // the next tenant moves into s.next
			} else {
				s.next++
			}
			break
		}
		if !granted {
			return
		}
	}
}

func (s *Scheduler) leaveRing(q *tenantQueue) {
	for i, x := range s.ring {
		if x == q {
			s.ring = append(s.ring[:i], s.ring[i+1:]...)
			if i < s.next {
				s.next--
			}
			return
		}
	}
}

// dropIfIdle forgets a tenant with nothing running or queued, so the map
// holds only tenants with work.
func (s *Scheduler) dropIfIdle(q *tenantQueue) {
	if q.running == 0 && len(q.waiting) == 0 && s.queues[q.name] == q {
		delete(s.queues, q.name)
	}
}

// TenantState is one tenant's share of the scheduler at a moment.
type TenantState struct {
	Running int `json:"running"`
	Queued  int `json:"queued"`
	// Paused are running requests yielding the CPU to another tenant's
	// (time sharing).
	Paused int `json:"paused,omitempty"`
}

// State is the scheduler at a moment, for /debug/tenants.
type State struct {
	Scheduler    SchedulerMode          `json:"scheduler"`
	Slots        int                    `json:"slots"`
	Running      int                    `json:"running"`
	TimeSharing  bool                   `json:"time_sharing"`
	QueueTimeout string                 `json:"queue_timeout"`
	Tenants      map[string]TenantState `json:"tenants"`
}

// State returns who runs and who waits.
func (s *Scheduler) State() State {
	var paused map[string]int
	if s.turns != nil {
		paused = s.turns.Paused()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := State{Scheduler: s.cfg.Scheduler, Slots: s.slots, Running: s.running, TimeSharing: s.turns != nil, QueueTimeout: s.timeout.String(), Tenants: map[string]TenantState{}}
	for name, q := range s.queues {
		st.Tenants[name] = TenantState{Running: q.running, Queued: len(q.waiting), Paused: paused[name]}
	}
	return st
}

// RetryAfterSeconds renders a Retry-After header value (whole seconds, at
// least 1).
func RetryAfterSeconds(d time.Duration) string {
	return fmt.Sprint(int(math.Ceil(max(d, time.Second).Seconds())))
}
