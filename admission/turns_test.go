package admission

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// started registers a request of tenant that has already run for ran.
func started(ts *Turns, tenant string, ran time.Duration) *Turn {
	t := ts.Start(tenant)
	ts.mu.Lock()
	t.start = t.start.Add(-ran)
	ts.mu.Unlock()
	return t
}

// yieldAsync runs t.Yield in a goroutine and waits until it either returned
// or is waiting; it reports which.
func yieldAsync(ctx context.Context, t *Turn) (done chan error, waiting bool) {
	done = make(chan error, 1)
	go func() { done <- t.Yield(ctx) }()
	for {
		select {
		case err := <-done:
			done <- err
			return done, false
		default:
		}
		t.turns.mu.Lock()
		w := t.waiting > 0
		t.turns.mu.Unlock()
		if w {
			return done, true
		}
		time.Sleep(time.Millisecond)
	}
}

func TestLongRequestYieldsToAnotherTenantsShortOne(t *testing.T) {
	ts := NewTurns(5*time.Millisecond, time.Hour, time.Hour, 0)
	long := started(ts, "team-a", time.Second)
	short := ts.Start("team-b")
	if err := short.Yield(context.Background()); err != nil {
		t.Fatal(err)
	}
	done, waiting := yieldAsync(context.Background(), long)
	if !waiting {
		t.Fatal("the long request did not wait for the other tenant's short one")
	}
	// The short request may go on while the long one waits.
	if err := short.Yield(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("the long request resumed (%v) while the short one runs", err)
	default:
	}
	short.Done()
	if err := <-done; err != nil {
		t.Fatalf("resumed with %v", err)
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if long.waiting != 0 || long.waited <= 0 {
		t.Errorf("after the wait: waiting %d, waited %v", long.waiting, long.waited)
	}
}

func TestSameTenantAndSingleTenantNeverYield(t *testing.T) {
	ts := NewTurns(time.Millisecond, time.Hour, time.Hour, 0)
	long := started(ts, "team-a", time.Hour)
	if err := long.Yield(context.Background()); err != nil {
		t.Fatal(err)
	}
	_ = ts.Start("team-a")
	if _, waiting := yieldAsync(context.Background(), long); waiting {
		t.Fatal("a request waited for a request of its own tenant")
	}
	var none *Turn
	if err := none.Yield(context.Background()); err != nil {
		t.Fatal(err)
	}
	none.Done()
}

func TestYieldWaitsForWhoHasRunLess(t *testing.T) {
	ts := NewTurns(10*time.Millisecond, time.Hour, time.Hour, 0)
	a := started(ts, "team-a", time.Minute)
	b := started(ts, "team-b", time.Minute+5*time.Millisecond)
	// Within one quantum of each other: neither yields.
	for _, x := range []*Turn{a, b} {
		if _, waiting := yieldAsync(context.Background(), x); waiting {
			t.Fatalf("%s waited for a request that has run about as long", x.tenant)
		}
	}
	c := started(ts, "team-c", 0)
	da, wa := yieldAsync(context.Background(), a)
	db, wb := yieldAsync(context.Background(), b)
	if !wa || !wb {
		t.Fatalf("both long requests should wait for the new one: %v %v", wa, wb)
	}
	if _, waiting := yieldAsync(context.Background(), c); waiting {
		t.Fatal("the request that has run least waited")
	}
	c.Done()
	for _, d := range []chan error{da, db} {
		if err := <-d; err != nil {
			t.Fatal(err)
		}
	}
}

func TestYieldIsBoundedThenGraced(t *testing.T) {
	ts := NewTurns(time.Millisecond, 20*time.Millisecond, time.Hour, 0)
	long := started(ts, "team-a", time.Hour)
	_ = ts.Start("team-b") // never ends
	began := time.Now()
	if err := long.Yield(context.Background()); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(began); waited < 20*time.Millisecond {
		t.Fatalf("returned after %v, before maxWait", waited)
	}
	// The grace period follows: the next yields return at once.
	if _, waiting := yieldAsync(context.Background(), long); waiting {
		t.Fatal("waited again within the grace period")
	}
}

func TestYieldEndsWithTheContext(t *testing.T) {
	ts := NewTurns(time.Millisecond, time.Hour, time.Hour, 0)
	long := started(ts, "team-a", time.Hour)
	short := ts.Start("team-b")
	defer short.Done()
	ctx, cancel := context.WithCancel(context.Background())
	done, waiting := yieldAsync(ctx, long)
	if !waiting {
		t.Fatal("did not wait")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want the context's error", err)
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if long.waiting != 0 {
		t.Fatal("still counted as waiting")
	}
}

func TestWaitingRequestIsNoReasonToWait(t *testing.T) {
	// a (long) waits for c (new); b has run less than a but more than c,
	// so b waits too. Once c ends, b no longer waits for a: a is waiting,
	// not running.
	ts := NewTurns(time.Millisecond, time.Hour, time.Hour, 0)
	a := started(ts, "team-a", time.Hour)
	b := started(ts, "team-b", time.Minute)
	c := ts.Start("team-c")
	da, _ := yieldAsync(context.Background(), a)
	db, _ := yieldAsync(context.Background(), b)
	c.Done()
	// b resumes (a is no reason: a has run more); a waits for b.
	if err := <-db; err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-da:
		t.Fatalf("a resumed (%v) while b, which has run less, runs", err)
	default:
	}
	b.Done()
	if err := <-da; err != nil {
		t.Fatal(err)
	}
}

func TestBudgetReadsPauseForTheTurn(t *testing.T) {
	ts := NewTurns(time.Millisecond, time.Hour, time.Hour, 0)
	long := started(ts, "team-a", time.Hour)
	_, budget := NewBudget(context.Background(), DefaultLimits())
	budget.PauseFor(long)
	if err := budget.AddBytes(10); err != nil {
		t.Fatal(err)
	}
	short := ts.Start("team-b")
	done := make(chan error, 1)
	go func() { done <- budget.AddBytes(10) }()
	for ts.Paused()["team-a"] != 1 {
		select {
		case err := <-done:
			t.Fatalf("the read went on while another tenant's shorter request runs: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	short.Done()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, b := budget.Fetched(); b != 20 {
		t.Errorf("charged %d bytes, want 20", b)
	}
}

// pastOf sets what tenant's ended requests count, as if they ended at.
func pastOf(ts *Turns, tenant string, ran time.Duration, at time.Time) {
	ts.mu.Lock()
	ts.history[tenant] = decayed{v: ran, at: at}
	ts.mu.Unlock()
}

func TestTenantsPastCountsTowardsItsShare(t *testing.T) {
	ts := NewTurns(5*time.Millisecond, time.Hour, time.Hour, time.Minute)
	// team-a's queries of the last moment ran 2 s; its new query has run
	// nothing yet, team-b's has run 100 ms: team-a's new query waits.
	pastOf(ts, "team-a", 2*time.Second, time.Now())
	fresh := ts.Start("team-a")
	other := started(ts, "team-b", 100*time.Millisecond)
	done, waiting := yieldAsync(context.Background(), fresh)
	if !waiting {
		t.Fatal("a new request of a tenant that has run a lot did not wait for a neighbour that has run less")
	}
	if _, waiting := yieldAsync(context.Background(), other); waiting {
		t.Fatal("the neighbour waited for the tenant that has run more")
	}
	other.Done()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	fresh.Done()
	// Both ended: their run time is remembered per tenant.
	ts.mu.Lock()
	a, b := ts.past("team-a", time.Now()), ts.past("team-b", time.Now())
	ts.mu.Unlock()
	if a < 1900*time.Millisecond || b < 99*time.Millisecond || b > 2*time.Second {
		t.Errorf("remembered team-a %v (want about 2s), team-b %v (want about 100ms)", a, b)
	}
}

func TestTenantsPastDecays(t *testing.T) {
	ts := NewTurns(5*time.Millisecond, time.Hour, time.Hour, time.Second)
	// 2 s of run time ten half-lives ago counts about 2 ms: no reason to
	// wait for a neighbour that has run 50 ms.
	pastOf(ts, "team-a", 2*time.Second, time.Now().Add(-10*time.Second))
	fresh := ts.Start("team-a")
	defer fresh.Done()
	other := started(ts, "team-b", 50*time.Millisecond)
	defer other.Done()
	if _, waiting := yieldAsync(context.Background(), fresh); waiting {
		t.Fatal("a tenant's past of ten half-lives ago still held its request back")
	}
	ts.mu.Lock()
	got := ts.past("team-a", time.Now())
	ts.mu.Unlock()
	if got < time.Millisecond || got > 3*time.Millisecond {
		t.Errorf("2s decayed over 10 half-lives = %v, want about 2ms", got)
	}
}

func TestHistoryForgetsTenantsThatDecayed(t *testing.T) {
	ts := NewTurns(time.Millisecond, time.Hour, time.Hour, time.Millisecond)
	long := time.Now().Add(-time.Minute)
	for i := range 100 {
		pastOf(ts, fmt.Sprintf("gone-%d", i), time.Second, long)
	}
	started(ts, "team-a", time.Second).Done()
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if len(ts.history) != 1 {
		t.Errorf("history holds %d tenants after the others decayed to nothing, want 1", len(ts.history))
	}
	if _, ok := ts.history["team-a"]; !ok {
		t.Error("the tenant that just ended is not remembered")
	}
}

func TestNoHistoryWithoutHalfLife(t *testing.T) {
	ts := NewTurns(time.Millisecond, time.Hour, time.Hour, 0)
	started(ts, "team-a", time.Hour).Done()
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if len(ts.history) != 0 || ts.past("team-a", time.Now()) != 0 {
		t.Errorf("history kept without a half-life: %v", ts.history)
	}
}

func TestContendedWhenAheadOfANeighbour(t *testing.T) {
	ts := NewTurns(5*time.Millisecond, time.Second, 50*time.Millisecond, time.Second)
	a := started(ts, "team-a", time.Second)
	defer a.Done()
	if a.Contended() {
		t.Fatal("a tenant alone is contended")
	}
	same := ts.Start("team-a")
	if a.Contended() {
		t.Error("the tenant's own second request makes it contended")
	}
	same.Done()
	b := ts.Start("team-b")
	if !a.Contended() {
		t.Error("a request that ran a second, beside a neighbour's new one: not contended")
	}
	if b.Contended() {
		t.Error("the neighbour's new request, behind a long one: contended")
	}
	b.Done()
	if !a.Contended() {
		t.Error("a neighbour's request that just ended: not contended")
	}
	// Its end is forgotten after neighbourWindow.
	ts.mu.Lock()
	h := ts.history["team-b"]
	h.at = h.at.Add(-neighbourWindow)
	ts.history["team-b"] = h
	ts.mu.Unlock()
	if a.Contended() {
		t.Error("a neighbour gone for neighbourWindow still contends")
	}
	var none *Turn
	if none.Contended() {
		t.Error("a nil turn is contended")
	}
}
