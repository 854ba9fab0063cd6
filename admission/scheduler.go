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
// Who gets a slot is decided by queues (plain, deterministic); Scheduler
// adds the lock, the waiting with its timeout, and the metrics.
type Scheduler struct {
	cfg     Config
	slots   int
	timeout time.Duration
	metrics *schedulerMetrics
	turns   *Turns // nil: running requests do not yield
	calls   tenantCalls
	// refusals is each tenant's debt of refused requests (refusals.go).
	refusals refusals

	mu sync.Mutex
	q  *queues // who runs and who waits, guarded by mu
	// asked is when each tenant last asked for a slot, within
	// tenantActiveWindow (older entries are dropped); guarded by mu.
	asked map[string]time.Time
}

// tenantActiveWindow is how long a tenant counts as active after it last
// asked: a dashboard refreshing every few seconds keeps its share of the
// machine between refreshes, and a tenant alone for this long runs
// without the share's cap.
const tenantActiveWindow = 10 * time.Second

// noteAsked records tenant's request and tells the queues whether other
// tenants are active; called with mu held.
func (s *Scheduler) noteAsked(tenant string, now time.Time) {
	s.asked[tenant] = now
	s.updateShared(now)
}

// updateShared drops tenants idle for longer than the window and sets the
// queues' shared mode; called with mu held.
func (s *Scheduler) updateShared(now time.Time) {
	for t, at := range s.asked {
		if now.Sub(at) > tenantActiveWindow {
			delete(s.asked, t)
		}
	}
	s.q.shared = len(s.asked) > 1
}

type schedulerMetrics struct {
	queueLength *prometheus.GaugeVec
	queueWait   *prometheus.HistogramVec
	running     *prometheus.GaugeVec
	rejections  *prometheus.CounterVec
	refusalWait *prometheus.HistogramVec
}

// NewScheduler returns a scheduler of slots global slots (>0) whose requests
// wait at most queueTimeout; cfg must have passed Validate. reg may be nil.
func NewScheduler(cfg Config, slots int, queueTimeout time.Duration, reg prometheus.Registerer) (*Scheduler, error) {
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
		refusalWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "prometheus_proxy_refusal_backoff_seconds",
			Help:    "Time requests were held because their tenant's recent requests kept being refused (limits.refusals_per_second), by tenant.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 10),
		}, []string{"tenant"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.queueLength, m.queueWait, m.running, m.rejections, m.refusalWait} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	s := &Scheduler{cfg: cfg, slots: slots, timeout: queueTimeout, metrics: m, asked: map[string]time.Time{}}
	s.q = newQueues(&s.cfg, slots)
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

// TenantCallGate is a tenant's share of backend calls in flight
// (max_concurrent_backend_calls), held by its running requests.
type TenantCallGate struct{ gate *callGate }

// TenantCalls returns tenant's backend-call gate and the function that
// gives it back when the request ends.
func (s *Scheduler) TenantCalls(tenant string) (*TenantCallGate, func()) {
	g, release := s.calls.join(tenant, s.cfg.For(tenant).MaxConcurrentBackendCalls)
	if g == nil {
		return nil, release
	}
	return &TenantCallGate{gate: g}, release
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
	w, granted, err := s.enqueue(tenant)
	if err != nil {
		s.Rejected(label, ReasonQueueFull)
		return nil, err
	}
	if granted {
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

// enqueue grants a slot at once or queues the request (queues.add),
// or refuses it when the tenant's queue is full. granted is read under
// the lock: once it is released, a release elsewhere may grant w.
func (s *Scheduler) enqueue(tenant string) (w *waiter, granted bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w = &waiter{ready: make(chan struct{})}
	s.noteAsked(tenant, time.Now())
	if !s.q.add(tenant, w) {
		return nil, false, &QueueError{Reason: ReasonQueueFull, RetryAfter: s.retryAfter(),
			Msg: fmt.Sprintf("too many outstanding requests: the tenant's queue is full (limit max_queued_requests=%d)", w.q.limits.MaxQueuedRequests)}
	}
	if w.granted {
		close(w.ready)
	}
	return w, w.granted, nil
}

// abandon takes a waiter that gave up out of its queue. It returns false
// when the waiter was granted a slot in the meantime (it must use it).
func (s *Scheduler) abandon(w *waiter) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.q.remove(w)
}

func (s *Scheduler) release(q *tenantQueue) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.updateShared(time.Now())
	for _, w := range s.q.done(q) {
		close(w.ready)
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
	st := State{Scheduler: s.cfg.Scheduler, Slots: s.slots, Running: s.q.running, TimeSharing: s.turns != nil, QueueTimeout: s.timeout.String(), Tenants: map[string]TenantState{}}
	for name, q := range s.q.tenants {
		st.Tenants[name] = TenantState{Running: q.running, Queued: len(q.waiting), Paused: paused[name]}
	}
	return st
}

// RetryAfterSeconds renders a Retry-After header value (whole seconds, at
// least 1).
func RetryAfterSeconds(d time.Duration) string {
	return fmt.Sprint(int(math.Ceil(max(d, time.Second).Seconds())))
}
