package remote

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

// bigReadData is 4000 series of two hours every 15 s (1.9M samples).
func bigReadData() string {
	var b strings.Builder
	b.WriteString("# TYPE big unknown\n")
	for i := range 4000 {
		for s := 0; s < 7200; s += 15 {
			fmt.Fprintf(&b, "big{pod=\"pod-%04d\",job=\"bench\"} %d %d\n", i, (i*31+s*7)%100003, 1_700_000_000+s)
		}
	}
	b.WriteString("# EOF\n")
	return b.String()
}

// BenchmarkBigRead reads 4000 series (1.9M samples, ~2.4 MB of chunks) from
// a real Prometheus, answers read whole (buffer_reads, the baseline) and
// streamed, each by two readers: one that keeps every series until the end
// (as Prometheus' engine does with a selector's series) and one that
// decodes each series as it arrives and drops it. Reported per read: time,
// the heap's peak above the start, and the ratios streamed/buffered.
func BenchmarkBigRead(b *testing.B) {
	prom := e2eutil.StartPrometheus(b, e2eutil.V3, strings.NewReader(bigReadData()), e2eutil.WithName("bigread"))
	client := func(buffer bool) *Client {
		return benchClient(b, prom.URL, func(cfg *Config) {
			cfg.BufferReads = buffer
			cfg.Timeout = model.Duration(time.Minute)
		})
	}
	sets := [][]*labels.Matcher{{labels.MustNewMatcher(labels.MatchEqual, "__name__", "big")}}
	samples := func(s storage.Series) int {
		n := 0
		it := s.Iterator(nil)
		for it.Next() == chunkenc.ValFloat {
			n++
		}
		return n
	}
	read := func(c *Client, keep bool) {
		ss, err := c.Read(context.Background(), 1_700_000_000_000, 1_700_007_200_000, nil, sets)
		if err != nil {
			b.Fatal(err)
		}
		var kept []storage.Series
		n := 0
		for ss.Next() {
			if keep {
				kept = append(kept, ss.At())
			} else {
				n += samples(ss.At())
			}
		}
		if err := ss.Err(); err != nil {
			b.Fatal(err)
		}
		for _, s := range kept {
			n += samples(s)
		}
		if n != 4000*480 {
			b.Fatalf("%d samples, want %d", n, 4000*480)
		}
	}
	buffered, streamed := client(true), client(false)
	for _, c := range []*Client{buffered, streamed} {
		read(c, true) // warm connections and the backend's page cache
	}
	for _, keep := range []bool{true, false} {
		name := "reader=drops-each"
		if keep {
			name = "reader=keeps-all"
		}
		b.Run(name, func(b *testing.B) {
			var tBuf, tStream time.Duration
			var pBuf, pStream uint64
			for b.Loop() {
				t0 := time.Now()
				pBuf += e2eutil.PeakHeap(func() { read(buffered, keep) })
				t1 := time.Now()
				pStream += e2eutil.PeakHeap(func() { read(streamed, keep) })
				tBuf, tStream = tBuf+t1.Sub(t0), tStream+time.Since(t1)
			}
			n := float64(b.N)
			b.ReportMetric(float64(tBuf.Nanoseconds())/n, "buffered-ns/read")
			b.ReportMetric(float64(tStream.Nanoseconds())/n, "streamed-ns/read")
			b.ReportMetric(float64(pBuf)/n/(1<<20), "buffered-peak-MiB")
			b.ReportMetric(float64(pStream)/n/(1<<20), "streamed-peak-MiB")
			b.ReportMetric(float64(tStream)/float64(tBuf), "time-streamed/buffered")
			b.ReportMetric(float64(pStream)/float64(pBuf), "peak-streamed/buffered")
		})
	}
}

// BenchmarkSelectorsPerRequest compares what reading three small selectors
// costs (an instant query's, 5 minutes of data, 50 series each) as three
// requests one after another (the engine's order, as before prefetch),
// three in parallel (the proxy's prefetch) and one request holding the
// three queries (ReadMultiple), against a real Prometheus.
func BenchmarkSelectorsPerRequest(b *testing.B) {
	var data strings.Builder
	data.WriteString("# TYPE m unknown\n")
	for _, name := range []string{"a", "b", "c"} {
		for i := range 50 {
			for s := 0; s < 3600; s += 15 {
				fmt.Fprintf(&data, "m{name=%q,i=\"%02d\"} %d %d\n", name, i, s, 1_700_000_000+s)
			}
		}
	}
	data.WriteString("# EOF\n")
	prom := e2eutil.StartPrometheus(b, e2eutil.V3, strings.NewReader(data.String()), e2eutil.WithName("selectors"))
	c := benchClient(b, prom.URL, nil)
	var sets [][]*labels.Matcher
	for _, name := range []string{"a", "b", "c"} {
		sets = append(sets, []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "__name__", "m"), labels.MustNewMatcher(labels.MatchEqual, "name", name)})
	}
	mint, maxt := int64(1_700_003_300_000), int64(1_700_003_600_000)
	count := func(ss storage.SeriesSet) int {
		n := 0
		for ss.Next() {
			n++
		}
		if err := ss.Err(); err != nil {
			b.Fatal(err)
		}
		return n
	}
	parallel := func() {
		var wg sync.WaitGroup
		for _, s := range sets {
			wg.Go(func() {
				ss, err := c.Read(context.Background(), mint, maxt, nil, [][]*labels.Matcher{s})
				if err != nil {
					b.Error(err)
					return
				}
				if n := count(ss); n != 50 {
					b.Errorf("%d series, want 50", n)
				}
			})
		}
		wg.Wait()
	}
	one := func() {
		ss, err := c.Read(context.Background(), mint, maxt, nil, sets)
		if err != nil {
			b.Fatal(err)
		}
		if n := count(ss); n != 150 {
			b.Fatalf("%d series, want 150", n)
		}
	}
	sequential := func() {
		for _, s := range sets {
			ss, err := c.Read(context.Background(), mint, maxt, nil, [][]*labels.Matcher{s})
			if err != nil {
				b.Fatal(err)
			}
			if n := count(ss); n != 50 {
				b.Fatalf("%d series, want 50", n)
			}
		}
	}
	parallel()
	one()
	var tSeq, tPar, tOne time.Duration
	for b.Loop() {
		t0 := time.Now()
		sequential()
		t1 := time.Now()
		parallel()
		t2 := time.Now()
		one()
		tSeq, tPar, tOne = tSeq+t1.Sub(t0), tPar+t2.Sub(t1), tOne+time.Since(t2)
	}
	n := float64(b.N)
	b.ReportMetric(float64(tSeq.Nanoseconds())/n, "sequential-ns")
	b.ReportMetric(float64(tPar)/float64(tSeq), "parallel/sequential")
	b.ReportMetric(float64(tPar.Nanoseconds())/n, "parallel-ns")
	b.ReportMetric(float64(tOne.Nanoseconds())/n, "one-request-ns")
	b.ReportMetric(float64(tOne)/float64(tPar), "one/parallel")
}

// benchClient is a client of url with the default config as edit changes it
// (edit may be nil), closed when the benchmark ends.
func benchClient(b *testing.B, url string, edit func(*Config)) *Client {
	cfg := DefaultConfig()
	if edit != nil {
		edit(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		b.Fatal(err)
	}
	c, err := New(url, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	return c
}
