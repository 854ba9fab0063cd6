package remote

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

// countingBudget refuses once more than max bytes are charged.
type countingBudget struct{ bytes, max int }

var errOver = errors.New("over the byte limit")

func (b *countingBudget) AddSeries(uint64) error { return nil }
func (b *countingBudget) AddSamples(int) error   { return nil }
func (b *countingBudget) Err() error             { return nil }
func (b *countingBudget) CheckSpan(int64, int64) error {
	return nil
}
func (b *countingBudget) AddBytes(n int) error {
	b.bytes += n
	if b.bytes > b.max {
		return errOver
	}
	return nil
}

func TestSampledAnswerChargedAtItsDecodedSize(t *testing.T) {
	// 4 MiB that compress 20-fold: charging what arrives
	// alone would let the decoder spend 4 MiB under a 1 MiB limit.
	block := snappy.Encode(nil, bytes.Repeat([]byte("x"), 4<<20))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", r.URL.Query().Get("type"))
		// One byte per write, so the length arrives in pieces.
		for i := range block {
			_, _ = w.Write(block[i : i+1])
			w.(http.Flusher).Flush()
		}
	}))
	defer srv.Close()
	read := func(contentType string, max int) (*countingBudget, error) {
		b := &countingBudget{max: max}
		ctx := context.WithValue(context.Background(), chargeBytesKey{}, Budget(b))
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"?type="+url.QueryEscape(contentType), nil)
		resp, err := budgetTransport{next: http.DefaultTransport}.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		_, err = io.ReadAll(resp.Body)
		return b, err
	}
	if _, err := read("application/x-protobuf", 1<<20); !errors.Is(err, errOver) {
		t.Fatalf("a SAMPLES answer decoding to 4 MiB under a 1 MiB limit: got %v, want refused", err)
	}
	b, err := read("application/x-protobuf", 8<<20)
	if err != nil || b.bytes != len(block)+4<<20 {
		t.Fatalf("charged %d (%v), want the %d bytes read plus the 4 MiB decoded", b.bytes, err, len(block))
	}
	// A streamed answer is decoded frame by frame: only its bytes count.
	if b, err := read("application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse", 1<<20); err != nil || b.bytes != len(block) {
		t.Fatalf("streamed: charged %d (%v), want %d", b.bytes, err, len(block))
	}
}

// TestListingAnswersCharged: the bytes of series, label and metadata
// answers count toward the query's budget, and a budget over its limit
// fails the call.
func TestListingAnswersCharged(t *testing.T) {
	p := e2eutil.StartPrometheus(t, e2eutil.V3, nil)
	c, err := New(p.URL, DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	up := [][]*labels.Matcher{{labels.MustNewMatcher(labels.MatchEqual, model.MetricNameLabel, "up")}}
	calls := map[string]func(context.Context) error{
		"series": func(ctx context.Context) error {
			_, _, err := c.SeriesLimit(ctx, 0, 1000, up, 10)
			return err
		},
		"labels": func(ctx context.Context) error {
			_, _, err := c.LabelNames(ctx, 0, 1000, nil, 10)
			return err
		},
		"label values": func(ctx context.Context) error {
			_, _, err := c.LabelValues(ctx, "job", 0, 1000, nil, 10)
			return err
		},
		"metadata": func(ctx context.Context) error {
			_, _, err := c.Metadata(ctx, "", 10, 0)
			return err
		},
	}
	for name, call := range calls {
		b := &countingBudget{max: 1 << 20}
		if err := call(WithBudget(context.Background(), b)); err != nil || b.bytes == 0 {
			t.Errorf("%s: %v, %d bytes charged; want the answer's bytes", name, err, b.bytes)
		}
		tight := &countingBudget{max: 10}
		if err := call(WithBudget(context.Background(), tight)); !errors.Is(err, errOver) {
			t.Errorf("%s under a 10-byte budget: %v, want the budget's error", name, err)
		}
	}
}
