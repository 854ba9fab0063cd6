package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	promremote "github.com/prometheus/prometheus/storage/remote"
)

// tap sits between the proxy and one backend and records what the proxy
// asked for over remote read and, pushed down, as PromQL queries: how many
// queries, over how much time of data, and how many bytes came back. Bytes alone cannot show that a refresh reads
// only the new tail, because a backend always sends whole chunks (two hours
// of samples at a one-minute interval); the requested time span can.
// Taps are used only in an untimed pass, so they never add to a latency.
type tap struct {
	URL string
	srv *http.Server

	mu    sync.Mutex
	stats tapStats
}

type tapStats struct {
	Requests int     // remote-read HTTP requests
	Queries  int     // queries inside them (one per selector and tenant rule), and pushed queries
	SpanMs   float64 // sum over queries of end - start of the data they read
	Bytes    float64 // response bytes
}

func (s tapStats) sub(o tapStats) tapStats {
	return tapStats{s.Requests - o.Requests, s.Queries - o.Queries, s.SpanMs - o.SpanMs, s.Bytes - o.Bytes}
}

func (s tapStats) add(o tapStats) tapStats {
	return tapStats{s.Requests + o.Requests, s.Queries + o.Queries, s.SpanMs + o.SpanMs, s.Bytes + o.Bytes}
}

func startTap(backend string) (*tap, error) {
	target, err := url.Parse(backend)
	if err != nil {
		return nil, fmt.Errorf("tap: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("tap: %w", err)
	}
	t := &tap{URL: "http://" + ln.Addr().String()}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.FlushInterval = -1 // remote read streams frames; pass each on at once
	t.srv = &http.Server{Handler: t.handler(rp), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = t.srv.Serve(ln) }()
	return t, nil
}

func (t *tap) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		path := req.URL.Path
		if path != "/api/v1/read" && path != "/api/v1/query" && path != "/api/v1/query_range" {
			next.ServeHTTP(w, req)
			return
		}
		body, err := io.ReadAll(io.LimitReader(req.Body, 64<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var span float64
		queries := 0
		if path == "/api/v1/read" {
			decoded := req.Clone(req.Context())
			decoded.Body = io.NopCloser(bytes.NewReader(body))
			if rr, err := promremote.DecodeReadRequest(decoded); err == nil {
				for _, q := range rr.Queries {
					span += float64(q.EndTimestampMs - q.StartTimestampMs)
					queries++
				}
			}
		} else if form, err := url.ParseQuery(string(body)); err == nil {
			span, queries = pushedSpan(form), 1
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		cw := &countingWriter{ResponseWriter: w}
		next.ServeHTTP(cw, req)
		t.mu.Lock()
		t.stats.Requests++
		t.stats.Queries += queries
		t.stats.SpanMs += span
		t.stats.Bytes += float64(cw.n)
		t.mu.Unlock()
	})
}

// tapParser parses pushed queries as the proxy writes them (experimental
// functions on).
var tapParser = parser.NewParser(parser.Options{EnableExperimentalFunctions: true})

// pushedSpan is the time span of data a pushed-down query reads, in
// milliseconds: from the earliest sample its selectors can reach (ranges,
// offsets and lookback included, as Prometheus computes it) to its end.
func pushedSpan(form url.Values) float64 {
	at := func(k string) (time.Time, bool) {
		f, err := strconv.ParseFloat(form.Get(k), 64)
		if err != nil {
			return time.Time{}, false
		}
		return time.UnixMilli(int64(math.Round(f * 1000))), true
	}
	start, ok1 := at("start")
	end, ok2 := at("end")
	if !ok1 || !ok2 {
		if start, ok1 = at("time"); !ok1 {
			return 0
		}
		end = start
	}
	lookback := 5 * time.Minute
	if f, err := strconv.ParseFloat(form.Get("lookback_delta"), 64); err == nil && f > 0 {
		lookback = time.Duration(f * float64(time.Second))
	}
	step, _ := strconv.ParseFloat(form.Get("step"), 64)
	e, err := tapParser.ParseExpr(form.Get("query"))
	if err != nil {
		return float64(end.Sub(start.Add(-lookback)).Milliseconds())
	}
	mint, maxt := promql.FindMinMaxTime(&parser.EvalStmt{Expr: e, Start: start, End: end,
		Interval: time.Duration(step * float64(time.Second)), LookbackDelta: lookback})
	if maxt < mint {
		return 0
	}
	// Ranges are open on the left: mint is one past the window's start.
	return float64(maxt - mint + 1)
}

func (t *tap) snapshot() tapStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stats
}

func (t *tap) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := t.srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		_ = t.srv.Close()
	}
}

// countingWriter counts body bytes; Unwrap lets the reverse proxy flush
// through it.
type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
