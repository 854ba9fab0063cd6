package main

import (
	"log/slog"
	"os"
	"runtime/debug"
	"testing"

	"github.com/KimMachineGun/automemlimit/memlimit"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/cmd/proxy/app"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/engine"
)

// TestConfigMemoryLimit: the Go memory limit is set to 90% of the
// container's (the shipped Deployment's 1 GiB here), engine.max_samples 0
// is derived from it, and --auto-gomemlimit=false leaves the runtime alone.
func TestConfigMemoryLimit(t *testing.T) {
	if v, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		// A GOMEMLIMIT in the environment wins over the container's limit.
		t.Cleanup(func() { _ = os.Setenv("GOMEMLIMIT", v) })
		_ = os.Unsetenv("GOMEMLIMIT")
	}
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	logger := slog.New(slog.DiscardHandler)

	got, err := setMemoryLimit(false, 0.9, memlimit.Limit(1<<30), logger)
	if err != nil || got != before || debug.SetMemoryLimit(-1) != before {
		t.Fatalf("disabled: limit %d, %v; want the runtime's %d untouched", got, err, before)
	}
	if _, err := setMemoryLimit(true, 1.5, memlimit.Limit(1<<30), logger); err == nil {
		t.Error("ratio 1.5 accepted")
	}
	got, err = setMemoryLimit(true, 0.9, memlimit.Limit(1<<30), logger)
	want := int64(966_367_641) // 0.9 GiB
	if err != nil || got != want || debug.SetMemoryLimit(-1) != want {
		t.Fatalf("1 GiB container: limit %d (runtime %d), %v; want %d", got, debug.SetMemoryLimit(-1), err, want)
	}
	cfg := app.DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if n := cfg.Engine.EffectiveMaxSamples(); n != 7_549_747 {
		t.Errorf("derived engine.max_samples in a 1 GiB container = %d, want 7,549,747 (0.9 GiB / 8 / 16 B)", n)
	}
	if n := engine.MaxSamplesFor(0); n != 50_000_000 {
		t.Errorf("max samples without a memory limit = %d, want Prometheus' 50,000,000", n)
	}
}
