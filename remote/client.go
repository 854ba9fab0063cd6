// Package remote talks to ONE Prometheus backend: remote read for samples,
// the HTTP API for label names, label values, series and metadata, and a readiness probe.
package remote

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	config_util "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	promconfig "github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage"
	promremote "github.com/prometheus/prometheus/storage/remote"
	"github.com/prometheus/prometheus/util/annotations"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/trace"
	"go.yaml.in/yaml/v3"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/redact"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/tracing"
)

// Config is how the proxy talks to every backend.
type Config struct {
	// Timeout bounds every single backend call (fed from proxy.backend_timeout).
	Timeout model.Duration `yaml:"timeout"`
	// ChunkedReadLimit is the largest remote-read frame accepted, in bytes.
	ChunkedReadLimit uint64 `yaml:"chunked_read_limit"`
	// MaxResponseBytes bounds a JSON API answer (labels, series, metadata).
	MaxResponseBytes int64 `yaml:"max_response_bytes"`
	// BufferReads reads every remote-read answer whole before the engine
	// sees any of it, as the proxy did before it streamed (for comparison).
	BufferReads bool `yaml:"buffer_reads"`
	// SequentialSelects reads a query's selectors one after another, as
	// the engine asks for them, instead of starting the others' reads as
	// soon as the first is read (for comparison).
	SequentialSelects bool `yaml:"sequential_selects"`
	// CompressAnswers asks backends to gzip their JSON API answers. Off by
	// default: Prometheus compresses each answer with a new gzip writer,
	// about 0.8 ms of its CPU, more than a small pushed query takes to
	// evaluate; worth it only where bandwidth is scarcer than CPU.
	CompressAnswers bool `yaml:"compress_answers"`
	// HTTPClient holds TLS, bearer token and basic auth settings, as in Prometheus' own config.
	HTTPClient config_util.HTTPClientConfig `yaml:"http_client"`
}

// DefaultConfig returns working values for every field: the zero values of
// the remote-read client (timeout 0, frame limit 0) fail every request.
func DefaultConfig() Config {
	return Config{
		Timeout:          model.Duration(30 * time.Second),
		ChunkedReadLimit: promconfig.DefaultChunkedReadLimit,
		MaxResponseBytes: 256 << 20,
		HTTPClient:       config_util.DefaultHTTPClientConfig,
	}
}

// UnmarshalYAML starts from DefaultConfig, so keys left out keep their
// defaults.
func (c *Config) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultConfig()
	type plain Config
	return unmarshal((*plain)(c))
}

// Validate reports the first setting that cannot work, naming its key
// within the section; it changes nothing.
func (c Config) Validate() error {
	if c.Timeout <= 0 {
		return fmt.Errorf("timeout: %s is not positive", c.Timeout)
	}
	if c.ChunkedReadLimit == 0 {
		return errors.New("chunked_read_limit: 0 would refuse every streamed answer")
	}
	if c.MaxResponseBytes <= 0 {
		return fmt.Errorf("max_response_bytes: %d is not positive", c.MaxResponseBytes)
	}
	if err := c.HTTPClient.Validate(); err != nil {
		return fmt.Errorf("http_client: %w", err)
	}
	return nil
}

// Client reads from one backend. It is safe for concurrent use.
type Client struct {
	base *url.URL
	cfg  Config
	// readURL and readHTTP make remote-read calls (frames.go): readHTTP
	// charges the answer's bytes to the query's budget as it arrives.
	readURL  string
	readHTTP *http.Client
	http     *http.Client
	// pool is the connection pool under the tracing wrappers, which cannot
	// close idle connections themselves.
	pool http.RoundTripper
	// version is the backend's Prometheus version, once known (query.go).
	version atomic.Pointer[fetched[string]]
	flags   atomic.Pointer[fetched[map[string]string]]
	// timedOut is every call's deadline cause, made once: formatting it
	// per call cost more than the rest of setting the deadline.
	timedOut error
	// closed makes a stream that ends after Close drop its connection too.
	closed atomic.Bool
	// unsorted: a streamed answer of this backend came out of label order
	// (stream.go); its reads are read whole and merged since.
	unsorted atomic.Bool
}

// Option changes how New builds a client.
type Option func(*options)

type options struct{ transport http.RoundTripper }

// WithTransport sends every call (remote read, API calls, probes) through rt
// instead of a transport built from cfg.HTTPClient: a Kubernetes API server's
// service proxy, for one, authenticates with a kubeconfig's credentials,
// which prometheus/common's HTTP client config cannot express.
func WithTransport(rt http.RoundTripper) Option {
	return func(o *options) { o.transport = rt }
}

// New returns a client for the Prometheus at rawURL (e.g. http://host:9090 or
// https://host/prefix). cfg must have passed Validate.
func New(rawURL string, cfg Config, opts ...Option) (*Client, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Error quotes the URL whole, password included.
		return nil, fmt.Errorf("backend %q: not a URL", redact.URL(rawURL))
	}
	redacted := u.Redacted()
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("backend %q: scheme must be http or https", redacted)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	readURL := *u
	readURL.Path += "/api/v1/read"
	var hc *http.Client
	if o.transport != nil {
		hc = &http.Client{Transport: o.transport}
	} else if hc, err = config_util.NewClientFromConfig(cfg.HTTPClient, "prometheus_proxy_backend"); err != nil {
		return nil, fmt.Errorf("backend %s: http client: %w", redacted, err)
	}
	// One connection pool per backend for remote read, API calls and probes.
	// The tracing wrappers cannot close idle connections, so they would
	// outlive Close: the pool is kept to close them.
	pool := hc.Transport
	// Every call is a client span of the request's trace and sends its
	// traceparent, so a backend with tracing on joins the trace.
	traced := func(rt http.RoundTripper) http.RoundTripper {
		return otelhttp.NewTransport(rt, otelhttp.WithPropagators(tracing.Propagator),
			// Health probes and discovery's calls belong to no request:
			// each would otherwise start a trace of its own.
			otelhttp.WithFilter(func(r *http.Request) bool { return trace.SpanContextFromContext(r.Context()).IsValid() }))
	}
	// A read keeps its own deadline (waitTimer), not the client's: that
	// would also run while a streamed answer waits for the engine to read it.
	readHTTP := &http.Client{Transport: traced(budgetTransport{next: pool}), CheckRedirect: hc.CheckRedirect, Jar: hc.Jar}
	hc = &http.Client{Transport: traced(pool), CheckRedirect: hc.CheckRedirect, Jar: hc.Jar, Timeout: hc.Timeout}
	return &Client{base: u, cfg: cfg, readURL: readURL.String(), readHTTP: readHTTP, http: hc, pool: pool,
		timedOut: fmt.Errorf("%w: request timed out after %s", context.DeadlineExceeded, cfg.Timeout)}, nil
}

// URL is the backend's base URL, as configured.
// The password of a URL with credentials reads "xxxxx".
func (c *Client) URL() string { return c.base.Redacted() }

// scrub hides the backend's password in an error of the remote-read
// library, which quotes the URL it was given whole.
func (c *Client) scrub(err error) error {
	if c.base.User == nil {
		return err
	}
	if _, hasPassword := c.base.User.Password(); !hasPassword {
		return err
	}
	return &scrubbedError{err: err, raw: c.base.String(), redacted: c.base.Redacted()}
}

type scrubbedError struct {
	err           error
	raw, redacted string
}

func (e *scrubbedError) Error() string { return strings.ReplaceAll(e.err.Error(), e.raw, e.redacted) }
func (e *scrubbedError) Unwrap() error { return e.err }

// Close drops the client's idle connections, so nothing of it outlives the
// proxy (each kept-alive connection holds two goroutines).
func (c *Client) Close() {
	c.closed.Store(true)
	c.closeIdle()
}

func (c *Client) closeIdle() {
	if ci, ok := c.pool.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// waitTimer cancels a remote read (with the same cause as callContext)
// when the proxy has waited on the backend for the configured timeout in a
// row: from sending the request to the first series, then within each
// step of a streamed answer. Time the answer spends waiting for its reader
// (the engine busy with other groups or selectors) is not the backend's
// and does not count; the query's own timeout bounds that.
func (c *Client) waitTimer(cancel context.CancelCauseFunc) *time.Timer {
	return time.AfterFunc(time.Duration(c.cfg.Timeout), func() {
		cancel(fmt.Errorf("%w: request timed out after %s", context.DeadlineExceeded, c.cfg.Timeout))
	})
}

// callContext bounds one call by the configured timeout. The cause makes a
// timeout read "request timed out after 30s" (as the remote-read library's
// does) instead of a bare "context deadline exceeded".
func (c *Client) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, time.Duration(c.cfg.Timeout), c.timedOut)
}

// Read runs one remote-read request holding one query per matcher set and
// returns every series, sorted by labels, series matched by several sets
// merged.
//
// One matcher set (the common case) is streamed: Read returns once the
// first series has been decoded, and the rest is decoded as the caller
// reads. A call that fails before that is an error here, so the caller can
// fail over; an answer that breaks off later fails the set's Err with
// ErrStreamBroken, never reads as a shorter answer. The call's deadline
// covers the whole stream. Several sets come back as consecutive sorted
// runs of one body, which can only be merged once all but the last are
// read, so that answer is read whole before returning.
func (c *Client) Read(ctx context.Context, mint, maxt int64, hints *storage.SelectHints, matcherSets [][]*labels.Matcher) (_ storage.SeriesSet, err error) {
	budget := budgetFrom(ctx)
	if budget != nil {
		if err := budget.CheckSpan(mint, maxt); err != nil {
			return nil, err
		}
	}
	queries := make([]*prompb.Query, 0, len(matcherSets))
	for _, ms := range matcherSets {
		q, err := promremote.ToQuery(mint, maxt, ms, hints)
		if err != nil {
			return nil, fmt.Errorf("backend %s: %w", c.URL(), err)
		}
		queries = append(queries, q)
	}
	// Cancelling tears the connection down on any early exit; a streamed
	// answer cancels when it is read to its end or closed.
	ctx, cancelCause := context.WithCancelCause(ctx)
	wait := c.waitTimer(cancelCause)
	cancel := func() {
		wait.Stop()
		cancelCause(context.Canceled)
	}
	streaming := false
	defer func() {
		if !streaming {
			cancel()
		}
	}()
	defer func() {
		// A broken backend must fail its call, not the process: the
		// decoders check what they read, this is in case one misses it.
		if r := recover(); r != nil {
			err = fmt.Errorf("backend %s: remote read: %w: %v", c.URL(), ErrBadResponse, r)
		}
	}()
	if budget != nil {
		ctx = context.WithValue(ctx, chargeBytesKey{}, budget)
	}
	ss, err := c.readMultiple(ctx, queries, mint, maxt)
	if err != nil {
		return nil, fmt.Errorf("backend %s: remote read: %w", c.URL(), c.scrub(err))
	}
	if len(queries) == 1 && !c.cfg.BufferReads && !c.unsorted.Load() {
		streaming = true
		st := newStreamSet(ctx, c, ss, budget, wait, cancel)
		// The first series is what decides whether the caller may still
		// fail over: wait for it here.
		if !st.Next() {
			if st.err != nil {
				return nil, st.err
			}
			return storage.EmptySeriesSet(), nil
		}
		st.peeked, st.handed = true, 0
		return st, nil
	}
	runs, err := sortedRuns(ss, budget)
	if err != nil {
		return nil, fmt.Errorf("backend %s: remote read: %w", c.URL(), c.scrub(err))
	}
	if len(runs) == 1 {
		return runs[0], nil
	}
	return storage.NewMergeSeriesSet(runs, 0, storage.ChainedSeriesMerge), nil
}

// sortedRuns drains ss and cuts it into runs of strictly increasing label
// sets. A streamed answer to several queries is one sorted run per query, and
// a long series may span frames that repeat its labels; merging the runs
// yields one sorted set with every series once.
// Each series is charged to budget (may be nil) as it is decoded.
func sortedRuns(ss storage.SeriesSet, budget Budget) ([]storage.SeriesSet, error) {
	var (
		runs []storage.SeriesSet
		cur  []storage.Series
		prev labels.Labels
	)
	for ss.Next() {
		s := ss.At()
		lset := s.Labels()
		if budget != nil {
			if err := budget.AddSeries(lset.Hash()); err != nil {
				return nil, err
			}
		}
		if len(cur) > 0 && labels.Compare(prev, lset) >= 0 {
			runs = append(runs, &listSeriesSet{series: cur})
			cur = nil
		}
		if _, decoded := s.(*chunkSeries); !decoded {
			s = labeledSeries{Series: s, lset: lset}
		}
		cur = append(cur, s)
		prev = lset
	}
	if err := ss.Err(); err != nil {
		return nil, err
	}
	runs = append(runs, &listSeriesSet{series: cur})
	return runs, nil
}

// labeledSeries keeps the labels of a series that would rebuild them on
// every Labels() call (a merged one, one of an answer of samples): merging
// and filtering call it often.
type labeledSeries struct {
	storage.Series
	lset labels.Labels
}

func (s labeledSeries) Labels() labels.Labels { return s.lset }

type listSeriesSet struct {
	series []storage.Series
	i      int
}

func (l *listSeriesSet) Next() bool {
	l.i++
	return l.i <= len(l.series)
}
func (l *listSeriesSet) At() storage.Series              { return l.series[l.i-1] }
func (*listSeriesSet) Err() error                        { return nil }
func (*listSeriesSet) Warnings() annotations.Annotations { return nil }

// Series asks /api/v1/series with one match[] per matcher set; the label sets
// come back sorted.
func (c *Client) Series(ctx context.Context, mint, maxt int64, matcherSets [][]*labels.Matcher) ([]labels.Labels, Warnings, error) {
	return c.SeriesLimit(ctx, mint, maxt, matcherSets, 0)
}

// SeriesLimit is Series answering at most limit series (0: all), for a
// question that one series answers (Prometheus 3.x honours the limit).
func (c *Client) SeriesLimit(ctx context.Context, mint, maxt int64, matcherSets [][]*labels.Matcher, limit int) ([]labels.Labels, Warnings, error) {
	var data []map[string]string
	p := timeRange(mint, maxt, matchParams(matcherSets))
	if limit > 0 {
		p.Set("limit", strconv.Itoa(limit))
	}
	w, err := c.apiCall(chargeAnswer(ctx), "/api/v1/series", p, &data)
	if err != nil {
		return nil, w, err
	}
	out := make([]labels.Labels, 0, len(data))
	budget := budgetFrom(ctx)
	for _, m := range data {
		lset := labels.FromMap(m)
		if budget != nil {
			if err := budget.AddSeries(lset.Hash()); err != nil {
				return nil, w, err
			}
		}
		out = append(out, lset)
	}
	slices.SortFunc(out, labels.Compare)
	return out, w, nil
}

// LabelNames asks /api/v1/labels; matcherSets may be empty (all series).
func (c *Client) LabelNames(ctx context.Context, mint, maxt int64, matcherSets [][]*labels.Matcher, limit int) ([]string, Warnings, error) {
	var data []string
	p := timeRange(mint, maxt, matchParams(matcherSets))
	if limit > 0 {
		p.Set("limit", strconv.Itoa(limit))
	}
	w, err := c.apiCall(chargeAnswer(ctx), "/api/v1/labels", p, &data)
	return data, w, err
}

// LabelValues asks /api/v1/label/<name>/values; matcherSets may be empty.
func (c *Client) LabelValues(ctx context.Context, name string, mint, maxt int64, matcherSets [][]*labels.Matcher, limit int) ([]string, Warnings, error) {
	var data []string
	p := timeRange(mint, maxt, matchParams(matcherSets))
	if limit > 0 {
		p.Set("limit", strconv.Itoa(limit))
	}
	// The values endpoint is GET only; long match[] lists still fit a URL in
	// practice because each set is one compact selector.
	w, err := c.apiGet(chargeAnswer(ctx), "/api/v1/label/"+url.PathEscape(name)+"/values", p, &data)
	return data, w, err
}

// Metadata is one entry of /api/v1/metadata.
type Metadata struct {
	Type string `json:"type"`
	Help string `json:"help"`
	Unit string `json:"unit"`
}

// Metadata asks /api/v1/metadata (metric may be empty).
func (c *Client) Metadata(ctx context.Context, metric string, limit, limitPerMetric int) (map[string][]Metadata, Warnings, error) {
	p := url.Values{}
	if metric != "" {
		p.Set("metric", metric)
	}
	if limit > 0 {
		p.Set("limit", strconv.Itoa(limit))
	}
	if limitPerMetric > 0 {
		p.Set("limit_per_metric", strconv.Itoa(limitPerMetric))
	}
	data := map[string][]Metadata{}
	w, err := c.apiGet(chargeAnswer(ctx), "/api/v1/metadata", p, &data)
	return data, w, err
}

// ExternalLabels reads the backend's global.external_labels from
// /api/v1/status/config (both 2.x and 3.x answer it with the loaded YAML).
// An answer without external labels is an empty set, not an error.
func (c *Client) ExternalLabels(ctx context.Context) (labels.Labels, error) {
	var data struct {
		YAML string `json:"yaml"`
	}
	if _, err := c.apiGet(ctx, "/api/v1/status/config", nil, &data); err != nil {
		return labels.EmptyLabels(), err
	}
	var cfg struct {
		Global struct {
			ExternalLabels map[string]string `yaml:"external_labels"`
		} `yaml:"global"`
	}
	if err := yaml.Unmarshal([]byte(data.YAML), &cfg); err != nil {
		return labels.EmptyLabels(), fmt.Errorf("backend %s: /api/v1/status/config: %w: %w", c.URL(), ErrBadResponse, err)
	}
	return labels.FromMap(cfg.Global.ExternalLabels), nil
}

// Ready probes /-/ready: nil when the backend answers 200.
func (c *Client) Ready(ctx context.Context) error {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.endpoint("/-/ready"), nil)
	if err != nil {
		return fmt.Errorf("backend %s: %w", c.URL(), err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("backend %s: readiness probe: %w", c.URL(), err)
	}
	defer func() { _ = resp.Body.Close() }()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("backend %s: readiness probe: HTTP %s", c.URL(), resp.Status)
	}
	return nil
}

// Warnings are the warnings and infos a backend attached to its answer.
type Warnings []string

func (c *Client) endpoint(path string) string {
	u := *c.base
	u.Path += path
	u.RawQuery = ""
	return u.String()
}

func (c *Client) apiCall(ctx context.Context, path string, form url.Values, into any) (Warnings, error) {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	req, err := c.formPost(ctx, path, form)
	if err != nil {
		return nil, err
	}
	return c.do(req, path, into)
}

// formPost is a POST of form to the API endpoint path.
func (c *Client) formPost(ctx context.Context, path string, form url.Values) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint(path), strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("backend %s: %w", c.URL(), err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	c.setAcceptEncoding(req)
	return req, nil
}

// setAcceptEncoding asks for an uncompressed answer unless compress_answers
// is set; without the header Go's transport asks for gzip on its own.
func (c *Client) setAcceptEncoding(req *http.Request) {
	if !c.cfg.CompressAnswers {
		req.Header.Set("Accept-Encoding", "identity")
	}
}

func (c *Client) apiGet(ctx context.Context, path string, params url.Values, into any) (Warnings, error) {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	u := c.endpoint(path)
	if len(params) > 0 {
		u += "?" + params.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("backend %s: %w", c.URL(), err)
	}
	c.setAcceptEncoding(req)
	return c.do(req, path, into)
}

// apiResponse is the envelope of every Prometheus API answer.
type apiResponse struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Warnings  []string        `json:"warnings"`
	Infos     []string        `json:"infos"`
}

// ErrBadResponse marks an answer that is not a Prometheus API answer at all.
var ErrBadResponse = errors.New("malformed backend response")

func (c *Client) do(req *http.Request, path string, into any) (Warnings, error) {
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("backend %s: %s: %w", c.URL(), path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	var r io.Reader = resp.Body
	if b, ok := req.Context().Value(chargeBytesKey{}).(Budget); ok {
		r = &chargedBody{ReadCloser: resp.Body, budget: b}
	}
	body, err := io.ReadAll(io.LimitReader(r, c.cfg.MaxResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("backend %s: %s: reading answer: %w", c.URL(), path, err)
	}
	if int64(len(body)) > c.cfg.MaxResponseBytes {
		return nil, fmt.Errorf("backend %s: %s: answer larger than %d bytes", c.URL(), path, c.cfg.MaxResponseBytes)
	}
	var env apiResponse
	if err := json.Unmarshal(body, &env); err != nil || env.Status == "" {
		return nil, fmt.Errorf("backend %s: %s: HTTP %d, content type %q: %w: %s", c.URL(), path, resp.StatusCode, resp.Header.Get("Content-Type"), ErrBadResponse, snippet(body))
	}
	if env.Status != "success" {
		return nil, &APIError{Backend: c.URL(), Path: path, Code: resp.StatusCode, Type: env.ErrorType, Msg: env.Error}
	}
	if err := json.Unmarshal(env.Data, into); err != nil {
		return nil, fmt.Errorf("backend %s: %s: %w: %w", c.URL(), path, ErrBadResponse, err)
	}
	return append(env.Warnings, env.Infos...), nil
}

// chargeAnswer makes the bytes of a listing answer (series, label names
// and values, metadata) count toward the query's budget as they are read:
// a tenant's listing over a wide range is bounded like a read.
func chargeAnswer(ctx context.Context) context.Context {
	if b := budgetFrom(ctx); b != nil {
		return context.WithValue(ctx, chargeBytesKey{}, b)
	}
	return ctx
}

// APIError is an error answer of a backend's HTTP API. Errors of type
// bad_data are the request's fault; the rest are the backend's.
type APIError struct {
	Backend, Path, Type, Msg string
	Code                     int
}

func (e *APIError) Error() string {
	return fmt.Sprintf("backend %s: %s: HTTP %d %s: %s", e.Backend, e.Path, e.Code, e.Type, e.Msg)
}

func snippet(b []byte) string {
	const n = 120
	b = bytes.TrimSpace(b)
	if !utf8.Valid(b[:min(len(b), n)]) {
		return fmt.Sprintf("%d bytes, not text", len(b))
	}
	if len(b) > n {
		return strconv.Quote(string(b[:n])) + "…"
	}
	return strconv.Quote(string(b))
}

func matchParams(matcherSets [][]*labels.Matcher) url.Values {
	p := url.Values{}
	for _, ms := range matcherSets {
		p.Add("match[]", Selector(ms))
	}
	return p
}

// Selector renders matchers as a PromQL selector, e.g. {__name__="up",job=~"a.*"}.
func Selector(ms []*labels.Matcher) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, m := range ms {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(m.String())
	}
	b.WriteByte('}')
	return b.String()
}

// The Prometheus API encodes "no bound" as these instants; they must not be
// sent on, or backends reject them as out of range.
var (
	apiMinTime = time.Unix(math.MinInt64/1000+62135596801, 0).UTC().UnixMilli()
	apiMaxTime = time.Unix(math.MaxInt64/1000-62135596801, 999999999).UTC().UnixMilli()
)

func timeRange(mint, maxt int64, p url.Values) url.Values {
	if p == nil {
		p = url.Values{}
	}
	if mint > apiMinTime {
		p.Set("start", formatMillis(mint))
	}
	if maxt < apiMaxTime {
		p.Set("end", formatMillis(maxt))
	}
	return p
}

func formatMillis(ms int64) string {
	return strconv.FormatFloat(float64(ms)/1000, 'f', 3, 64)
}
