package remote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	// Spans are the time spans [mint, maxt] the query's selectors read,
	// each charged to the budget's CheckSpan before the query is sent.
	Spans [][2]int64
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
	defer func() { _ = resp.Body.Close() }()
	head := &headBuffer{}
	body := io.TeeReader(&cappedReader{r: resp.Body, left: c.cfg.MaxResponseBytes}, head)
	if budget != nil {
		body = &chargedBody{ReadCloser: io.NopCloser(body), budget: budget}
	}
	out, env, err := decodeQueryAnswer(json.NewDecoder(body), budget)
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
// token by token, decoding and charging one series of the result at a time.
func decodeQueryAnswer(dec *json.Decoder, budget Budget) (*QueryAnswer, queryEnvelope, error) {
	var env queryEnvelope
	out := &QueryAnswer{}
	err := decodeObject(dec, func(key string) error {
		switch key {
		case "status":
			return dec.Decode(&env.Status)
		case "errorType":
			return dec.Decode(&env.ErrorType)
		case "error":
			return dec.Decode(&env.Error)
		case "warnings":
			return dec.Decode(&env.Warnings)
		case "infos":
			return dec.Decode(&env.Infos)
		case "data":
			return decodeObject(dec, func(key string) error {
				switch key {
				case "resultType":
					return dec.Decode(&env.ResultType)
				case "result":
					return decodeResult(dec, budget, out)
				default:
					return skipValue(dec)
				}
			})
		default:
			return skipValue(dec)
		}
	})
	return out, env, err
}

// rawSeries is one element of a vector or matrix result.
type rawSeries struct {
	Metric     map[string]string   `json:"metric"`
	Value      []json.RawMessage   `json:"value"`
	Values     [][]json.RawMessage `json:"values"`
	Histogram  json.RawMessage     `json:"histogram"`
	Histograms json.RawMessage     `json:"histograms"`
}

func decodeResult(dec *json.Decoder, budget Budget, out *QueryAnswer) error {
	if err := expectDelim(dec, '['); err != nil {
		return err
	}
	for dec.More() {
		var r rawSeries
		if err := dec.Decode(&r); err != nil {
			return err
		}
		if len(r.Histogram) > 0 || len(r.Histograms) > 0 {
			out.Histograms = true
		}
		s := QuerySeries{Labels: labels.FromMap(r.Metric)}
		points := r.Values
		if r.Value != nil {
			points = [][]json.RawMessage{r.Value}
		}
		if len(points) == 0 {
			continue
		}
		if budget != nil {
			if err := budget.AddSeries(s.Labels.Hash()); err != nil {
				return err
			}
			if err := budget.AddSamples(len(points)); err != nil {
				return err
			}
		}
		s.T, s.F = make([]int64, 0, len(points)), make([]float64, 0, len(points))
		for _, pt := range points {
			t, v, err := parsePoint(pt)
			if err != nil {
				return err
			}
			s.T, s.F = append(s.T, t), append(s.F, v)
		}
		out.Series = append(out.Series, s)
	}
	return expectDelim(dec, ']')
}

// decodeObject calls field for each key of the JSON object dec is at;
// field must consume the key's value.
func decodeObject(dec *json.Decoder, field func(key string) error) error {
	if err := expectDelim(dec, '{'); err != nil {
		return err
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, ok := tok.(string)
		if !ok {
			return fmt.Errorf("object key %v", tok)
		}
		if err := field(key); err != nil {
			return err
		}
	}
	return expectDelim(dec, '}')
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return fmt.Errorf("found %v, want %v", tok, want)
	}
	return nil
}

// skipValue consumes one value without keeping it.
func skipValue(dec *json.Decoder) error {
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{', '[':
				depth++
			default:
				depth--
			}
		}
		if depth == 0 {
			return nil
		}
	}
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
