// Command bench measures the proxy against one Prometheus holding all the
// data: it generates a deterministic dataset into TSDB blocks for real Prometheus
// backends (one per shard) and a reference holding the union, starts the
// proxy binary over the backends, runs a Grafana-style dashboard workload
// (uncached, cold, warm, sliding window; concurrency 1 and N) and writes
// bench/results/latest.{md,json,svg}.
//
//	go run ./bench              # default size: ~100k series over 6 h, 3 shards
//	go run ./bench --quick      # a few thousand series over 1 h
//	go run ./bench --compare http://127.0.0.1:9999   # add another endpoint's column
//	go run ./bench --readme     # also rewrite docs/benchmark.md's numbers (what `make bench` does)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/bench/harness"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil/e2ehost"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case ctx.Err() != nil:
		fmt.Fprintln(os.Stderr, "bench: interrupted; every server was stopped")
		os.Exit(130)
	default:
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// quickRequested looks for --quick before the flags are defined, because it
// changes their defaults; explicit flags still win.
func quickRequested(args []string) bool {
	quick := false
	for _, a := range args {
		switch strings.TrimLeft(a, "-") {
		case "quick", "quick=true", "quick=1":
			quick = true
		case "quick=false", "quick=0":
			quick = false
		}
		if a == "--" {
			break
		}
	}
	return quick
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o := harness.DefaultOptions()
	if quickRequested(args) {
		o = harness.QuickOptions()
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Bool("quick", o.Quick, "small run for a quick check: a few thousand series over 1 h, fewer rounds")
	fs.IntVar(&o.Series, "series", o.Series, "number of series (at least; the generator's layout rounds up)")
	hours := fs.Float64("hours", o.Duration.Hours(), "hours of data")
	fs.DurationVar(&o.Interval, "interval", o.Interval, "scrape interval of the generated data")
	fs.IntVar(&o.Shards, "shards", o.Shards, "backends, one shard of the data each")
	fs.Int64Var(&o.Seed, "seed", o.Seed, "seed of the generated values")
	fs.BoolVar(&o.Disjoint, "disjoint", o.Disjoint, "every shard holds only its cluster's series, so push-down can apply (false: some series in every shard, some split in time)")
	fs.BoolVar(&o.CachedPushDown, "cached-push-down", o.CachedPushDown, "run the caching proxies (cold, warm, sliding) with push-down on")
	conc := fs.Int("concurrency", o.Concurrency[len(o.Concurrency)-1], "concurrent clients of the second level (the first is 1)")
	fs.IntVar(&o.UncachedRounds, "uncached-rounds", o.UncachedRounds, "interleaved proxy/reference rounds at concurrency 1")
	fs.IntVar(&o.ColdRounds, "cold-rounds", o.ColdRounds, "cold samples per query (a fresh proxy each)")
	fs.IntVar(&o.WarmRounds, "warm-rounds", o.WarmRounds, "warm passes after each cold pass")
	fs.IntVar(&o.SlidingRounds, "sliding-rounds", o.SlidingRounds, "sliding-window refreshes")
	fs.IntVar(&o.ConcRounds, "concurrent-rounds", o.ConcRounds, "passes per phase at concurrency > 1")
	fs.DurationVar(&o.PhaseBudget, "phase-budget", o.PhaseBudget, "a phase stops starting new rounds after this long")
	fs.BoolVar(&o.Floors, "floors", o.Floors, "also time, in a rotation of their own at concurrency 1, the backends answering each panel with no proxy and the proxy (push-down off) over the reference alone, beside the reference and the default configuration")
	fs.StringVar(&o.Compare, "compare", "", "also measure this Prometheus-compatible endpoint (base URL) in the uncached phase")
	out := fs.String("out", "", "directory for latest.{md,json,svg} (default bench/results; with --quick .cache/bench/results-quick)")
	fs.StringVar(&o.Prometheus, "prometheus", os.Getenv("PROMETHEUS_V3"), "prometheus binary (default: the build of `make tools`)")
	fs.StringVar(&o.ProxyBinary, "proxy", "", "proxy binary to measure (default: go build ./cmd/proxy)")
	fs.StringVar(&o.CacheDir, "cache-dir", "", "where datasets and the proxy binary are kept (default .cache/bench)")
	fs.BoolVar(&o.KeepWorkDir, "keep", false, "keep the servers' data directories and logs")
	timeout := fs.Duration("timeout", 30*time.Minute, "give up after this long")
	render := fs.String("render", "", "only render this report JSON again as Markdown and SVG into --out (no servers)")
	readme := fs.Bool("readme", false, "also write the report's summary into docs/benchmark.md's numbers (full-size runs only)")
	pgo := fs.String("pgo-profile", "", "only record the proxy's CPU profile over the dashboard (push-down off, then the default configuration) into this file, for profile-guided optimisation (cmd/proxy/default.pgo)")
	pgoFor := fs.Duration("pgo-duration", 40*time.Second, "with --pgo-profile: how long each configuration is profiled")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *readme && o.Quick && *render == "" {
		return errors.New("--readme: a --quick run does not replace the README's numbers")
	}
	o.Duration = time.Duration(*hours * float64(time.Hour))
	o.Concurrency = []int{1}
	if *conc > 1 {
		o.Concurrency = append(o.Concurrency, *conc)
	}
	if o.Compare != "" {
		o.Compare = strings.TrimRight(o.Compare, "/")
	}
	root, err := e2ehost.RepoRootFromWorkDir()
	if err != nil {
		return err
	}
	o.RepoRoot = root
	if *out == "" {
		*out = filepath.Join(root, "bench", "results")
		if o.Quick {
			// A quick run must not replace the full-size report that is kept
			// in the repository.
			*out = filepath.Join(root, ".cache", "bench", "results-quick")
		}
	}

	if *pgo != "" {
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		if err := harness.Profile(ctx, o, *pgo, *pgoFor, stderr); err != nil {
			return err
		}
		_, err := fmt.Fprintf(stdout, "wrote %s\n", *pgo)
		return err
	}

	var rep *harness.Report
	if *render != "" {
		if rep, err = harness.ReadReport(*render); err != nil {
			return err
		}
	} else {
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		if rep, err = harness.Run(ctx, o, stderr); err != nil {
			return err
		}
	}
	if *readme && rep.Settings.Quick {
		return errors.New("--readme: a --quick report does not replace the README's numbers")
	}
	if err := harness.WriteFiles(*out, rep); err != nil {
		return err
	}
	if *readme {
		page := filepath.Join(root, "docs", "benchmark.md")
		if err := harness.UpdateReadme(page, rep); err != nil {
			return err
		}
		_, _ = fmt.Fprintf(stdout, "wrote the benchmark numbers of %s\n", page)
	}
	_, _ = fmt.Fprint(stdout, rep.Headline())
	_, _ = fmt.Fprintf(stdout, "\nwrote %s, %s and %s in %s (%.0f s)\n", harness.MarkdownFile, harness.JSONFile, harness.SVGFile, *out, rep.Seconds)
	return nil
}
