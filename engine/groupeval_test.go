package engine

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	promremote "github.com/prometheus/prometheus/storage/remote"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/remote"
)

// groupBackend serves db by remote read, as a group's backend does, and
// returns a client of it.
func groupBackend(t *testing.T, db storage.Storage) (*remote.Client, *httptest.Server) {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/api/v1/read", promremote.NewReadHandler(nil, nil, db, func() config.Config { return config.Config{} }, 0, 1, 1<<20))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	c, err := remote.New(srv.URL, remote.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, srv
}

// recordingBudget counts what it is charged and refuses samples past
// maxSamples (0: never).
type recordingBudget struct {
	mu                    sync.Mutex
	series, bytes, sample int
	maxSamples            int
	err                   error
}

var errRecordedSamples = errors.New("samples over the recording budget's limit")

func (b *recordingBudget) AddSeries(uint64) error { b.mu.Lock(); b.series++; b.mu.Unlock(); return nil }
func (b *recordingBudget) AddBytes(n int) error {
	b.mu.Lock()
	b.bytes += n
	b.mu.Unlock()
	return nil
}
func (b *recordingBudget) CheckSpan(int64, int64) error { return nil }
func (b *recordingBudget) AddSamples(n int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sample += n
	if b.maxSamples > 0 && b.sample > b.maxSamples {
		b.err = errRecordedSamples
	}
	return b.err
}
func (b *recordingBudget) Err() error { b.mu.Lock(); defer b.mu.Unlock(); return b.err }

// TestEvalOnGroupData: a group's part evaluated by the proxy over the
// group's data, read by remote read, answers bit for bit what the proxy's
// engine answers over the same data held locally (what a backend of the
// proxy's release answers); what it read and what its answer holds are
// charged to the query's budget; a part over its share of max_samples, or
// over the tenant's samples limit, and a replica that fails, each end as
// they must (evaluated in one pass, refused with the limit, failed over).
func TestEvalOnGroupData(t *testing.T) {
	db := costTestStorage(t, 40)
	c, srv := groupBackend(t, db)
	cfg := DefaultConfig()
	p := &PushDown{ng: NewPromQL(cfg, nil, nil)}
	t.Cleanup(func() { _ = p.ng.Close() })
	r := evalRange{start: time.UnixMilli(600_000), end: time.UnixMilli(3_000_000), step: 30 * time.Second}
	qp := func(q string) remote.QueryParams {
		return remote.QueryParams{Query: q, Start: r.start.UnixMilli(), End: r.end.UnixMilli(), Step: r.step, LookbackDelta: 5 * time.Minute}
	}
	for _, q := range []string{
		`sum by (namespace) (rate(requests_total[2m]))`,
		`max by (pod) (requests_total)`,
		`count(absent_over_time(requests_total{namespace="none"}[5m])) or sum(requests_total)`,
	} {
		b := &recordingBudget{}
		got, err := p.evalOnGroupData(remote.WithBudget(context.Background(), b), c, qp(q), 0)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		want := matrixAnswer(evalOn(t, p.ng, db, q, r))
		if len(got.Series) == 0 || len(got.Series) != len(want.Series) {
			t.Fatalf("%s: %d series, want %d (and some)", q, len(got.Series), len(want.Series))
		}
		for i := range want.Series {
			g, w := got.Series[i], want.Series[i]
			if !labels.Equal(g.Labels, w.Labels) || len(g.T) != len(w.T) {
				t.Fatalf("%s: series %d is %s with %d points, want %s with %d", q, i, g.Labels, len(g.T), w.Labels, len(w.T))
			}
			for k := range w.T {
				if g.T[k] != w.T[k] || g.F[k] != w.F[k] {
					t.Fatalf("%s: %s at %d: %v, want %v at %d", q, w.Labels, g.T[k], g.F[k], w.F[k], w.T[k])
				}
			}
		}
		if got.SamplesRead <= 0 || b.sample != int(got.SamplesRead) || b.bytes < answerBytes(got) || b.series == 0 {
			t.Errorf("%s: read %d samples; charged %d samples, %d bytes (answer %d), %d series", q, got.SamplesRead, b.sample, b.bytes, answerBytes(got), b.series)
		}
	}

	q := qp(`sum by (namespace) (rate(requests_total[2m]))`)
	t.Run("OverTheTenantsSamplesLimit", func(t *testing.T) {
		b := &recordingBudget{maxSamples: 500}
		_, err := p.evalOnGroupData(remote.WithBudget(context.Background(), b), c, q, 500)
		if !errors.Is(err, errRecordedSamples) {
			t.Errorf("%v; want the budget's samples error", err)
		}
	})
	t.Run("OverItsShareOfMaxSamples", func(t *testing.T) {
		small := cfg
		small.MaxSamples = 40
		sp := &PushDown{ng: NewPromQL(small, nil, nil)}
		t.Cleanup(func() { _ = sp.ng.Close() })
		_, err := sp.evalOnGroupData(context.Background(), c, qp(`max by (pod) (requests_total)`), 0)
		if !errors.Is(err, errGroupEval) {
			t.Errorf("%v; want errGroupEval (evaluated in one pass instead)", err)
		}
	})
	t.Run("ReplicaDown", func(t *testing.T) {
		srv.Close()
		_, err := p.evalOnGroupData(context.Background(), c, q, 0)
		if err == nil || errors.Is(err, errGroupEval) {
			t.Errorf("%v; want the replica's error, for callGroup to fail over", err)
		}
	})
}

// TestEvalOnGroupDataYields: a part evaluated by the proxy pauses for other
// tenants' requests while it walks its samples, as the fan-out's reads do.
func TestEvalOnGroupDataYields(t *testing.T) {
	db := costTestStorage(t, 40)
	c, _ := groupBackend(t, db)
	p := &PushDown{ng: NewPromQL(DefaultConfig(), nil, nil)}
	t.Cleanup(func() { _ = p.ng.Close() })
	var yields int
	ctx := WithYield(context.Background(), func(context.Context) error { yields++; return nil })
	_, err := p.evalOnGroupData(ctx, c, remote.QueryParams{Query: `sum(rate(requests_total[5m]))`, Start: 600_000, End: 3_000_000, Step: 15 * time.Second, LookbackDelta: 5 * time.Minute}, 0)
	if err != nil {
		t.Fatal(err)
	}
	// 40 series of 240 samples read by rate windows over 161 steps: the
	// engine walks well over 40 × 512 samples.
	if yields < 40 {
		t.Errorf("yielded %d times; want at least once per %d samples walked", yields, yieldEvery)
	}
}
