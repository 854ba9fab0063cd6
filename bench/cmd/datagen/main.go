// Command datagen writes the deterministic test data of package datagen as
// OpenMetrics text, for promtool backfills in the demo and the benchmark.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/bench/datagen"
)

func main() {
	switch err := run(os.Args[1:], os.Stdout); {
	case errors.Is(err, flag.ErrHelp):
	case err != nil:
		// Errors of package datagen already say where they come from.
		if !strings.HasPrefix(err.Error(), "datagen") {
			err = fmt.Errorf("datagen: %w", err)
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	cfg := datagen.DefaultConfig()
	fs := flag.NewFlagSet("datagen", flag.ContinueOnError)
	start := fs.String("start", cfg.Start.Format(time.RFC3339), "time of the first sample (RFC 3339)")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "length of the time window")
	fs.DurationVar(&cfg.Interval, "interval", cfg.Interval, "time between samples")
	clusters := fs.String("clusters", strings.Join(cfg.Clusters, ","), "comma-separated clusters, one shard each")
	namespaces := fs.String("namespaces", strings.Join(cfg.Namespaces, ","), "comma-separated namespaces")
	fs.IntVar(&cfg.JobsPerNamespace, "jobs", cfg.JobsPerNamespace, "jobs per namespace and cluster")
	fs.IntVar(&cfg.InstancesPerJob, "instances", cfg.InstancesPerJob, "instances per job")
	fs.Int64Var(&cfg.Seed, "seed", cfg.Seed, "seed of all values")
	shard := fs.Int("shard", -1, "shard to write, 0 to len(clusters)-1; -1 writes the union of all shards")
	out := fs.String("out", "-", "output file; - is standard output")
	count := fs.Bool("count", false, "print the number of series (the union of all shards) and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if cfg.Start, err = time.Parse(time.RFC3339, *start); err != nil {
		return fmt.Errorf("--start: %w", err)
	}
	cfg.Clusters, cfg.Namespaces = splitList(*clusters), splitList(*namespaces)
	if err := cfg.Validate(); err != nil {
		return err
	}

	if *count {
		n := 0
		datagen.ForEachSeries(cfg, func(labels.Labels) { n++ })
		_, err := fmt.Fprintf(stdout, "%d series, %d samples each\n", n, cfg.Steps())
		return err
	}

	w, closeOut := stdout, func() error { return nil }
	if *out != "-" {
		// Write beside the target and rename, so a half-written file never looks done.
		f, err := os.CreateTemp(filepath.Dir(*out), ".datagen-*")
		if err != nil {
			return fmt.Errorf("create output: %w", err)
		}
		defer func() { _ = os.Remove(f.Name()) }()
		w, closeOut = f, func() error {
			if err := f.Chmod(0o644); err != nil {
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			return os.Rename(f.Name(), *out)
		}
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	if err := datagen.WriteOpenMetrics(bw, cfg, *shard, nil); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	if err := closeOut(); err != nil {
		return fmt.Errorf("write %s: %w", *out, err)
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
