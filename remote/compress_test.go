package remote

import (
	"context"
	"net/http"
	"sync"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

// encodingTap records, per API path, whether the backend's answer came
// gzipped (Go's transport decompresses it and marks it Uncompressed).
type encodingTap struct {
	mu      sync.Mutex
	gzipped map[string]bool
}

func (t *encodingTap) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err == nil {
		t.mu.Lock()
		t.gzipped[r.URL.Path] = resp.Uncompressed
		t.mu.Unlock()
	}
	return resp, err
}

// TestAnswersUncompressedUnlessAsked: a real Prometheus gzips every API
// answer a client accepts gzip for, at ~0.8 ms of its CPU each; the proxy
// asks for plain answers unless backend.compress_answers is set, and reads
// the same either way.
func TestAnswersUncompressedUnlessAsked(t *testing.T) {
	p := e2eutil.StartPrometheus(t, e2eutil.V3, nil)
	up := [][]*labels.Matcher{{labels.MustNewMatcher(labels.MatchEqual, model.MetricNameLabel, "up")}}
	calls := func(t *testing.T, c *Client) (answers []int) {
		ctx := context.Background()
		q, err := c.Query(ctx, QueryParams{Query: `count_values("v", vector(1)) or vector(2)`, End: 1000})
		if err != nil {
			t.Fatal(err)
		}
		names, _, err := c.LabelNames(ctx, 0, 1000, up, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.ExternalLabels(ctx); err != nil {
			t.Fatal(err)
		}
		return []int{len(q.Series), len(names)}
	}
	read := func(t *testing.T, compress bool) (map[string]bool, []int) {
		cfg := DefaultConfig()
		cfg.CompressAnswers = compress
		tap := &encodingTap{gzipped: map[string]bool{}}
		c, err := New(p.URL, cfg, WithTransport(tap))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		got := calls(t, c)
		return tap.gzipped, got
	}
	plain, plainAnswers := read(t, false)
	gzipped, gzAnswers := read(t, true)
	for _, path := range []string{"/api/v1/query", "/api/v1/labels", "/api/v1/status/config"} {
		if g, ok := plain[path]; !ok || g {
			t.Errorf("default: %s answered gzipped=%t (asked: %t), want plain", path, g, ok)
		}
		if g := gzipped[path]; !g {
			t.Errorf("compress_answers: %s answered gzipped=%t, want gzipped", path, g)
		}
	}
	if plainAnswers[0] != 2 || plainAnswers[0] != gzAnswers[0] || plainAnswers[1] != gzAnswers[1] {
		t.Errorf("answers differ: plain %v, gzipped %v", plainAnswers, gzAnswers)
	}
}
