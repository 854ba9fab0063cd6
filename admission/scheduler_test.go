package admission

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func newTestScheduler(t *testing.T, cfg Config, slots int) *Scheduler {
	t.Helper()
	s, err := NewScheduler(cfg, slots, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// harness drives the scheduler's queues (no lock, no clock): it adds
// requests by name and releases them, and says which ones hold a slot.
// Every step is synchronous, so the tests are deterministic.
type harness struct {
	t       *testing.T
	q       *queues
	waiters map[string]*waiter
	names   map[*waiter]string
	order   []string // names in the order they were granted
}

func newHarness(t *testing.T, cfg Config, slots int) *harness {
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	q := newQueues(&cfg, slots)
	q.shared = true // the tests below are about several tenants
	return &harness{t: t, q: q, waiters: map[string]*waiter{}, names: map[*waiter]string{}}
}

// add enqueues request name of tenant (the tenant is the name up to "-").
func (h *harness) add(names ...string) {
	h.t.Helper()
	for _, name := range names {
		tenant, _, _ := strings.Cut(name, "-")
		w := &waiter{}
		if !h.q.add(tenant, w) {
			h.t.Fatalf("add %s: the tenant's queue is full", name)
		}
		h.waiters[name], h.names[w] = w, name
		if w.granted {
			h.order = append(h.order, name)
		}
	}
}

// done releases the slot of a running request.
func (h *harness) done(name string) {
	h.t.Helper()
	w := h.waiters[name]
	if w == nil || !w.granted {
		h.t.Fatalf("%s does not hold a slot", name)
	}
	delete(h.waiters, name)
	for _, g := range h.q.done(w.q) {
		h.order = append(h.order, h.names[g])
	}
}

func TestRoundRobinAcrossTenants(t *testing.T) {
	h := newHarness(t, DefaultConfig(), 1)
	h.add("a-0")                                    // runs
	h.add("a-1", "a-2", "a-3", "a-4", "a-5", "a-6") // a floods the queue first
	h.add("b-1", "b-2")
	h.add("c-1")
	// Releasing the one slot over and over: each tenant with queued work
	// gets a turn, however many requests a has queued.
	for _, name := range []string{"a-0", "a-1", "b-1", "c-1", "a-2", "b-2", "a-3", "a-4", "a-5"} {
		h.done(name)
	}
	want := "a-0 a-1 b-1 c-1 a-2 b-2 a-3 a-4 a-5 a-6"
	if got := strings.Join(h.order, " "); got != want {
		t.Errorf("grant order\n got %s\nwant %s", got, want)
	}
}

// TestShareIndependentOfDemand: with two slots and tenant a sending ten
// times more requests than b, b still gets every other slot that frees.
func TestShareIndependentOfDemand(t *testing.T) {
	cfg := DefaultConfig()
	cfg.TenantSlots = 2 // a may hold both slots
	h := newHarness(t, cfg, 2)
	h.add("a-0", "a-1")
	for i := 2; i < 22; i++ {
		h.add(fmt.Sprintf("a-%d", i))
	}
	h.add("b-0", "b-1")
	granted := map[string]int{}
	running := []string{"a-0", "a-1"}
	for step := 0; step < 8; step++ {
		n := len(h.order)
		h.done(running[0])
		running = running[1:]
		if len(h.order) != n+1 {
			t.Fatalf("step %d: releasing a slot granted %d requests, want 1", step, len(h.order)-n)
		}
		next := h.order[n]
		granted[next[:1]]++
		running = append(running, next)
	}
	// b had two requests: both must have run within the first four grants.
	if granted["b"] != 2 {
		t.Errorf("b got %d of 8 freed slots with 2 queued, want 2 (order %v)", granted["b"], h.order)
	}
	if i, j := indexOf(h.order, "b-0"), indexOf(h.order, "b-1"); i > 3 || j > 5 {
		t.Errorf("b's requests granted at positions %d and %d of %v; round-robin gives 2 and 4", i, j, h.order)
	}
}

// TestDefaultTenantShareLeavesSlotsFree: by default a tenant without a
// max_concurrent_requests of its own holds at most GOMAXPROCS/2 (at
// most slots-1, at least 1) slots, so another tenant's request is granted at once however
// many requests the first sends.
func TestDefaultTenantShareLeavesSlotsFree(t *testing.T) {
	cfg := DefaultConfig()
	share := cfg.TenantShare(4)
	if share < 1 || share > 3 {
		t.Fatalf("share of 4 slots = %d, want 1..3", share)
	}
	h := newHarness(t, cfg, 4)
	for i := range 10 {
		h.add(fmt.Sprintf("a-%d", i))
	}
	if len(h.order) != share {
		t.Fatalf("a holds %d slots (%v), want its share %d", len(h.order), h.order, share)
	}
	h.add("b-0")
	if indexOf(h.order, "b-0") < 0 {
		t.Errorf("b's request waits while a holds %d of 4 slots", share)
	}
	one := DefaultConfig()
	if n := one.TenantShare(1); n != 1 {
		t.Errorf("share of one slot = %d, want 1", n)
	}
	one.TenantSlots = 3
	if n := one.TenantShare(100); n != 3 {
		t.Errorf("share with tenant_slots 3 = %d, want 3", n)
	}
}

// TestLoneTenantRunsBeyondShare: a tenant alone (no other asked lately)
// runs as many requests as there are slots, so one dashboard's panels go
// side by side; once another tenant is active, the share holds again for
// new grants, and a limit configured for the tenant holds always.
func TestLoneTenantRunsBeyondShare(t *testing.T) {
	cfg := DefaultConfig()
	cfg.TenantSlots = 1
	cfg.Tenants = map[string]Limits{"c": {MaxConcurrentRequests: 2}}
	h := newHarness(t, cfg, 4)
	h.q.shared = false
	for i := range 6 {
		h.add(fmt.Sprintf("a-%d", i))
	}
	if got := strings.Join(h.order, " "); got != "a-0 a-1 a-2 a-3" {
		t.Fatalf("alone, a got %q; want every slot", got)
	}
	h.q.shared = true // b asked
	h.done("a-0")
	if len(h.order) != 4 {
		t.Fatalf("a over its share got another slot once b was active: %v", h.order)
	}
	h.add("b-0")
	if indexOf(h.order, "b-0") < 0 {
		t.Errorf("b waits for a slot: %v", h.order)
	}

	lone := newHarness(t, cfg, 4)
	lone.q.shared = false
	lone.add("c-0", "c-1", "c-2")
	if len(lone.order) != 2 {
		t.Errorf("c, alone, runs %v beyond its own max_concurrent_requests 2", lone.order)
	}
}

// TestSchedulerSharesOnlyWithOthers: through the Scheduler, a tenant alone
// gets slots beyond its share at once; after another tenant asked, its
// next request beyond the share waits.
func TestSchedulerSharesOnlyWithOthers(t *testing.T) {
	cfg := DefaultConfig()
	cfg.TenantSlots = 1
	s, err := NewScheduler(cfg, 8, 50*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var releases []func()
	for i := range 3 {
		r, err := s.Acquire(ctx, "a", "a")
		if err != nil {
			t.Fatalf("a's request %d alone: %v", i, err)
		}
		releases = append(releases, r)
	}
	rb, err := s.Acquire(ctx, "b", "b")
	if err != nil {
		t.Fatalf("b: %v", err)
	}
	if _, err := s.Acquire(ctx, "a", "a"); err == nil {
		t.Error("a got a fourth slot while b is active; want it to wait (and time out here)")
	}
	rb()
	for _, r := range releases {
		r()
	}
}

func indexOf(xs []string, x string) int {
	for i, y := range xs {
		if y == x {
			return i
		}
	}
	return -1
}

func TestPerTenantConcurrencyLeavesSlotsForOthers(t *testing.T) {
	cfg := DefaultConfig()
	a := cfg.Defaults
	a.MaxConcurrentRequests = 2
	cfg.Tenants = map[string]Limits{"a": a}
	h := newHarness(t, cfg, 4)
	h.add("a-0", "a-1", "a-2", "a-3")
	if got := strings.Join(h.order, " "); got != "a-0 a-1" {
		t.Fatalf("a runs %q, want only its limit of 2", got)
	}
	h.add("b-0")
	if !h.waiters["b-0"].granted {
		t.Fatal("b waits although slots are free")
	}
	h.done("a-0")
	if !h.waiters["a-2"].granted || h.waiters["a-3"].granted {
		t.Errorf("after one of a's requests ended: a-2 granted %v, a-3 granted %v; want true, false",
			h.waiters["a-2"].granted, h.waiters["a-3"].granted)
	}
	if a := h.q.tenants["a"]; a.running != 2 || len(a.waiting) != 1 || h.q.running != 3 {
		t.Errorf("a runs %d with %d queued, %d run in all; want 2, 1, 3", a.running, len(a.waiting), h.q.running)
	}
}

// TestTenantAtLimitDoesNotBlockOthers: a tenant at its own limit is skipped
// by the round-robin, so a freed slot goes to the next tenant.
func TestTenantAtLimitDoesNotBlockOthers(t *testing.T) {
	cfg := DefaultConfig()
	a := cfg.Defaults
	a.MaxConcurrentRequests = 1
	cfg.Tenants = map[string]Limits{"a": a}
	h := newHarness(t, cfg, 2)
	h.add("a-0", "c-0", "a-1", "b-0")
	h.done("c-0")
	if !h.waiters["b-0"].granted || h.waiters["a-1"].granted {
		t.Errorf("freed slot went to %v, want b-0 (a is at its limit)", h.order[len(h.order)-1])
	}
}

func TestQueueFull(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Defaults.MaxQueuedRequests = 2
	s := newTestScheduler(t, cfg, 1)
	if _, _, err := s.enqueue("a"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, _, err := s.enqueue("a"); err != nil {
			t.Fatal(err)
		}
	}
	_, _, err := s.enqueue("a")
	qe := (*QueueError)(nil)
	if !errors.As(err, &qe) || qe.Reason != ReasonQueueFull || !strings.Contains(qe.Msg, "max_queued_requests=2") {
		t.Fatalf("third queued request: %v, want a queue_full QueueError naming the limit", err)
	}
	// Another tenant's queue is its own.
	if _, _, err := s.enqueue("b"); err != nil {
		t.Errorf("b refused because a's queue is full: %v", err)
	}
}

func TestFIFOIsOneQueue(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Scheduler = FIFO
	cfg.Defaults.MaxConcurrentRequests = 1 // ignored in FIFO mode
	h := newHarness(t, cfg, 2)
	h.add("a-0", "a-1", "a-2", "a-3", "b-0")
	h.done("a-0")
	h.done("a-1")
	if got := strings.Join(h.order, " "); got != "a-0 a-1 a-2 a-3" {
		t.Errorf("FIFO order %q, want a-0 a-1 a-2 a-3 (b waits behind a)", got)
	}
}

func TestAcquireTimeoutAndCancel(t *testing.T) {
	s, err := NewScheduler(DefaultConfig(), 1, time.Nanosecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	release, err := s.Acquire(context.Background(), "a", "a")
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Acquire(context.Background(), "b", "b")
	qe := (*QueueError)(nil)
	if !errors.As(err, &qe) || qe.Reason != ReasonQueueTimeout || qe.RetryAfter < time.Second {
		t.Fatalf("waiting past the queue timeout: %v, want queue_timeout with Retry-After", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.timeout = time.Hour
	if _, err := s.Acquire(ctx, "b", "b"); !errors.Is(err, ErrCanceled) {
		t.Fatalf("canceled while waiting: %v", err)
	}
	release()
	release() // a second call must not free a second slot
	st := s.State()
	if st.Running != 0 || len(st.Tenants) != 0 {
		t.Errorf("after everything ended: %+v, want nothing running or remembered", st)
	}
	r2, err := s.Acquire(context.Background(), "b", "b")
	if err != nil {
		t.Fatalf("the slot was not given back: %v", err)
	}
	r2()
}

// A request that gives up leaves its tenant's place in the round-robin as
// it was, and a tenant with nothing left is forgotten.
func TestQueuesRemove(t *testing.T) {
	h := newHarness(t, DefaultConfig(), 1)
	h.add("a-0", "a-1", "b-1", "b-2", "c-1")
	if !h.q.remove(h.waiters["b-1"]) || !h.q.remove(h.waiters["c-1"]) {
		t.Fatal("a queued request could not be removed")
	}
	if _, ok := h.q.tenants["c"]; ok {
		t.Error("c is remembered with nothing running or queued")
	}
	for _, name := range []string{"a-0", "a-1"} {
		h.done(name)
	}
	if got := strings.Join(h.order, " "); got != "a-0 a-1 b-2" {
		t.Errorf("grant order %q, want a-0 a-1 b-2", got)
	}
	if h.q.remove(h.waiters["b-2"]) {
		t.Error("a granted request was removed from its queue")
	}
}
