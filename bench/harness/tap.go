package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	promremote "github.com/prometheus/prometheus/storage/remote"
)

// tap sits between the proxy and one backend and records what the proxy
// asked for over remote read: how many queries, over how much time, and
// how many bytes came back. Bytes alone cannot show that a refresh reads
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
	Queries  int     // queries inside them (one per selector and tenant rule)
	SpanMs   float64 // sum over queries of end - start
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
		if req.URL.Path != "/api/v1/read" {
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
		decoded := req.Clone(req.Context())
		decoded.Body = io.NopCloser(bytes.NewReader(body))
		if rr, err := promremote.DecodeReadRequest(decoded); err == nil {
			for _, q := range rr.Queries {
				span += float64(q.EndTimestampMs - q.StartTimestampMs)
				queries++
			}
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
