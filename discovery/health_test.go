package discovery

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
)

// TestHungProbeIsBoundedByInterval: a replica whose probe never returns must
// not hold up the round, and counts as failed.
func TestHungProbeIsBoundedByInterval(t *testing.T) {
	cfg := DefaultConfig()
	cfg.HealthCheckInterval = model.Duration(50 * time.Millisecond)
	cfg.Static = []StaticGroup{{Name: "g", URLs: []string{"http://hung", "http://fine"}}}
	probe := func(ctx context.Context, _ *Group, r *Replica) (labels.Labels, error) {
		if r.URL == "http://hung" {
			<-ctx.Done()
			return labels.EmptyLabels(), ctx.Err()
		}
		return labels.EmptyLabels(), nil
	}
	m, err := NewManager(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	m.CheckNow(context.Background(), probe)
	m.CheckNow(context.Background(), probe)
	if took := time.Since(start); took > time.Second {
		t.Errorf("two rounds took %v with a 50ms interval", took)
	}
	for _, r := range m.Status()[0].Replicas {
		hung := r.URL == "http://hung"
		if r.Healthy == hung {
			t.Errorf("%s healthy=%v", r.URL, r.Healthy)
		}
		if hung && !strings.Contains(r.LastError, "health_check_interval") {
			t.Errorf("last error %q does not say the probe ran out of time", r.LastError)
		}
	}
}
