package harness

import (
	"context"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/bench/datagen"
)

// TestWriteBlocks reads the written blocks back and finds every sample the
// generator made, and nothing else, across a 24 h block boundary.
func TestWriteBlocks(t *testing.T) {
	cfg := datagen.DefaultConfig()
	cfg.Start = time.Date(2026, 1, 1, 23, 0, 0, 0, time.UTC)
	cfg.Duration, cfg.Interval = 2*time.Hour, time.Minute
	dir := t.TempDir()
	if err := writeBlocks(context.Background(), dir, cfg, 1); err != nil {
		t.Fatal(err)
	}
	// The read-only DB also replays a WAL; an empty one will do.
	if err := os.Mkdir(filepath.Join(dir, "wal"), 0o755); err != nil {
		t.Fatal(err)
	}
	db, err := tsdb.OpenDBReadOnly(dir, "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	blocks, err := db.Blocks()
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 2 {
		t.Errorf("%d blocks, want 2 (the data crosses midnight)", len(blocks))
	}
	q, err := db.Querier(math.MinInt64, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = q.Close() }()
	got := map[string][]float64{}
	ss := q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchRegexp, model.MetricNameLabel, ".+"))
	for ss.Next() {
		s := ss.At()
		it := s.Iterator(nil)
		for it.Next() == chunkenc.ValFloat {
			ts, v := it.At()
			got[s.Labels().String()] = append(got[s.Labels().String()], float64(ts), v)
		}
	}
	if err := ss.Err(); err != nil {
		t.Fatal(err)
	}
	n := 0
	err = datagen.ForEachSeriesSamples(cfg, 1, nil, func(lset labels.Labels, ts []int64, vs []float64) error {
		n++
		g := got[lset.String()]
		if len(g) != 2*len(ts) {
			t.Fatalf("%v: %d samples read back, %d generated", lset, len(g)/2, len(ts))
		}
		for i := range ts {
			if g[2*i] != float64(ts[i]) || g[2*i+1] != vs[i] {
				t.Fatalf("%v sample %d: (%v, %v), generated (%d, %v)", lset, i, g[2*i], g[2*i+1], ts[i], vs[i])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(got) {
		t.Errorf("%d series read back, %d generated", len(got), n)
	}
}
