// Package e2eproxy is what the end-to-end test packages share: the fleet
// of real Prometheus servers holding generated data, the proxy started
// in-process (cmd/proxy/app) in front of it, and the differential suite
// comparing its answers with one Prometheus holding the union.
package e2eproxy

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/bench/datagen"
)

// SuiteExprs is the PromQL the proxy must answer exactly like one Prometheus
// holding all the data. {at} is replaced by a fixed timestamp inside the data.
var SuiteExprs = []string{
	`up`,
	`count(up)`,
	`sum by (cluster) (up)`,
	`rate(http_requests_total[5m])`,
	`sum by (namespace, code) (rate(http_requests_total[5m]))`,
	`increase(http_requests_total[10m])`,
	`irate(http_requests_total[1m])`,
	`resets(http_requests_total[30m])`,
	`histogram_quantile(0.9, sum by (le, namespace) (rate(http_request_duration_seconds_bucket[5m])))`,
	`histogram_quantile(0.5, rate(http_request_duration_seconds_bucket[5m]))`,
	`rate(http_request_duration_seconds_sum[5m]) / rate(http_request_duration_seconds_count[5m])`,
	`topk(3, memory_usage_bytes)`,
	`bottomk(2, sum by (job) (memory_usage_bytes))`,
	`count by (__name__) ({__name__=~".+"})`,
	`count by (__name__) ({namespace="team-a"})`,
	`absent(nonexistent_metric)`,
	`absent(up{job="no-such-job"})`,
	`absent_over_time(up[5m])`,
	`max_over_time(temperature_celsius[10m])`,
	`min_over_time(temperature_celsius[10m])`,
	`avg_over_time(memory_usage_bytes[15m])`,
	`quantile_over_time(0.95, temperature_celsius[30m])`,
	`stddev_over_time(temperature_celsius[30m])`,
	`max_over_time(rate(http_requests_total[5m])[30m:1m])`,
	`avg_over_time(up[10m:])`,
	`rate(http_requests_total[5m] offset 10m)`,
	`memory_usage_bytes offset -5m`,
	`memory_usage_bytes @ {at}`,
	`rate(http_requests_total[5m] @ end())`,
	`sum(rate(http_requests_total[5m] @ start()))`,
	`label_replace(up, "team", "$1", "job", "(.*)-api")`,
	`label_join(up, "where", "/", "cluster", "job")`,
	`memory_usage_bytes and on (instance, cluster) up == 1`,
	`up{namespace="team-a"} or on () vector(0)`,
	`http_requests_total unless http_requests_total{code="500"}`,
	`scalar(count(up))`,
	`vector(1)`,
	`time()`,
	`scalar(sum(up)) * 2`,
	`sum by (instance) (rate(node_cpu_seconds_total{mode!="idle"}[5m]))`,
	`deriv(memory_usage_bytes[10m])`,
	`predict_linear(memory_usage_bytes[30m], 3600)`,
	`delta(temperature_celsius[10m])`,
	`changes(up[30m])`,
	`timestamp(up)`,
	`sort_desc(sum by (namespace) (memory_usage_bytes))`,
	`count_values("value", up)`,
	`group by (cluster) (up)`,
	`{split="true"}`,
	`rate({split="true"}[5m])`,
	`{cluster="global"}`,
	`sum without (instance) (rate(http_requests_total[5m]))`,
	`clamp_min(temperature_celsius, 0)`,
	`round(temperature_celsius, 0.5)`,
	`sgn(temperature_celsius)`,
	`limitk(2, up)`,
	`mad_over_time(temperature_celsius[10m])`,
	`sort_by_label(up, "instance", "cluster")`,
	`last_over_time(memory_usage_bytes[5m])`,
	`present_over_time(up[5m])`,
	`1 + 2`,
	`rate(memory_usage_bytes[5m])`,
}

// badQueries must fail through the proxy exactly as through Prometheus.
var badQueries = []url.Values{
	{"query": {`foo{`}},
	{"query": {`rate(up)`}},
	{"query": {`sum by (`}},
	{"query": {`up`}, "time": {"abc"}},
	{"query": {``}},
	{"query": {`1 +`}},
}

var badRangeQueries = []url.Values{
	{"query": {`up`}, "start": {"100"}, "end": {"200"}, "step": {"0"}},
	{"query": {`up`}, "start": {"200"}, "end": {"100"}, "step": {"10"}},
	{"query": {`up`}, "start": {"0"}, "end": {"1000000"}, "step": {"1"}},
	{"query": {`up{`}, "start": {"100"}, "end": {"200"}, "step": {"10"}},
}

// SuiteTimes returns evaluation instants and ranges inside the data window.
type RangeSpec struct {
	Start, End time.Time
	Step       time.Duration
}

func SuiteTimes(cfg datagen.Config) ([]time.Time, []RangeSpec) {
	s := cfg.Start
	instants := []time.Time{s.Add(30 * time.Minute), s.Add(61*time.Minute + 7*time.Second + 250*time.Millisecond), cfg.LastSampleTime()}
	ranges := []RangeSpec{
		{s.Add(10 * time.Minute), s.Add(110 * time.Minute), time.Minute},
		{s.Add(50 * time.Minute), s.Add(70 * time.Minute), 15 * time.Second},
		{s.Add(3 * time.Minute), s.Add(100*time.Minute + 13*time.Second), 37 * time.Second},
	}
	return instants, ranges
}

func ExpandExpr(expr string, cfg datagen.Config) string {
	at := cfg.Start.Add(45 * time.Minute).Unix()
	return strings.ReplaceAll(expr, "{at}", strconv.FormatInt(at, 10))
}

// AllData is start and end around the whole generated data.
func AllData(cfg datagen.Config) url.Values {
	return url.Values{"start": {FormatTime(cfg.Start.Add(-time.Minute))}, "end": {FormatTime(cfg.LastSampleTime().Add(time.Minute))}}
}

// WithParams is a copy of p with the key/value pairs kv added.
func WithParams(p url.Values, kv ...string) url.Values {
	out := url.Values{}
	for k, v := range p {
		out[k] = append([]string(nil), v...)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out.Add(kv[i], kv[i+1])
	}
	return out
}

func FormatTime(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', 3, 64)
}

// APIRequest is one Prometheus API request, sent as GET or POST.
type APIRequest struct {
	Path   string
	Params url.Values
	Post   bool
	Header http.Header
}

func (r APIRequest) String() string {
	m := "GET"
	if r.Post {
		m = "POST"
	}
	return m + " " + r.Path + "?" + r.Params.Encode()
}

type APIAnswer struct {
	Code int
	Body []byte
	// Encoding is the answer's Content-Encoding; Body is decoded.
	Encoding string
}

// plainClient asks for answers uncompressed unless a request names its
// own Accept-Encoding. Prometheus gzips every answer a client accepts gzip
// for with a new compressor (~0.8 ms of its CPU); the comparisons read
// contents, never the encoding, and the proxy's gzip has tests of its own.
var plainClient = func() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableCompression = true
	return &http.Client{Transport: tr}
}()

func DoRequest(t testing.TB, base string, r APIRequest) APIAnswer {
	t.Helper()
	req, err := NewAPIRequest(base, r)
	if err != nil {
		t.Fatalf("%s: %v", r, err)
	}
	resp, err := plainClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", r, err)
	}
	defer func() { _ = resp.Body.Close() }()
	var rd io.Reader = resp.Body
	enc := resp.Header.Get("Content-Encoding")
	if enc == "gzip" {
		// Asked for by the request's own header: not decoded by the transport.
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			t.Fatalf("%s: gzip: %v", r, err)
		}
		rd = zr
	}
	body, err := io.ReadAll(rd)
	if err != nil {
		t.Fatalf("%s: %v", r, err)
	}
	return APIAnswer{Code: resp.StatusCode, Body: body, Encoding: enc}
}

// Normalize decodes a Prometheus API answer and sorts every list whose order
// Prometheus does not define (series of a vector or matrix, series lists), so
// two answers compare equal iff they hold the same data. Floats stay strings,
// so equality is exact.
func Normalize(t testing.TB, body []byte) any {
	t.Helper()
	var v map[string]any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("not JSON: %v: %s", err, body)
	}
	// The proxy warns when every backend group was skipped (no group's
	// labels or none of the tenant's rules could match); a Prometheus has
	// no groups to skip. The data must still be the same.
	if ws, ok := v["warnings"].([]any); ok {
		ws = slices.DeleteFunc(ws, func(w any) bool {
			s, _ := w.(string)
			return strings.Contains(s, "every backend group was skipped")
		})
		if len(ws) == 0 {
			delete(v, "warnings")
		} else {
			v["warnings"] = ws
		}
	}
	switch data := v["data"].(type) {
	case map[string]any:
		if res, ok := data["result"].([]any); ok {
			sortByJSON(res, "metric")
		}
	case []any:
		sortByJSON(data, "")
	}
	return v
}

func sortByJSON(list []any, field string) {
	// Each element's key is marshalled once, not on every comparison: the
	// suites sort thousands of series per answer.
	type keyed struct {
		key  string
		item any
	}
	ks := make([]keyed, len(list))
	for i, x := range list {
		k := x
		if m, ok := x.(map[string]any); ok && field != "" {
			k = m[field]
		}
		b, _ := json.Marshal(k)
		ks[i] = keyed{string(b), x}
	}
	slices.SortStableFunc(ks, func(a, b keyed) int { return strings.Compare(a.key, b.key) })
	for i := range ks {
		list[i] = ks[i].item
	}
}

// DiffAnswers says how the proxy's answer differs from the reference's, or "".
func DiffAnswers(t testing.TB, want, got APIAnswer) string {
	t.Helper()
	if want.Code != got.Code {
		return fmt.Sprintf("HTTP %d, reference %d\nproxy: %s\nreference: %s", got.Code, want.Code, Clip(got.Body), Clip(want.Body))
	}
	if bytes.Equal(want.Body, got.Body) {
		return "" // the same bytes normalize to the same answer
	}
	w, g := Normalize(t, want.Body), Normalize(t, got.Body)
	if !reflect.DeepEqual(w, g) {
		return fmt.Sprintf("answers differ\nproxy:     %s\nreference: %s", Clip(got.Body), Clip(want.Body))
	}
	return ""
}

// CompareAnswers fails the test when the proxy's answer differs from the reference's.
func CompareAnswers(t testing.TB, what string, want, got APIAnswer) {
	t.Helper()
	if d := DiffAnswers(t, want, got); d != "" {
		t.Errorf("%s: %s", what, d)
	}
}

// HasData reports whether a successful answer carries at least one series,
// sample or value (so a suite of empty answers cannot pass unnoticed).
func HasData(t testing.TB, a APIAnswer) bool {
	t.Helper()
	if a.Code != http.StatusOK {
		return false
	}
	has, err := firstListNonEmpty(json.NewDecoder(bytes.NewReader(a.Body)), "data", "result")
	if err != nil {
		t.Fatalf("not JSON: %v: %s", err, Clip(a.Body))
	}
	return has
}

// firstListNonEmpty reads tokens only up to the first element of the list
// at path (or at a shorter prefix of it, when that is already a list), so
// a suite's answers of megabytes are not decoded to learn whether they hold
// anything. A missing or null value is empty; a scalar or string result
// ([time, value]) is not.
func firstListNonEmpty(dec *json.Decoder, path ...string) (bool, error) {
	tok, err := dec.Token()
	if err != nil {
		return false, err
	}
	switch tok {
	case json.Delim('['):
		return dec.More(), nil
	case json.Delim('{'):
	default:
		return false, nil
	}
	if len(path) == 0 {
		return false, nil
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return false, err
		}
		if key == path[0] {
			return firstListNonEmpty(dec, path[1:]...)
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return false, err
		}
	}
	return false, nil
}

func Clip(b []byte) string {
	if len(b) > 1500 {
		return string(b[:1500]) + fmt.Sprintf("… (%d bytes)", len(b))
	}
	return string(b)
}

// SuiteRequests is the whole differential suite: every expression as instant
// and range query, GET and POST, the bad queries, and the label and series
// endpoints with and without match[].
func SuiteRequests(cfg datagen.Config) []APIRequest {
	instants, ranges := SuiteTimes(cfg)
	var reqs []APIRequest
	for i, e := range SuiteExprs {
		e = ExpandExpr(e, cfg)
		post := i%2 == 1 // alternate, and the first few both ways below
		for _, ts := range instants {
			reqs = append(reqs, APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {e}, "time": {FormatTime(ts)}}, Post: post})
		}
		for _, r := range ranges {
			reqs = append(reqs, APIRequest{Path: "/api/v1/query_range", Params: url.Values{
				"query": {e}, "start": {FormatTime(r.Start)}, "end": {FormatTime(r.End)}, "step": {strconv.FormatFloat(r.Step.Seconds(), 'f', -1, 64)},
			}, Post: !post})
		}
	}
	for _, p := range badQueries {
		reqs = append(reqs, APIRequest{Path: "/api/v1/query", Params: p}, APIRequest{Path: "/api/v1/query", Params: p, Post: true})
	}
	for _, p := range badRangeQueries {
		reqs = append(reqs, APIRequest{Path: "/api/v1/query_range", Params: p}, APIRequest{Path: "/api/v1/query_range", Params: p, Post: true})
	}
	start, end := FormatTime(cfg.Start.Add(20*time.Minute)), FormatTime(cfg.Start.Add(40*time.Minute))
	// The whole data, named as Grafana names its range: without one the
	// proxy reads only limits.defaults.default_label_window back from now.
	all := AllData(cfg)
	matchSets := [][]string{
		nil,
		{`up`},
		{`{namespace="team-a"}`},
		{`memory_usage_bytes{cluster="cluster-a"}`, `up{job=~"team-b.*"}`},
		{`{split="true"}`},
		{`{__name__=~"http_.*", code="500"}`},
	}
	for _, ms := range matchSets {
		for _, window := range [][2]string{{all.Get("start"), all.Get("end")}, {start, end}} {
			p := url.Values{}
			for _, m := range ms {
				p.Add("match[]", m)
			}
			p.Set("start", window[0])
			p.Set("end", window[1])
			reqs = append(reqs,
				APIRequest{Path: "/api/v1/labels", Params: p},
				APIRequest{Path: "/api/v1/labels", Params: p, Post: true},
				APIRequest{Path: "/api/v1/label/job/values", Params: p},
				APIRequest{Path: "/api/v1/label/__name__/values", Params: p},
			)
			if len(ms) > 0 {
				reqs = append(reqs,
					APIRequest{Path: "/api/v1/series", Params: p},
					APIRequest{Path: "/api/v1/series", Params: p, Post: true},
				)
			}
		}
	}
	reqs = append(reqs,
		APIRequest{Path: "/api/v1/series", Params: url.Values{}},                           // no match[]: bad_data
		APIRequest{Path: "/api/v1/series", Params: url.Values{"match[]": {`{job=~".*"}`}}}, // matches the empty string: bad_data
		APIRequest{Path: "/api/v1/labels", Params: WithParams(all, "limit", "3")},
		APIRequest{Path: "/api/v1/label/instance/values", Params: WithParams(all, "limit", "2")},
	)
	return reqs
}

// RunSuite sends every request to both servers and compares the answers.
// It also checks that most answers hold data, so the comparison means
// something, and returns how many requests it compared.
func RunSuite(t *testing.T, reference, proxy string, reqs []APIRequest, header http.Header) int {
	return RunSuiteMinData(t, reference, proxy, reqs, header, len(reqs)/2)
}

// RunSuiteMinData is RunSuite for data sets where fewer answers hold data
// (a tenant's view): at least minData of them must.
func RunSuiteMinData(t *testing.T, reference, proxy string, reqs []APIRequest, header http.Header, minData int) int {
	t.Helper()
	withData := 0
	for _, r := range reqs {
		want := DoRequest(t, reference, r)
		if HasData(t, want) {
			withData++
		}
		r.Header = header
		got := DoRequest(t, proxy, r)
		CompareAnswers(t, r.String(), want, got)
	}
	if withData < minData {
		t.Errorf("only %d of %d reference answers hold data: the suite does not exercise the data", withData, len(reqs))
	}
	t.Logf("%d requests compared, %d answers with data", len(reqs), withData)
	return len(reqs)
}

// NewAPIRequest builds r as a GET with a query string or a form POST,
// with r.Header.
func NewAPIRequest(base string, r APIRequest) (*http.Request, error) {
	var (
		req *http.Request
		err error
	)
	if r.Post {
		req, err = http.NewRequest(http.MethodPost, base+r.Path, strings.NewReader(r.Params.Encode()))
	} else {
		req, err = http.NewRequest(http.MethodGet, base+r.Path+"?"+r.Params.Encode(), nil)
	}
	if err != nil {
		return nil, err
	}
	for k, v := range r.Header {
		req.Header[k] = v
	}
	if r.Post {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	return req, nil
}
