package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"
	"unsafe"

	jsoniter "github.com/json-iterator/go"
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
	// SamplesRead is the backend's own count of the samples its engine
	// read (stats' totalQueryableSamples) when QueryParams.Stats asked for
	// it; -1 when the backend did not tell.
	SamplesRead int64
}

// QueryParams is one PromQL evaluation: an instant query when Step is 0.
type QueryParams struct {
	Query         string
	Start, End    int64 // milliseconds; Start == End for an instant query
	Step          time.Duration
	LookbackDelta time.Duration
	// Spans are the time spans [mint, maxt] the query's selectors read,
	// each charged to the budget's CheckSpan before the query is sent.
	Spans [][2]int64
	// Stats asks the backend for its query statistics (stats=true, which
	// every release since 2.x accepts): what its engine read, in
	// QueryAnswer.SamplesRead.
	Stats bool
}

// Query evaluates PromQL on the backend itself. Floats travel as Go's
// shortest round-trip decimal, so values arrive bit for bit.
//
// The answer is decoded as it arrives, one series at a time, and charged
// to the query's budget (WithBudget) before it is kept: its bytes as they
// are read, each series and its samples as they are decoded. A backend
// answering more than the budget allows is cut off there, not read whole.
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
	if p.Stats {
		form.Set("stats", "true")
	}
	if p.LookbackDelta > 0 {
		form.Set("lookback_delta", strconv.FormatFloat(p.LookbackDelta.Seconds(), 'f', -1, 64))
	}
	budget := budgetFrom(ctx)
	if budget != nil {
		for _, sp := range p.Spans {
			if err := budget.CheckSpan(sp[0], sp[1]); err != nil {
				return nil, err
			}
		}
	}
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	req, err := c.formPost(ctx, path, form)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("backend %s: %s: %w", c.URL(), path, err)
	}
	defer func() {
		// The decoder stops at the answer's closing brace; what follows
		// (a newline, gzip's trailer) is read so that the connection is
		// kept for the next call instead of closed and dialled again.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		_ = resp.Body.Close()
	}()
	head := &headBuffer{}
	body := io.TeeReader(&cappedReader{r: resp.Body, left: c.cfg.MaxResponseBytes}, head)
	if budget != nil {
		body = &chargedBody{ReadCloser: io.NopCloser(body), budget: budget}
	}
	out, env, err := decodeQueryAnswer(body, budget)
	switch {
	case errors.Is(err, errAnswerTooLarge):
		return nil, fmt.Errorf("backend %s: %s: answer larger than %d bytes", c.URL(), path, c.cfg.MaxResponseBytes)
	case err != nil && (budget != nil && budget.Err() != nil || ctx.Err() != nil):
		// The query's own limit or end, not the backend's answer.
		return nil, fmt.Errorf("backend %s: %s: %w", c.URL(), path, err)
	case err != nil || env.Status == "":
		return nil, fmt.Errorf("backend %s: %s: HTTP %d, content type %q: %w: %s", c.URL(), path, resp.StatusCode, resp.Header.Get("Content-Type"), ErrBadResponse, snippet(head.b))
	case env.Status != "success":
		return nil, &APIError{Backend: c.URL(), Path: path, Code: resp.StatusCode, Type: env.ErrorType, Msg: env.Error}
	case env.ResultType != "vector" && env.ResultType != "matrix":
		return nil, fmt.Errorf("backend %s: %s: %w: result type %q, want vector or matrix", c.URL(), path, ErrBadResponse, env.ResultType)
	}
	out.Warnings = append(env.Warnings, env.Infos...)
	return out, nil
}

// queryEnvelope is what an API answer says besides its series.
type queryEnvelope struct {
	Status, ErrorType, Error, ResultType string
	Warnings, Infos                      []string
}

// decodeQueryAnswer reads {"status":…,"data":{"resultType":…,"result":[…]},…}
// as it streams, decoding and charging one series of the result at a time.
// jsoniter's iterator reads the numbers and strings in place, where
// encoding/json's tokens and raw messages allocated for every point: on a
// pushed query's answer, decoding was a fifth of the proxy's CPU.
func decodeQueryAnswer(r io.Reader, budget Budget) (*QueryAnswer, queryEnvelope, error) {
	it := jsoniter.Parse(jsoniter.ConfigDefault, r, 32<<10)
	var env queryEnvelope
	out := &QueryAnswer{SamplesRead: -1}
	if it.WhatIsNext() != jsoniter.ObjectValue {
		return out, env, fmt.Errorf("answer is not a JSON object")
	}
	for key := it.ReadObject(); key != "" && it.Error == nil; key = it.ReadObject() {
		switch key {
		case "status":
			env.Status = it.ReadString()
		case "errorType":
			env.ErrorType = it.ReadString()
		case "error":
			env.Error = it.ReadString()
		case "warnings":
			env.Warnings = readStrings(it)
		case "infos":
			env.Infos = readStrings(it)
		case "data":
			if it.WhatIsNext() != jsoniter.ObjectValue {
				it.Skip()
				continue
			}
			for k := it.ReadObject(); k != "" && it.Error == nil; k = it.ReadObject() {
				switch k {
				case "resultType":
					env.ResultType = it.ReadString()
				case "result":
					if err := decodeResult(it, budget, out); err != nil {
						return out, env, err
					}
				case "stats":
					out.SamplesRead = readSamplesRead(it)
				default:
					it.Skip()
				}
			}
		default:
			it.Skip()
		}
	}
	if it.Error != nil && !errors.Is(it.Error, io.EOF) {
		return out, env, it.Error
	}
	return out, env, nil
}

// readSamplesRead reads {"samples":{"totalQueryableSamples":N,…},…}; -1
// where the stats do not say.
func readSamplesRead(it *jsoniter.Iterator) int64 {
	n := int64(-1)
	if it.WhatIsNext() != jsoniter.ObjectValue {
		it.Skip()
		return n
	}
	for k := it.ReadObject(); k != "" && it.Error == nil; k = it.ReadObject() {
		if k != "samples" || it.WhatIsNext() != jsoniter.ObjectValue {
			it.Skip()
			continue
		}
		for f := it.ReadObject(); f != "" && it.Error == nil; f = it.ReadObject() {
			if f == "totalQueryableSamples" && it.WhatIsNext() == jsoniter.NumberValue {
				n = it.ReadInt64()
				continue
			}
			it.Skip()
		}
	}
	return n
}

func readStrings(it *jsoniter.Iterator) []string {
	var out []string
	if it.ReadNil() {
		return nil
	}
	for it.ReadArray() {
		out = append(out, it.ReadString())
	}
	return out
}

// decodeResult reads a vector's or matrix's series one at a time, each
// charged to budget (series, then samples) before the next is read.
func decodeResult(it *jsoniter.Iterator, budget Budget, out *QueryAnswer) error {
	if it.WhatIsNext() != jsoniter.ArrayValue {
		return fmt.Errorf("result is not an array of series")
	}
	var b labels.ScratchBuilder
	hint := 0 // points of the last series
	for it.ReadArray() {
		if it.WhatIsNext() != jsoniter.ObjectValue {
			return fmt.Errorf("result element is not a series")
		}
		b.Reset()
		var s QuerySeries
		for field := it.ReadObject(); field != "" && it.Error == nil; field = it.ReadObject() {
			switch field {
			case "metric":
				for name := it.ReadObject(); name != "" && it.Error == nil; name = it.ReadObject() {
					b.Add(name, it.ReadString())
				}
			case "value":
				t, v, err := readPoint(it)
				if err != nil {
					return err
				}
				s.T, s.F = append(s.T, t), append(s.F, v)
			case "values":
				if hint > 0 {
					// The series of a range answer mostly have a point at
					// every step: one allocation each, not a doubling.
					s.T, s.F = make([]int64, 0, hint), make([]float64, 0, hint)
				}
				for it.ReadArray() {
					t, v, err := readPoint(it)
					if err != nil {
						return err
					}
					s.T, s.F = append(s.T, t), append(s.F, v)
				}
			case "histogram", "histograms":
				out.Histograms = true
				it.Skip()
			default:
				it.Skip()
			}
		}
		if it.Error != nil {
			return it.Error
		}
		if len(s.T) == 0 {
			continue
		}
		hint = len(s.T)
		b.Sort()
		s.Labels = b.Labels()
		if budget != nil {
			if err := budget.AddSeries(s.Labels.Hash()); err != nil {
				return err
			}
			if err := budget.AddSamples(len(s.T)); err != nil {
				return err
			}
		}
		out.Series = append(out.Series, s)
	}
	return it.Error
}

// readPoint reads [1700000000.123, "0.5"]: the time a number of seconds
// (milliseconds exact), the value a string as Prometheus writes floats.
// Neither is copied out of the iterator's buffer: a point allocated two
// strings, half of what decoding a pushed answer allocated.
func readPoint(it *jsoniter.Iterator) (int64, float64, error) {
	if !it.ReadArray() {
		return 0, 0, fmt.Errorf("point is not [time, value]: %w", it.Error)
	}
	if it.WhatIsNext() != jsoniter.NumberValue {
		return 0, 0, fmt.Errorf("point time is not a number: %w", it.Error)
	}
	// A time in seconds with at most three decimals, as a float64, is
	// within a thousandth of a millisecond of the exact time for any
	// time before the year 70000, so rounding gives the milliseconds.
	secs := it.ReadFloat64()
	if !it.ReadArray() {
		return 0, 0, fmt.Errorf("point without a value: %w", it.Error)
	}
	vs := it.ReadStringAsSlice()
	if it.Error != nil {
		return 0, 0, it.Error
	}
	v, err := parseFloatBytes(vs)
	if err != nil {
		return 0, 0, fmt.Errorf("point value %q: %w", vs, err)
	}
	if it.ReadArray() {
		return 0, 0, errors.New("point with more than [time, value]")
	}
	if it.Error != nil {
		return 0, 0, it.Error
	}
	if math.IsNaN(secs) || math.IsInf(secs, 0) || math.Abs(secs) > maxPointSeconds {
		return 0, 0, fmt.Errorf("point time %g: out of range", secs)
	}
	return int64(math.Round(secs * 1000)), v, nil
}

// maxPointSeconds bounds a point's time so that its milliseconds fit an
// int64 and stay exact through a float64.
const maxPointSeconds = 1 << 40

// parseFloatBytes parses b without copying it into a string (ParseFloat
// keeps no reference to its argument; its errors copy it).
func parseFloatBytes(b []byte) (float64, error) {
	if len(b) == 0 {
		return 0, errors.New("empty value")
	}
	return strconv.ParseFloat(unsafe.String(&b[0], len(b)), 64)
}

var errAnswerTooLarge = errors.New("answer too large")

// cappedReader fails once more than left bytes are read.
type cappedReader struct {
	r    io.Reader
	left int64
}

func (c *cappedReader) Read(p []byte) (int, error) {
	if c.left < 0 {
		return 0, errAnswerTooLarge
	}
	if int64(len(p)) > c.left+1 {
		p = p[:c.left+1]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	if c.left < 0 {
		return 0, errAnswerTooLarge
	}
	return n, err
}

// headBuffer keeps the first bytes of an answer, for the error that quotes
// a malformed one.
type headBuffer struct{ b []byte }

func (h *headBuffer) Write(p []byte) (int, error) {
	if room := 256 - len(h.b); room > 0 {
		h.b = append(h.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
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
