package remote

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/prometheus/model/labels"
)

// QuerySeries is one series of a backend's PromQL answer: float samples
// only (see QueryAnswer.Histograms).
type QuerySeries struct {
	Labels labels.Labels
	T      []int64 // milliseconds
	F      []float64
}

// QueryAnswer is a backend's answer to /api/v1/query or /api/v1/query_range.
type QueryAnswer struct {
	Series []QuerySeries
	// Histograms: the answer held native histograms, which the JSON API
	// renders lossily (bucket boundaries, not spans); Series lacks them.
	Histograms bool
	Warnings   Warnings
}

// QueryParams is one PromQL evaluation: an instant query when Step is 0.
type QueryParams struct {
	Query         string
	Start, End    int64 // milliseconds; Start == End for an instant query
	Step          time.Duration
	LookbackDelta time.Duration
}

// Query evaluates PromQL on the backend itself. Floats travel as Go's
// shortest round-trip decimal, so values arrive bit for bit.
func (c *Client) Query(ctx context.Context, p QueryParams) (*QueryAnswer, error) {
	form := url.Values{"query": {p.Query}}
	path := "/api/v1/query"
	if p.Step > 0 {
		path = "/api/v1/query_range"
		form.Set("start", formatMillis(p.Start))
		form.Set("end", formatMillis(p.End))
		form.Set("step", strconv.FormatFloat(p.Step.Seconds(), 'f', -1, 64))
	} else {
		form.Set("time", formatMillis(p.End))
	}
	if p.LookbackDelta > 0 {
		form.Set("lookback_delta", strconv.FormatFloat(p.LookbackDelta.Seconds(), 'f', -1, 64))
	}
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	w, err := c.apiCall(ctx, path, form, &data)
	if err != nil {
		return nil, err
	}
	var raw []struct {
		Metric     map[string]string   `json:"metric"`
		Value      []json.RawMessage   `json:"value"`
		Values     [][]json.RawMessage `json:"values"`
		Histogram  json.RawMessage     `json:"histogram"`
		Histograms json.RawMessage     `json:"histograms"`
	}
	if data.ResultType != "vector" && data.ResultType != "matrix" {
		return nil, fmt.Errorf("backend %s: %s: %w: result type %q, want vector or matrix", c.URL(), path, ErrBadResponse, data.ResultType)
	}
	if err := json.Unmarshal(data.Result, &raw); err != nil {
		return nil, fmt.Errorf("backend %s: %s: %w: %v", c.URL(), path, ErrBadResponse, err)
	}
	out := &QueryAnswer{Warnings: w, Series: make([]QuerySeries, 0, len(raw))}
	for _, r := range raw {
		if len(r.Histogram) > 0 || len(r.Histograms) > 0 {
			out.Histograms = true
		}
		s := QuerySeries{Labels: labels.FromMap(r.Metric)}
		points := r.Values
		if r.Value != nil {
			points = [][]json.RawMessage{r.Value}
		}
		for _, pt := range points {
			t, v, err := parsePoint(pt)
			if err != nil {
				return nil, fmt.Errorf("backend %s: %s: %w: %v", c.URL(), path, ErrBadResponse, err)
			}
			s.T, s.F = append(s.T, t), append(s.F, v)
		}
		if len(s.T) > 0 {
			out.Series = append(out.Series, s)
		}
	}
	return out, nil
}

// parsePoint reads [1700000000.123, "0.5"]: the time a number of seconds
// with millisecond decimals, the value a string (NaN and ±Inf included).
func parsePoint(pt []json.RawMessage) (int64, float64, error) {
	if len(pt) != 2 {
		return 0, 0, fmt.Errorf("point with %d fields, want [time, value]", len(pt))
	}
	sec, err := strconv.ParseFloat(string(pt[0]), 64)
	if err != nil {
		return 0, 0, fmt.Errorf("point time %s: %w", pt[0], err)
	}
	var vs string
	if err := json.Unmarshal(pt[1], &vs); err != nil {
		return 0, 0, fmt.Errorf("point value %s: %w", pt[1], err)
	}
	v, err := strconv.ParseFloat(vs, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("point value %q: %w", vs, err)
	}
	return int64(math.Round(sec * 1000)), v, nil
}

// engineFactsFor is how long a backend's version and flags are reused: a
// backend restarted as another release or with other flags under the same
// URL is noticed within it.
const engineFactsFor = time.Minute

// fetched is a value read from the backend, and when.
type fetched[T any] struct {
	v  T
	at time.Time
}

// reuse returns the value in p while it is younger than engineFactsFor,
// else reads it again with get.
func reuse[T any](p *atomic.Pointer[fetched[T]], get func() (T, error)) (T, error) {
	if f := p.Load(); f != nil && time.Since(f.at) < engineFactsFor {
		return f.v, nil
	}
	v, err := get()
	if err != nil {
		var zero T
		return zero, err
	}
	p.Store(&fetched[T]{v, time.Now()})
	return v, nil
}

// Version returns the backend's Prometheus version (/api/v1/status/buildinfo),
// reused for engineFactsFor: a pushed query is only exact on the engine the
// proxy evaluates with, and engines differ between releases.
func (c *Client) Version(ctx context.Context) (string, error) {
	return reuse(&c.version, func() (string, error) {
		var data struct {
			Version string `json:"version"`
		}
		_, err := c.apiGet(ctx, "/api/v1/status/buildinfo", nil, &data)
		return data.Version, err
	})
}

// Flags returns the flags the backend was started with
// (/api/v1/status/flags, every value as a string), reused for
// engineFactsFor: some feature flags change what a query answers.
func (c *Client) Flags(ctx context.Context) (map[string]string, error) {
	return reuse(&c.flags, func() (map[string]string, error) {
		var data map[string]string
		_, err := c.apiGet(ctx, "/api/v1/status/flags", nil, &data)
		return data, err
	})
}
