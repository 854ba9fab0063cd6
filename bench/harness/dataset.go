package harness

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/bench/datagen"
)

// datasetLayout changes whenever what is stored under a dataset's directory
// changes, so old caches are not mistaken for new ones.
const datasetLayout = 1

// Dataset is generated TSDB blocks: one directory per shard and one holding
// the union, ready to be copied into Prometheus data directories.
type Dataset struct {
	Dir    string         `json:"-"`
	Hash   string         `json:"hash"`
	Config datagen.Config `json:"config"`
	Series int            `json:"series"`
	// Samples is the number of samples of the union.
	Samples int64 `json:"samples"`
	// BuildSeconds is how long writing the blocks took when the
	// dataset was built (it is reused afterwards).
	BuildSeconds float64 `json:"build_seconds"`
	BlockBytes   int64   `json:"block_bytes"`
}

// ShardDir holds the blocks of shard i.
func (d *Dataset) ShardDir(i int) string { return filepath.Join(d.Dir, "shard-"+strconv.Itoa(i)) }

// UnionDir holds the blocks of the reference server.
func (d *Dataset) UnionDir() string { return filepath.Join(d.Dir, "union") }

// datasetHash names a dataset by what shapes its blocks: the data
// configuration (every value is a function of it) and the layout.
func datasetHash(cfg datagen.Config) (string, error) {
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return "", fmt.Errorf("hash data config: %w", err)
	}
	h := sha256.Sum256(fmt.Appendf(nil, "layout %d\n%s\n", datasetLayout, cfgJSON))
	return hex.EncodeToString(h[:])[:16], nil
}

// PrepareDataset returns the dataset of cfg kept under cacheDir (as `make
// bench` keeps it), generating it first when it is not there; progress
// lines go to w (may be nil).
func PrepareDataset(ctx context.Context, cacheDir string, cfg datagen.Config, w io.Writer) (*Dataset, error) {
	return prepareDataset(ctx, cacheDir, cfg, newProgress(w))
}

// prepareDataset returns the cached dataset of cfg, generating it first
// when it is not there. Work happens in a staging
// directory renamed into place at the end, so an interrupted or concurrent
// run never leaves a half-built dataset that looks complete.
func prepareDataset(ctx context.Context, cacheDir string, cfg datagen.Config, log *progress) (*Dataset, error) {
	hash, err := datasetHash(cfg)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cacheDir, hash)
	if d, err := loadDataset(dir); err == nil {
		log.printf("dataset %s: cached (%d series, %s of blocks)", hash, d.Series, formatBytes(float64(d.BlockBytes)))
		return d, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("dataset: %w", err)
	}
	staging, err := os.MkdirTemp(cacheDir, hash+".tmp-")
	if err != nil {
		return nil, fmt.Errorf("dataset: %w", err)
	}
	defer func() { _ = os.RemoveAll(staging) }()

	d := &Dataset{Hash: hash, Config: cfg, Series: SeriesCount(cfg)}
	d.Samples = int64(d.Series) * int64(cfg.Steps())
	log.printf("dataset %s: generating %d series × %d samples (%s every %v, %d shards) into TSDB blocks",
		hash, d.Series, cfg.Steps(), hoursString(cfg.Duration), cfg.Interval, cfg.Shards())
	start := time.Now()

	// The union is the biggest job: start it first so that the shards
	// fill the second core meanwhile.
	jobs := []int{-1}
	for i := range cfg.Shards() {
		jobs = append(jobs, i)
	}
	work := make(chan int)
	errs := make(chan error, len(jobs))
	var wg sync.WaitGroup
	for range min(2, len(jobs)) {
		wg.Go(func() {
			for shard := range work {
				errs <- buildShard(ctx, staging, cfg, shard, log)
			}
		})
	}
	go func() {
		defer close(work)
		for _, j := range jobs {
			select {
			case work <- j:
			case <-ctx.Done():
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	if err := errors.Join(all...); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	d.BuildSeconds = time.Since(start).Seconds()
	if d.BlockBytes, err = dirSize(staging); err != nil {
		return nil, fmt.Errorf("dataset: %w", err)
	}
	meta, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("dataset: %w", err)
	}
	if err := os.WriteFile(filepath.Join(staging, "dataset.json"), meta, 0o644); err != nil {
		return nil, fmt.Errorf("dataset: %w", err)
	}
	if err := os.Rename(staging, dir); err != nil {
		// Another run finished the same dataset first: use it.
		if d2, err2 := loadDataset(dir); err2 == nil {
			return d2, nil
		}
		return nil, fmt.Errorf("dataset: %w", err)
	}
	d.Dir = dir
	log.printf("dataset %s: built in %.0fs (%s of blocks)", hash, d.BuildSeconds, formatBytes(float64(d.BlockBytes)))
	return d, nil
}

func loadDataset(dir string) (*Dataset, error) {
	b, err := os.ReadFile(filepath.Join(dir, "dataset.json"))
	if err != nil {
		return nil, err
	}
	var d Dataset
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	d.Dir = dir
	return &d, nil
}

// buildShard writes the blocks of one shard (-1: the union).
func buildShard(ctx context.Context, staging string, cfg datagen.Config, shard int, log *progress) error {
	name := "union"
	if shard >= 0 {
		name = "shard-" + strconv.Itoa(shard)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	t0 := time.Now()
	if err := writeBlocks(ctx, filepath.Join(staging, name), cfg, shard); err != nil {
		return fmt.Errorf("dataset %s: %w", name, err)
	}
	log.printf("  %s: written in %.1fs", name, time.Since(t0).Seconds())
	return nil
}

func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	return n, err
}
