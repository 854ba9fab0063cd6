package harness

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/bench/datagen"
)

// blockRange is the longest block written, as promtool's
// --max-block-duration=24h in the tests: blocks are cut at 24 h boundaries.
const blockRange = int64(24 * time.Hour / time.Millisecond)

// commitEvery bounds the samples an appender holds before it commits.
const commitEvery = 500_000

// writeBlocks writes one shard (-1: the union) as TSDB blocks into dir with
// Prometheus' own block writer, the one promtool's backfill uses. Appending
// the generator's samples directly, with each series' reference reused,
// skips writing and parsing gigabytes of OpenMetrics text, which is most of
// the cost of a promtool backfill at this size.
func writeBlocks(ctx context.Context, dir string, cfg datagen.Config, shard int) error {
	mint, maxt := cfg.Start.UnixMilli(), cfg.LastSampleTime().UnixMilli()
	for lo := mint / blockRange * blockRange; lo <= maxt; lo += blockRange {
		if err := writeBlock(ctx, dir, cfg, shard, lo, lo+blockRange); err != nil {
			return err
		}
	}
	return nil
}

// writeBlock writes the samples in [lo, hi) as one block.
func writeBlock(ctx context.Context, dir string, cfg datagen.Config, shard int, lo, hi int64) (err error) {
	// Twice the range: the writer refuses samples older than half its range
	// before the newest one, and series arrive one after another, each
	// starting again at the beginning of the window.
	w, err := tsdb.NewBlockWriter(slog.New(slog.DiscardHandler), dir, 2*blockRange)
	if err != nil {
		return fmt.Errorf("block writer: %w", err)
	}
	defer func() {
		if cerr := w.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("block writer: %w", cerr)
		}
	}()
	app := w.Appender(ctx)
	pending := 0
	err = datagen.ForEachSeriesSamples(cfg, shard, nil, func(lset labels.Labels, ts []int64, vs []float64) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		var ref storage.SeriesRef
		for i, t := range ts {
			if t < lo || t >= hi {
				continue
			}
			var err error
			if ref, err = app.Append(ref, lset, t, vs[i]); err != nil {
				return fmt.Errorf("append %v: %w", lset, err)
			}
			pending++
		}
		if pending >= commitEvery {
			if err := app.Commit(); err != nil {
				return fmt.Errorf("commit: %w", err)
			}
			app, pending = w.Appender(ctx), 0
		}
		return nil
	})
	if err != nil {
		_ = app.Rollback()
		return err
	}
	if err := app.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if _, err := w.Flush(ctx); err != nil {
		return fmt.Errorf("write block: %w", err)
	}
	return nil
}
