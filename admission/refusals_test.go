package admission

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func refusalLimits(rate float64, burst int) Limits {
	l := DefaultLimits()
	l.RefusalsPerSecond, l.RefusalBurst = rate, burst
	return l
}

// TestRefusalBackoff: a tenant's first refusal_burst refusals cost nothing;
// past them its requests wait for the debt to drain at the rate, other
// tenants never wait, and a wait over maxRefusalWait is a 429 at once.
func TestRefusalBackoff(t *testing.T) {
	s := newTestScheduler(t, DefaultConfig(), 4)
	ctx := context.Background()
	l := refusalLimits(10, 3)
	for range 3 {
		s.NoteRefused("mallory", l)
	}
	if waited, err := s.AwaitRefusals(ctx, "mallory", "mallory", l); waited != 0 || err != nil {
		t.Fatalf("within the burst: waited %v, %v; want no wait", waited, err)
	}
	s.NoteRefused("mallory", l)
	waited, err := s.AwaitRefusals(ctx, "mallory", "mallory", l)
	if err != nil || waited <= 0 || waited > 100*time.Millisecond {
		t.Fatalf("one over the burst at 10/s: waited %v, %v; want (0, 100ms]", waited, err)
	}
	if waited, err := s.AwaitRefusals(ctx, "team-a", "team-a", l); waited != 0 || err != nil {
		t.Fatalf("another tenant: waited %v, %v; want no wait", waited, err)
	}

	for range 60 {
		s.NoteRefused("mallory", l)
	}
	_, err = s.AwaitRefusals(ctx, "mallory", "mallory", l)
	qe := (*QueueError)(nil)
	if !errors.As(err, &qe) || qe.Reason != ReasonRefusalBackoff || qe.RetryAfter <= maxRefusalWait {
		t.Fatalf("60 over the burst at 10/s (6 s): got %v; want a refusal_backoff QueueError retrying after more than %v", err, maxRefusalWait)
	}

	off := refusalLimits(0, 0)
	for range 100 {
		s.NoteRefused("eve", off)
	}
	if waited, err := s.AwaitRefusals(ctx, "eve", "eve", off); waited != 0 || err != nil {
		t.Fatalf("refusals_per_second 0: waited %v, %v; want no wait", waited, err)
	}
}

// TestRefusalBackoffWaitersAndCancel: no more requests of a tenant wait
// than its max_queued_requests, and a request whose client leaves stops
// waiting.
func TestRefusalBackoffWaitersAndCancel(t *testing.T) {
	s := newTestScheduler(t, DefaultConfig(), 4)
	l := refusalLimits(1, 1)
	l.MaxQueuedRequests = 1
	for range 4 { // 3 over the burst: 3 s at 1/s
		s.NoteRefused("mallory", l)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := s.AwaitRefusals(ctx, "mallory", "mallory", l)
		done <- err
	}()
	for {
		s.refusals.mu.Lock()
		n := s.refusals.debts["mallory"].waiting
		s.refusals.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	_, err := s.AwaitRefusals(context.Background(), "mallory", "mallory", l)
	if qe := (*QueueError)(nil); !errors.As(err, &qe) || qe.Reason != ReasonRefusalBackoff {
		t.Fatalf("second waiter with max_queued_requests 1: %v; want refusal_backoff", err)
	}
	cancel()
	if err := <-done; !errors.Is(err, ErrCanceled) {
		t.Fatalf("canceled waiter: %v; want ErrCanceled", err)
	}
}

// TestRefusalDebtsForgotten: tenants named by unverified headers are not
// bounded, so drained debts are forgotten once there are many, each judged
// at its own tenant's rate.
func TestRefusalDebtsForgotten(t *testing.T) {
	s := newTestScheduler(t, DefaultConfig(), 4)
	s.NoteRefused("slow", refusalLimits(0.001, 1)) // drains in 1,000 s
	l := refusalLimits(1e9, 1)                     // a refusal drains in a nanosecond
	for i := range 3 * refusalSweepAt {
		s.NoteRefused(fmt.Sprintf("t%d", i), l)
	}
	if n := len(s.refusals.debts); n > refusalSweepAt+2 {
		t.Fatalf("%d debts kept for 3×%d tenants with drained debts; want at most %d", n, refusalSweepAt, refusalSweepAt+2)
	}
	if s.refusals.debts["slow"] == nil {
		t.Fatal("a debt not yet drained at its own tenant's rate was forgotten")
	}
}
