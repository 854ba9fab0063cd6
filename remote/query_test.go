package remote

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// spanBudget refuses spans longer than maxSpan and counts what it is
// charged.
type spanBudget struct {
	countingBudget
	maxSpan         int64
	series, samples int
	maxSamples      int
	err             error
}

var errSpan = errors.New("span over the limit")
var errSamples = errors.New("samples over the limit")

func (b *spanBudget) CheckSpan(mint, maxt int64) error {
	if maxt-mint > b.maxSpan {
		b.err = errSpan
		return errSpan
	}
	return nil
}
func (b *spanBudget) AddSeries(uint64) error { b.series++; return nil }
func (b *spanBudget) AddSamples(n int) error {
	b.samples += n
	if b.maxSamples > 0 && b.samples > b.maxSamples {
		b.err = errSamples
		return errSamples
	}
	return nil
}
func (b *spanBudget) AddBytes(n int) error {
	if err := b.countingBudget.AddBytes(n); err != nil {
		b.err = err
		return err
	}
	return nil
}
func (b *spanBudget) Err() error { return b.err }

// matrixServer answers every query with n series of points points each,
// counting the requests and the bytes it managed to write.
func matrixServer(t *testing.T, n, points int) (*Client, *atomic.Int64, *atomic.Int64) {
	var requests, written atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.Header().Set("Content-Type", "application/json")
		write := func(s string) bool {
			k, err := w.Write([]byte(s))
			written.Add(int64(k))
			return err == nil
		}
		write(`{"status":"success","data":{"resultType":"matrix","result":[`)
		for i := range n {
			var b strings.Builder
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `{"metric":{"pod":"p%d"},"values":[`, i)
			for k := range points {
				if k > 0 {
					b.WriteString(",")
				}
				fmt.Fprintf(&b, `[%d,"%d"]`, 60*k, k)
			}
			b.WriteString("]}")
			if !write(b.String()) {
				return
			}
		}
		write(`]},"warnings":["w1"]}`)
	}))
	t.Cleanup(srv.Close)
	return testClient(t, srv.URL), &requests, &written
}

func rangeParams() QueryParams {
	return QueryParams{Query: "max(x)", Start: 0, End: 3600_000, Step: time.Minute}
}

// A pushed query's answer is decoded as it arrives and charged to the
// budget: an answer far over the byte limit is cut off near the limit, not
// read whole first.
func TestQueryAnswerChargedAsItArrives(t *testing.T) {
	c, _, written := matrixServer(t, 200_000, 10) // ~30 MB
	b := &spanBudget{countingBudget: countingBudget{max: 256 << 10}, maxSpan: 1 << 62}
	_, err := c.Query(WithBudget(context.Background(), b), rangeParams())
	if !errors.Is(err, errOver) {
		t.Fatalf("err %v, want the budget's", err)
	}
	if b.bytes > 2*b.max {
		t.Errorf("charged %d bytes under a limit of %d", b.bytes, b.max)
	}
	if w := written.Load(); w > 16<<20 {
		t.Errorf("the backend wrote %d bytes before the read stopped", w)
	}
}

func TestQueryAnswerChargesSeriesAndSamples(t *testing.T) {
	c, _, _ := matrixServer(t, 30, 61)
	b := &spanBudget{countingBudget: countingBudget{max: 1 << 30}, maxSpan: 1 << 62}
	ans, err := c.Query(WithBudget(context.Background(), b), rangeParams())
	if err != nil {
		t.Fatal(err)
	}
	if len(ans.Series) != 30 || b.series != 30 || b.samples != 30*61 {
		t.Fatalf("%d series; charged %d series, %d samples", len(ans.Series), b.series, b.samples)
	}
	if len(ans.Warnings) != 1 || ans.Warnings[0] != "w1" {
		t.Errorf("warnings %v", ans.Warnings)
	}
	if ans.Series[29].Labels.Get("pod") != "p29" || ans.Series[29].F[60] != 60 || ans.Series[29].T[60] != 3600_000 {
		t.Errorf("series decoded wrong: %v %v %v", ans.Series[29].Labels, ans.Series[29].T[60], ans.Series[29].F[60])
	}
	b = &spanBudget{countingBudget: countingBudget{max: 1 << 30}, maxSpan: 1 << 62, maxSamples: 100}
	if _, err := c.Query(WithBudget(context.Background(), b), rangeParams()); !errors.Is(err, errSamples) {
		t.Fatalf("err %v, want the samples limit", err)
	}
	if b.samples > 100+61 {
		t.Errorf("decoded %d samples past a limit of 100", b.samples)
	}
}

// A span over max_query_length is refused before anything is sent.
func TestQuerySpanRefusedBeforeSending(t *testing.T) {
	c, requests, _ := matrixServer(t, 1, 1)
	b := &spanBudget{countingBudget: countingBudget{max: 1 << 30}, maxSpan: 3600_000}
	p := rangeParams()
	p.Spans = [][2]int64{{0, 60_000}, {-90 * 86400_000, 0}}
	if _, err := c.Query(WithBudget(context.Background(), b), p); !errors.Is(err, errSpan) {
		t.Fatalf("err %v, want the span limit", err)
	}
	if n := requests.Load(); n != 0 {
		t.Fatalf("%d requests sent", n)
	}
}

func TestQueryAnswerErrors(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		code       int
		want       string
	}{
		{"not JSON", "<html>bad gateway</html>", 502, "malformed backend response"},
		{"error envelope", `{"status":"error","errorType":"bad_data","error":"parse error"}`, 400, "HTTP 400 bad_data: parse error"},
		{"scalar", `{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}}`, 200, "malformed backend response"},
		{"bad point", `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"x"]}]}}`, 200, "malformed backend response"},
		{"truncated", `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"1"]}`, 200, "malformed backend response"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.code)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			_, err := testClient(t, srv.URL).Query(context.Background(), rangeParams())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}

// TestQueryAsksForStats: with Stats the query asks the backend for its
// statistics and the answer carries what its engine read.
func TestQueryAsksForStats(t *testing.T) {
	var stats string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		stats = r.Form.Get("stats")
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"success","data":{"resultType":"matrix","result":[],"stats":{"samples":{"totalQueryableSamples":7}}}}`))
	}))
	t.Cleanup(srv.Close)
	c := testClient(t, srv.URL)
	p := rangeParams()
	p.Stats = true
	ans, err := c.Query(t.Context(), p)
	if err != nil || ans.SamplesRead != 7 || stats != "true" {
		t.Fatalf("query: %v, stats=%q, answer %+v", err, stats, ans)
	}
	p.Stats = false
	if _, err = c.Query(t.Context(), p); err != nil || stats != "" {
		t.Fatalf("query without stats: %v, stats=%q", err, stats)
	}
}
