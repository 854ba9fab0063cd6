package admission

import (
	"context"
	"errors"
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
	ts := NewTurns(5*time.Millisecond, time.Hour, time.Hour)
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
	case <-done:
		t.Fatal("the long request resumed while the short one runs")
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
	ts := NewTurns(time.Millisecond, time.Hour, time.Hour)
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
	ts := NewTurns(10*time.Millisecond, time.Hour, time.Hour)
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
	ts := NewTurns(time.Millisecond, 20*time.Millisecond, time.Hour)
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
	ts := NewTurns(time.Millisecond, time.Hour, time.Hour)
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
	ts := NewTurns(time.Millisecond, time.Hour, time.Hour)
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
	case <-da:
		t.Fatal("a resumed while b, which has run less, runs")
	default:
	}
	b.Done()
	if err := <-da; err != nil {
		t.Fatal(err)
	}
}

func TestBudgetReadsPauseForTheTurn(t *testing.T) {
	ts := NewTurns(time.Millisecond, time.Hour, time.Hour)
	long := started(ts, "team-a", time.Hour)
	_, budget := NewBudget(context.Background(), DefaultLimits())
	budget.PauseFor(long)
	if err := budget.AddBytes(10); err != nil {
		t.Fatal(err)
	}
	short := ts.Start("team-b")
	done := make(chan error, 1)
	go func() { done <- budget.AddBytes(10) }()
	for {
		if ts.Paused()["team-a"] == 1 {
			break
		}
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
