package httpapi

// The rows of TestEndpoints, grouped by route: for each, answers that
// succeed and the errors it answers.

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/admission"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/engine"
)

// Every listing below names its range: the test data lies in [0s, 31m],
// long before the default label window ending now.
const (
	listFrom = "0"
	listTo   = "3600"
)

var (
	errGarbled    = errors.New(`backend group "eu": garbled answer`)
	errStaleToken = fmt.Errorf("group eu: %w", engine.ErrBadNextToken)
)

// failWith makes every read fail with err.
func failWith(err error) func(*fakeReader) { return func(f *fakeReader) { f.err = err } }

// warnWith makes every answer carry the warning msg.
func warnWith(msg string) func(*fakeReader) {
	return func(f *fakeReader) {
		f.warns = annotations.New().Add(errors.New(msg))
	}
}

// limitedSetup is a server whose default limits edit changes (a server
// of its own: setups with limits never compare equal).
func limitedSetup(edit func(*admission.Limits)) serverSetup {
	l := admission.DefaultLimits()
	edit(&l)
	return serverSetup{limits: &l}
}

var htmlAccept = http.Header{"Accept": {"text/html"}}

// endpointCases are the rows of TestEndpoints.
func endpointCases() []endpointCase {
	tenants := serverSetup{tenancy: true}
	var cases []endpointCase
	add := func(cs ...endpointCase) { cases = append(cases, cs...) }

	// /api/v1/query
	add(
		endpointCase{name: "query", path: urlOf("/api/v1/query", "query", "up", "time", "600"), code: 200, check: queryResult("vector", 2)},
		endpointCase{name: "query/post", method: http.MethodPost, path: "/api/v1/query", form: formOf("query", "sum(up)", "time", "600"), code: 200, check: queryResult("vector", 1)},
		endpointCase{name: "query/scalar", path: urlOf("/api/v1/query", "query", "1+1", "time", "600"), code: 200, check: func(t *testing.T, b apiBody, _ *fakeReader) {
			var d struct {
				ResultType string `json:"resultType"`
				Result     []any  `json:"result"`
			}
			decodeData(t, b, &d)
			if d.ResultType != "scalar" || len(d.Result) != 2 || d.Result[1] != "2" {
				t.Errorf("data %s, want scalar 2", b.Data)
			}
		}},
		endpointCase{name: "query/warnings", fault: warnWith(`partial response: group "us" unavailable`), path: urlOf("/api/v1/query", "query", "up", "time", "600"), code: 200,
			check: checkAll(queryResult("vector", 2), warned(`group "us" unavailable`))},
		endpointCase{name: "query/missing query", path: urlOf("/api/v1/query", "time", "600"), code: 400, errType: errorBadData, check: noRead},
		endpointCase{name: "query/bad promql", path: urlOf("/api/v1/query", "query", "up{"), code: 400, errType: errorBadData, check: checkAll(mentions("parse error"), noRead)},
		endpointCase{name: "query/bad time", path: urlOf("/api/v1/query", "query", "up", "time", "yesterday"), code: 400, errType: errorBadData, check: mentions("time")},
		endpointCase{name: "query/bad timeout", path: urlOf("/api/v1/query", "query", "up", "timeout", "soon"), code: 400, errType: errorBadData, check: mentions("timeout")},
		endpointCase{name: "query/bad partial_response", path: urlOf("/api/v1/query", "query", "up", "partial_response", "maybe"), code: 400, errType: errorBadData, check: checkAll(mentions("partial_response"), noRead)},
		endpointCase{name: "query/group down", fault: failWith(errGroupDown), path: urlOf("/api/v1/query", "query", "up", "time", "600"), code: 503, errType: errorUnavailable, check: mentions(`group "eu" unavailable`)},
		endpointCase{name: "query/garbled answer", fault: failWith(errGarbled), path: urlOf("/api/v1/query", "query", "up", "time", "600"), code: 422, errType: errorExec, check: mentions("garbled")},
		endpointCase{name: "query/explain", path: urlOf("/api/v1/query", "query", "sum(up)", "explain", "true"), code: 200, check: checkAll(func(t *testing.T, b apiBody, _ *fakeReader) {
			var d struct{ Explain string }
			decodeData(t, b, &d)
			if d.Explain != "evaluated in the proxy: sum(up)" {
				t.Errorf("explain %q", d.Explain)
			}
		}, noRead)},
		endpointCase{name: "query/explain bad promql", path: urlOf("/api/v1/query", "query", "sum(", "explain", "true"), code: 400, errType: errorBadData, check: noRead},
		endpointCase{name: "query/too many selectors", setup: limitedSetup(func(l *admission.Limits) { l.MaxSelectorsPerQuery = 2 }),
			path: urlOf("/api/v1/query", "query", "up + up + up", "time", "600"), code: 422, errType: errorExec, check: checkAll(mentions("max_selectors_per_query"), noRead),
			logged: []string{`"status":422`, `"limit":"max_selectors_per_query"`, `"query":"up + up + up"`}},
		endpointCase{name: "query/too many samples", setup: limitedSetup(func(l *admission.Limits) { l.MaxSamplesPerQuery = 5 }),
			path: urlOf("/api/v1/query", "query", "sum_over_time(up[30m])", "time", "1800"), code: 422, errType: errorExec, check: mentions("max_samples_per_query"),
			logged: []string{`"limit":"max_samples_per_query"`}},
		endpointCase{name: "query/answer too large", setup: limitedSetup(func(l *admission.Limits) { l.MaxResponseBytes = 64 }),
			path: urlOf("/api/v1/query", "query", "up", "time", "600"), code: 422, errType: errorExec, check: mentions("max_response_bytes")},
		endpointCase{name: "query/body too large", setup: serverSetup{maxBody: 32}, method: http.MethodPost, path: "/api/v1/query",
			form: formOf("query", strings.Repeat("up or ", 20)+"up"), code: 413, errType: errorBadData, check: checkAll(mentions("larger than 32 bytes"), noRead)},
		endpointCase{name: "query/tenant", setup: tenants, tenant: "team-a", path: urlOf("/api/v1/query", "query", "up", "time", "600"), code: 200, check: checkAll(queryResult("vector", 2), readAs("team-a")),
			logged: []string{`"status":200`, `"tenant":"team-a"`, `"subject":"header:team-a"`, `"series":2`}},
		endpointCase{name: "query/tenant missing", setup: tenants, path: urlOf("/api/v1/query", "query", "up"), code: 401, errType: errorUnauthorized, check: checkAll(mentions("X-Tenant-Namespace"), noRead),
			wantHeader: http.Header{"Www-Authenticate": {`Tenant header="X-Tenant-Namespace"`}}},
		endpointCase{name: "query/cors", path: urlOf("/api/v1/query", "query", "up", "time", "600"), header: http.Header{"Origin": {"https://grafana.example"}}, code: 200, check: queryResult("vector", 2),
			wantHeader: http.Header{"Access-Control-Allow-Origin": {"https://grafana.example"}}},
		endpointCase{name: "query/tenant without rules", setup: tenants, tenant: "team-z", path: urlOf("/api/v1/query", "query", "up"), code: 403, errType: errorForbidden, check: noRead,
			logged: []string{`"status":403`, `"auth_error":`}},
		endpointCase{name: "query/tenants", setup: tenants, tenant: "team-a,team-b", path: urlOf("/api/v1/query", "query", "up", "time", "600"), code: 200, check: readAs("team-a,team-b")},
		endpointCase{name: "query/tenants one without rules", setup: tenants, tenant: "team-a,team-z", path: urlOf("/api/v1/query", "query", "up"), code: 403, errType: errorForbidden, check: checkAll(mentions("team-z"), noRead)},
		endpointCase{name: "query/tenant in header and parameter", setup: tenants, method: http.MethodPost, path: "/api/v1/query", form: formOf("query", "up", "time", "600", "namespace", "team-b"), header: http.Header{"X-Tenant-Namespace": {"team-b"}}, code: 200, check: readAs("team-b")},
		endpointCase{name: "query/tenant twice", setup: tenants, tenant: "team-a", path: urlOf("/api/v1/query", "query", "up", "namespace", "team-b"), code: 400, errType: errorBadData, check: noRead},
	)

	// /api/v1/query_range
	add(
		endpointCase{name: "query_range", path: urlOf("/api/v1/query_range", "query", "up", "start", "0", "end", "600", "step", "60"), code: 200, check: queryResult("matrix", 2)},
		endpointCase{name: "query_range/post", method: http.MethodPost, path: "/api/v1/query_range", form: formOf("query", "rate(http_requests_total[5m])", "start", "600", "end", "1200", "step", "60"), code: 200, check: queryResult("matrix", 1)},
		endpointCase{name: "query_range/missing step", path: urlOf("/api/v1/query_range", "query", "up", "start", "0", "end", "600"), code: 400, errType: errorBadData, check: checkAll(mentions("step"), noRead)},
		endpointCase{name: "query_range/end before start", path: urlOf("/api/v1/query_range", "query", "up", "start", "600", "end", "0", "step", "60"), code: 400, errType: errorBadData, check: mentions("end timestamp must not be before start time")},
		endpointCase{name: "query_range/too many points", path: urlOf("/api/v1/query_range", "query", "up", "start", "0", "end", "86400", "step", "1"), code: 400, errType: errorBadData, check: mentions("11,000 points")},
		endpointCase{name: "query_range/bad promql", path: urlOf("/api/v1/query_range", "query", "rate(up)", "start", "0", "end", "600", "step", "60"), code: 400, errType: errorBadData},
		endpointCase{name: "query_range/group down", fault: failWith(errGroupDown), path: urlOf("/api/v1/query_range", "query", "up", "start", "0", "end", "600", "step", "60"), code: 503, errType: errorUnavailable},
		endpointCase{name: "query_range/explain", path: urlOf("/api/v1/query_range", "query", "up", "start", "0", "end", "600", "step", "60", "explain", "true"), code: 200, check: noRead},
	)

	// /api/v1/series
	add(
		endpointCase{name: "series", path: urlOf("/api/v1/series", "match[]", "up", "start", listFrom, "end", listTo), code: 200, check: func(t *testing.T, b apiBody, _ *fakeReader) {
			var d []map[string]string
			decodeData(t, b, &d)
			var instances []string
			for _, s := range d {
				if s["__name__"] == "up" {
					instances = append(instances, s["instance"])
				}
			}
			slices.Sort(instances)
			if len(d) != 2 || !slices.Equal(instances, []string{"a1", "a2"}) {
				t.Errorf("series %v, want the two up series", d)
			}
		}},
		endpointCase{name: "series/post", method: http.MethodPost, path: "/api/v1/series", form: formOf("match[]", `{job="db"}`, "start", listFrom, "end", listTo), code: 200, check: func(t *testing.T, b apiBody, _ *fakeReader) {
			var d []map[string]string
			decodeData(t, b, &d)
			if len(d) != 1 || d[0]["__name__"] != "memory_usage_bytes" {
				t.Errorf("series %v", d)
			}
		}},
		endpointCase{name: "series/no match", path: urlOf("/api/v1/series", "start", listFrom, "end", listTo), code: 400, errType: errorBadData, check: checkAll(mentions("no match[] parameter provided"), noRead)},
		endpointCase{name: "series/bad match", path: urlOf("/api/v1/series", "match[]", "up{", "start", listFrom, "end", listTo), code: 400, errType: errorBadData, check: noRead},
		endpointCase{name: "series/bad start", path: urlOf("/api/v1/series", "match[]", "up", "start", "dawn"), code: 400, errType: errorBadData, check: checkAll(mentions(`"start"`), noRead)},
		endpointCase{name: "series/too many match", setup: limitedSetup(func(l *admission.Limits) { l.MaxMatchPerRequest = 1 }),
			path: urlOf("/api/v1/series", "match[]", "up", "match[]", "memory_usage_bytes", "start", listFrom, "end", listTo), code: 422, errType: errorExec, check: checkAll(mentions("max_match_per_request"), noRead),
			logged: []string{`"limit":"max_match_per_request"`, `"match":["up","memory_usage_bytes"]`}},
		endpointCase{name: "series/range too long", setup: limitedSetup(func(l *admission.Limits) { l.MaxQueryLength = model.Duration(time.Hour) }),
			path: urlOf("/api/v1/series", "match[]", "up", "start", "0", "end", "86400"), code: 422, errType: errorExec, check: checkAll(mentions("max_query_length"), noRead)},
		endpointCase{name: "series/group down", fault: failWith(errGroupDown), path: urlOf("/api/v1/series", "match[]", "up", "start", listFrom, "end", listTo), code: 503, errType: errorUnavailable},
		endpointCase{name: "series/warnings", fault: warnWith("partial response"), path: urlOf("/api/v1/series", "match[]", "up", "start", listFrom, "end", listTo), code: 200, check: warned("partial response")},
		endpointCase{name: "series/tenant", setup: tenants, tenant: "team-a", path: urlOf("/api/v1/series", "match[]", "up", "start", listFrom, "end", listTo), code: 200, check: readAs("team-a")},
	)

	// /api/v1/labels
	add(
		endpointCase{name: "labels", path: urlOf("/api/v1/labels", "start", listFrom, "end", listTo), code: 200, check: stringList("__name__", "code", "instance", "job", "namespace")},
		endpointCase{name: "labels/post match", method: http.MethodPost, path: "/api/v1/labels", form: formOf("match[]", "memory_usage_bytes", "start", listFrom, "end", listTo), code: 200, check: func(t *testing.T, b apiBody, _ *fakeReader) {
			var d []string
			decodeData(t, b, &d)
			if !slices.Equal(d, []string{"__name__", "job", "namespace"}) {
				t.Errorf("labels %v", d)
			}
		}},
		endpointCase{name: "labels/bad match", path: urlOf("/api/v1/labels", "match[]", "{", "start", listFrom, "end", listTo), code: 400, errType: errorBadData, check: noRead},
		endpointCase{name: "labels/bad end", path: urlOf("/api/v1/labels", "end", "later"), code: 400, errType: errorBadData, check: mentions(`"end"`)},
		endpointCase{name: "labels/bad limit", path: urlOf("/api/v1/labels", "limit", "-1", "start", listFrom, "end", listTo), code: 400, errType: errorBadData, check: mentions("limit")},
		endpointCase{name: "labels/group down", fault: failWith(errGroupDown), path: urlOf("/api/v1/labels", "start", listFrom, "end", listTo), code: 503, errType: errorUnavailable},
	)

	// /api/v1/label/:name/values
	add(
		endpointCase{name: "label values", path: urlOf("/api/v1/label/job/values", "start", listFrom, "end", listTo), code: 200, check: func(t *testing.T, b apiBody, _ *fakeReader) {
			var d []string
			decodeData(t, b, &d)
			if !slices.Equal(d, []string{"api", "db"}) {
				t.Errorf("values %v", d)
			}
		}},
		endpointCase{name: "label values/metric names", path: urlOf("/api/v1/label/__name__/values", "match[]", `{job="api"}`, "start", listFrom, "end", listTo), code: 200, check: stringList("http_requests_total", "up")},
		endpointCase{name: "label values/bad name", path: "/api/v1/label/%FF/values", code: 400, errType: errorBadData, check: checkAll(mentions("invalid label name"), noRead)},
		endpointCase{name: "label values/bad match", path: urlOf("/api/v1/label/job/values", "match[]", "up{", "start", listFrom, "end", listTo), code: 400, errType: errorBadData},
		endpointCase{name: "label values/post", method: http.MethodPost, path: "/api/v1/label/job/values", code: 405, errType: errorBadData},
		endpointCase{name: "label values/group down", fault: failWith(errGroupDown), path: urlOf("/api/v1/label/job/values", "start", listFrom, "end", listTo), code: 503, errType: errorUnavailable},
	)

	// /api/v1/metadata
	metadataData := func(want ...string) func(*testing.T, apiBody, *fakeReader) {
		return func(t *testing.T, b apiBody, _ *fakeReader) {
			var d map[string][]engine.Metadata
			decodeData(t, b, &d)
			if len(d) != len(want) {
				t.Errorf("metadata %v, want %q", d, want)
			}
			for _, w := range want {
				if len(d[w]) != 1 || d[w][0].Type == "" {
					t.Errorf("metadata %v lacks %q", d, w)
				}
			}
		}
	}
	add(
		endpointCase{name: "metadata", path: "/api/v1/metadata", code: 200, check: metadataData("http_requests_total", "up")},
		endpointCase{name: "metadata/metric", path: urlOf("/api/v1/metadata", "metric", "up"), code: 200, check: metadataData("up")},
		endpointCase{name: "metadata/warnings", fault: warnWith("partial response"), path: "/api/v1/metadata", code: 200, check: warned("partial response")},
		endpointCase{name: "metadata/bad limit", path: urlOf("/api/v1/metadata", "limit", "ten"), code: 400, errType: errorBadData, check: checkAll(mentions(`"limit"`), noRead)},
		endpointCase{name: "metadata/bad limit_per_metric", path: urlOf("/api/v1/metadata", "limit_per_metric", "x"), code: 400, errType: errorBadData, check: checkAll(mentions(`"limit_per_metric"`), noRead)},
		endpointCase{name: "metadata/group down", fault: failWith(errGroupDown), path: "/api/v1/metadata", code: 503, errType: errorUnavailable},
		endpointCase{name: "metadata/garbled answer", fault: failWith(errGarbled), path: "/api/v1/metadata", code: 422, errType: errorExec},
		endpointCase{name: "metadata/post", method: http.MethodPost, path: "/api/v1/metadata", code: 405, errType: errorBadData},
		endpointCase{name: "metadata/tenant", setup: tenants, tenant: "team-b", path: "/api/v1/metadata", code: 200, check: readAs("team-b")},
	)

	// /api/v1/query_exemplars
	exemplarData := func(t *testing.T, b apiBody, _ *fakeReader) {
		var d []struct {
			SeriesLabels map[string]string `json:"seriesLabels"`
			Exemplars    []struct {
				Labels map[string]string `json:"labels"`
				Value  string            `json:"value"`
			} `json:"exemplars"`
		}
		decodeData(t, b, &d)
		if len(d) != 1 || d[0].SeriesLabels["__name__"] != "http_requests_total" || len(d[0].Exemplars) != 1 || d[0].Exemplars[0].Labels["trace_id"] != "abc" {
			t.Errorf("exemplars %s", b.Data)
		}
	}
	add(
		endpointCase{name: "query_exemplars", path: urlOf("/api/v1/query_exemplars", "query", "http_requests_total", "start", listFrom, "end", listTo), code: 200, check: exemplarData},
		endpointCase{name: "query_exemplars/post", method: http.MethodPost, path: "/api/v1/query_exemplars", form: formOf("query", `rate(http_requests_total{code="200"}[5m])`, "start", listFrom, "end", listTo), code: 200, check: exemplarData},
		endpointCase{name: "query_exemplars/bad promql", path: urlOf("/api/v1/query_exemplars", "query", "up{", "start", listFrom, "end", listTo), code: 400, errType: errorBadData},
		endpointCase{name: "query_exemplars/bad start", path: urlOf("/api/v1/query_exemplars", "query", "up", "start", "dawn"), code: 400, errType: errorBadData},
		endpointCase{name: "query_exemplars/group down", fault: failWith(errGroupDown), path: urlOf("/api/v1/query_exemplars", "query", "up", "start", listFrom, "end", listTo), code: 503, errType: errorUnavailable},
	)

	// /api/v1/rules
	rulesData := func(t *testing.T, b apiBody, _ *fakeReader) {
		var d struct {
			Groups []struct {
				Name  string           `json:"name"`
				Rules []map[string]any `json:"rules"`
			} `json:"groups"`
		}
		decodeData(t, b, &d)
		if len(d.Groups) != 1 || d.Groups[0].Name != "api" || len(d.Groups[0].Rules) != 1 || d.Groups[0].Rules[0]["type"] != "recording" {
			t.Errorf("rules %s", b.Data)
		}
	}
	add(
		endpointCase{name: "rules", path: "/api/v1/rules", code: 200, check: rulesData},
		endpointCase{name: "rules/filter", path: urlOf("/api/v1/rules", "type", "ALERT", "rule_name[]", "InstanceDown", "match[]", `{job="api"}`, "exclude_alerts", "true", "group_limit", "5", "group_next_token", "t"), code: 200,
			check: func(t *testing.T, b apiBody, f *fakeReader) {
				rulesData(t, b, f)
				flt := f.filter
				if flt == nil || flt.Type != "alert" || !slices.Equal(flt.RuleNames, []string{"InstanceDown"}) || len(flt.Match) != 1 || !flt.ExcludeAlerts || flt.GroupLimit != 5 || flt.NextToken != "t" {
					t.Errorf("filter passed on: %+v", flt)
				}
			}},
		endpointCase{name: "rules/warnings", fault: warnWith("partial response"), path: "/api/v1/rules", code: 200, check: warned("partial response")},
		endpointCase{name: "rules/bad type", path: urlOf("/api/v1/rules", "type", "both"), code: 400, errType: errorBadData, check: checkAll(mentions(`"type"`), noRead)},
		endpointCase{name: "rules/bad exclude_alerts", path: urlOf("/api/v1/rules", "exclude_alerts", "maybe"), code: 400, errType: errorBadData, check: noRead},
		endpointCase{name: "rules/bad group_limit", path: urlOf("/api/v1/rules", "group_limit", "0"), code: 400, errType: errorBadData, check: noRead},
		endpointCase{name: "rules/token without limit", path: urlOf("/api/v1/rules", "group_next_token", "t"), code: 400, errType: errorBadData, check: noRead},
		endpointCase{name: "rules/bad match", path: urlOf("/api/v1/rules", "match[]", "up{"), code: 400, errType: errorBadData, check: noRead},
		endpointCase{name: "rules/stale token", fault: failWith(errStaleToken), path: urlOf("/api/v1/rules", "group_limit", "1", "group_next_token", "t"), code: 400, errType: errorBadData, check: mentions("group_next_token")},
		endpointCase{name: "rules/group down", fault: failWith(errGroupDown), path: "/api/v1/rules", code: 503, errType: errorUnavailable},
		endpointCase{name: "rules/garbled answer", fault: failWith(errGarbled), path: "/api/v1/rules", code: 422, errType: errorExec},
		endpointCase{name: "rules/post", method: http.MethodPost, path: "/api/v1/rules", code: 405, errType: errorBadData},
		endpointCase{name: "rules/tenant", setup: tenants, tenant: "team-a", path: "/api/v1/rules", code: 200, check: readAs("team-a")},
	)

	// /api/v1/alerts
	add(
		endpointCase{name: "alerts", path: "/api/v1/alerts", code: 200, check: func(t *testing.T, b apiBody, _ *fakeReader) {
			var d struct {
				Alerts []struct {
					Labels map[string]string `json:"labels"`
					State  string            `json:"state"`
				} `json:"alerts"`
			}
			decodeData(t, b, &d)
			if len(d.Alerts) != 1 || d.Alerts[0].Labels["alertname"] != "InstanceDown" || d.Alerts[0].State != "firing" {
				t.Errorf("alerts %s", b.Data)
			}
		}},
		endpointCase{name: "alerts/warnings", fault: warnWith("partial response"), path: "/api/v1/alerts", code: 200, check: warned("partial response")},
		endpointCase{name: "alerts/group down", fault: failWith(errGroupDown), path: "/api/v1/alerts", code: 503, errType: errorUnavailable},
		endpointCase{name: "alerts/garbled answer", fault: failWith(errGarbled), path: "/api/v1/alerts", code: 422, errType: errorExec},
		endpointCase{name: "alerts/post", method: http.MethodPost, path: "/api/v1/alerts", code: 405, errType: errorBadData},
		endpointCase{name: "alerts/tenant missing", setup: tenants, path: "/api/v1/alerts", code: 401, errType: errorUnauthorized, check: noRead},
	)

	// /api/v1/status/buildinfo, /format_query, /parse_query
	add(
		endpointCase{name: "buildinfo", path: "/api/v1/status/buildinfo", code: 200, check: func(t *testing.T, b apiBody, _ *fakeReader) {
			var d struct{ Version, Revision, GoVersion string }
			decodeData(t, b, &d)
			if d.Version != PrometheusCompatVersion() || d.Revision != "test" || d.GoVersion == "" {
				t.Errorf("buildinfo %s", b.Data)
			}
		}},
		endpointCase{name: "buildinfo/post", method: http.MethodPost, path: "/api/v1/status/buildinfo", code: 405, errType: errorBadData},
		endpointCase{name: "buildinfo/tenant missing", setup: tenants, path: "/api/v1/status/buildinfo", code: 401, errType: errorUnauthorized},
		endpointCase{name: "format_query", path: urlOf("/api/v1/format_query", "query", "sum(up)by(job)"), code: 200, check: func(t *testing.T, b apiBody, _ *fakeReader) {
			var d string
			decodeData(t, b, &d)
			if d != "sum by (job) (up)" {
				t.Errorf("formatted %q", d)
			}
		}},
		endpointCase{name: "format_query/post", method: http.MethodPost, path: "/api/v1/format_query", form: formOf("query", "up{job='api'}"), code: 200, check: func(t *testing.T, b apiBody, _ *fakeReader) {
			var d string
			decodeData(t, b, &d)
			if d != `up{job="api"}` {
				t.Errorf("formatted %q", d)
			}
		}},
		endpointCase{name: "format_query/bad promql", path: urlOf("/api/v1/format_query", "query", "sum("), code: 400, errType: errorBadData},
		endpointCase{name: "parse_query", method: http.MethodPost, path: "/api/v1/parse_query", form: formOf("query", "sum(up)"), code: 200, check: func(t *testing.T, b apiBody, _ *fakeReader) {
			var d map[string]any
			decodeData(t, b, &d)
			if d["type"] != "aggregation" || d["op"] != "sum" {
				t.Errorf("parsed %s", b.Data)
			}
		}},
		endpointCase{name: "parse_query/get", path: urlOf("/api/v1/parse_query", "query", "up"), code: 200, check: func(t *testing.T, b apiBody, _ *fakeReader) {
			var d map[string]any
			decodeData(t, b, &d)
			if d["type"] != "vectorSelector" || d["name"] != "up" {
				t.Errorf("parsed %s", b.Data)
			}
		}},
		endpointCase{name: "parse_query/bad promql", path: urlOf("/api/v1/parse_query", "query", "up{"), code: 400, errType: errorBadData},
	)

	// /api/v1/status/tenant
	tenantStatusData := func(tenancy bool, ns string, admin bool) func(*testing.T, apiBody, *fakeReader) {
		return func(t *testing.T, b apiBody, _ *fakeReader) {
			var d TenantStatus
			decodeData(t, b, &d)
			if d.Tenancy != tenancy || d.Namespace != ns || d.Admin != admin || !slices.Contains(d.MetricNames, "up") {
				t.Errorf("tenant status %s", b.Data)
			}
			if ns != "" && !admin && (len(d.Rules) == 0 || len(d.Objects) != 1) {
				t.Errorf("tenant status %s names no rule or object of %s", b.Data, ns)
			}
		}
	}
	add(
		endpointCase{name: "status/tenant", path: urlOf("/api/v1/status/tenant", "start", listFrom, "end", listTo), code: 200, check: tenantStatusData(false, "", true)},
		endpointCase{name: "status/tenant/team", setup: tenants, tenant: "team-a", path: urlOf("/api/v1/status/tenant", "start", listFrom, "end", listTo), code: 200, check: checkAll(tenantStatusData(true, "team-a", false), readAs("team-a"))},
		endpointCase{name: "status/tenant/group down", fault: failWith(errGroupDown), path: urlOf("/api/v1/status/tenant", "start", listFrom, "end", listTo), code: 503, errType: errorUnavailable},
		endpointCase{name: "status/tenant/post", method: http.MethodPost, path: "/api/v1/status/tenant", code: 405, errType: errorBadData},
	)

	// Routes the server does not have.
	add(
		endpointCase{name: "not found", path: "/api/v1/nothing", code: 404, errType: errorNotFound},
		endpointCase{name: "targets not routed", path: "/api/v1/targets", code: 404, errType: errorNotFound},
		endpointCase{name: "method not allowed", method: http.MethodDelete, path: urlOf("/api/v1/query", "query", "up"), code: 405, errType: errorBadData, check: noRead},
		endpointCase{name: "method not allowed/series", method: http.MethodPut, path: urlOf("/api/v1/series", "match[]", "up"), code: 405, errType: errorBadData, check: noRead},
		endpointCase{name: "method not allowed/exemplars", method: http.MethodPatch, path: urlOf("/api/v1/query_exemplars", "query", "up"), code: 405, errType: errorBadData, check: noRead},
		endpointCase{name: "admin not routed", method: http.MethodPost, path: "/api/v1/admin/tsdb/delete_series", code: 404, errType: errorNotFound},
	)

	// Management: probes, metrics, /debug and profiles.
	add(
		endpointCase{name: "health", path: "/health", code: 200, raw: func(t *testing.T, rec *httptest.ResponseRecorder) {
			var d map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil || d["status"] != "ok" || d["groups"] != 1.0 || d["healthy_replicas"] != 1.0 {
				t.Errorf("health %s (%v)", rec.Body, err)
			}
		}},
		endpointCase{name: "health/tenancy without credentials", setup: tenants, path: "/health", code: 200, raw: rawHas("application/json", `"status":"ok"`)},
		endpointCase{name: "ready", path: "/ready", code: 200, raw: rawHas("application/json", `"status":"ready"`)},
		endpointCase{name: "ready/discovery not synced", setup: serverSetup{unsynced: true}, path: "/ready", code: 503, raw: rawHas("application/json", `"not ready"`, "backend discovery has not synced yet")},
		endpointCase{name: "metrics", path: "/metrics", code: 200, raw: rawHas("text/plain", "prometheus_proxy_groups_discovered 1", "prometheus_proxy_group_healthy_replicas{group=\"eu\"} 1")},
		endpointCase{name: "metrics/tenant", setup: tenants, tenant: "team-a", path: "/metrics", code: 403, errType: errorForbidden},
		endpointCase{name: "metrics/admin", setup: tenants, tenant: "monitoring", path: "/metrics", code: 200, raw: rawHas("text/plain", "prometheus_proxy_tenants_active")},
		endpointCase{name: "debug", path: "/debug", code: 200, raw: rawHas("application/json", "/debug/targets", "/debug/tenants")},
		endpointCase{name: "debug/html", path: "/debug", header: htmlAccept, code: 200, raw: rawHas("text/html", "/debug/targets")},
		endpointCase{name: "debug/tenant missing", setup: tenants, path: "/debug", code: 401, errType: errorUnauthorized},
		endpointCase{name: "debug/tenant", setup: tenants, tenant: "team-a", path: "/debug", code: 403, errType: errorForbidden, check: mentions("admin")},
		endpointCase{name: "debug/targets", path: "/debug/targets", code: 200, raw: func(t *testing.T, rec *httptest.ResponseRecorder) {
			var d []struct {
				Group    string
				Replicas []struct{ URL string }
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil || len(d) != 1 || d[0].Group != "eu" || len(d[0].Replicas) != 1 {
				t.Fatalf("targets %s (%v)", rec.Body, err)
			}
			if u := d[0].Replicas[0].URL; strings.Contains(u, "s3cret") || !strings.Contains(u, "10.0.0.1:9090") {
				t.Errorf("replica URL %q, want it with its password redacted", u)
			}
		}},
		endpointCase{name: "debug/targets/html", path: "/debug/targets", header: htmlAccept, code: 200, raw: func(t *testing.T, rec *httptest.ResponseRecorder) {
			rawHas("text/html", "eu", "10.0.0.1:9090")(t, rec)
			if strings.Contains(rec.Body.String(), "s3cret") {
				t.Error("page shows a replica's password")
			}
		}},
		endpointCase{name: "debug/targets/admin", setup: tenants, tenant: "monitoring", path: "/debug/targets", code: 200, raw: rawHas("application/json", `"group":"eu"`)},
		endpointCase{name: "debug/targets/tenant", setup: tenants, tenant: "team-b", path: "/debug/targets", code: 403, errType: errorForbidden},
		endpointCase{name: "debug/tenants/no tenancy", path: "/debug/tenants", code: 200, raw: rawHas("application/json", "disabled", `"limits"`)},
		endpointCase{name: "debug/tenants", setup: tenants, tenant: "monitoring", path: "/debug/tenants", code: 200, raw: rawHas("application/json", "team-a", "memory_usage_bytes", `"limits"`)},
		endpointCase{name: "debug/tenants/html", setup: tenants, tenant: "monitoring", path: "/debug/tenants", header: htmlAccept, code: 200, raw: rawHas("text/html", "team-a")},
		endpointCase{name: "debug/tenants/tenant", setup: tenants, tenant: "team-a", path: "/debug/tenants", code: 403, errType: errorForbidden},
		endpointCase{name: "pprof", path: "/debug/pprof/", code: 200, raw: rawHas("text/html", "goroutine")},
		endpointCase{name: "pprof/cmdline", path: "/debug/pprof/cmdline", code: 200, raw: rawHas("text/plain")},
		endpointCase{name: "pprof/goroutine", path: "/debug/pprof/goroutine?debug=1", code: 200, raw: rawHas("text/plain", "goroutine profile")},
		endpointCase{name: "pprof/profile", path: "/debug/pprof/profile?seconds=1", code: 200, raw: rawHas("application/octet-stream")},
		endpointCase{name: "pprof/trace", path: "/debug/pprof/trace?seconds=0.01", code: 200, raw: rawHas("application/octet-stream")},
		endpointCase{name: "pprof/symbol", path: "/debug/pprof/symbol", code: 200, raw: rawHas("text/plain", "num_symbols")},
		endpointCase{name: "pprof/symbol/post", method: http.MethodPost, path: "/debug/pprof/symbol", code: 200, raw: rawHas("text/plain", "num_symbols")},
		endpointCase{name: "pprof/tenant", setup: tenants, tenant: "team-a", path: "/debug/pprof/heap", code: 403, errType: errorForbidden},
	)

	// With a management listener, probes and metrics answer there without
	// credentials; the main port keeps them for admins.
	withMgmt := serverSetup{tenancy: true, management: true}
	add(
		endpointCase{name: "management/health", setup: withMgmt, mgmt: true, path: "/health", code: 200, raw: rawHas("application/json", `"status":"ok"`)},
		endpointCase{name: "management/ready", setup: withMgmt, mgmt: true, path: "/ready", code: 200, raw: rawHas("application/json", `"status":"ready"`)},
		endpointCase{name: "management/ready not synced", setup: serverSetup{management: true, unsynced: true}, mgmt: true, path: "/ready", code: 503, raw: rawHas("application/json", "backend discovery has not synced yet")},
		endpointCase{name: "management/metrics", setup: withMgmt, mgmt: true, path: "/metrics", code: 200, raw: rawHas("text/plain", "prometheus_proxy_groups_discovered 1")},
		endpointCase{name: "management/pprof", setup: withMgmt, mgmt: true, path: "/debug/pprof/", code: 200, raw: rawHas("text/html", "goroutine")},
		endpointCase{name: "management/pprof/cmdline", setup: withMgmt, mgmt: true, path: "/debug/pprof/cmdline", code: 200, raw: rawHas("text/plain")},
		endpointCase{name: "management/pprof/profile", setup: withMgmt, mgmt: true, path: "/debug/pprof/profile?seconds=1", code: 200, raw: rawHas("application/octet-stream")},
		endpointCase{name: "management/pprof/trace", setup: withMgmt, mgmt: true, path: "/debug/pprof/trace?seconds=0.01", code: 200, raw: rawHas("application/octet-stream")},
		endpointCase{name: "management/pprof/symbol", setup: withMgmt, mgmt: true, path: "/debug/pprof/symbol", code: 200, raw: rawHas("text/plain", "num_symbols")},
		endpointCase{name: "management/pprof/symbol/post", setup: withMgmt, mgmt: true, method: http.MethodPost, path: "/debug/pprof/symbol", code: 200, raw: rawHas("text/plain", "num_symbols")},
		endpointCase{name: "management/no tenant data", setup: withMgmt, mgmt: true, path: "/debug/targets", code: 404, errType: errorNotFound},
		endpointCase{name: "management/no api", setup: withMgmt, mgmt: true, path: urlOf("/api/v1/query", "query", "up"), code: 404, errType: errorNotFound, check: noRead},
		endpointCase{name: "management/main health needs credentials", setup: withMgmt, path: "/health", code: 401, errType: errorUnauthorized},
		endpointCase{name: "management/main ready is admin-only", setup: withMgmt, tenant: "team-a", path: "/ready", code: 403, errType: errorForbidden},
		endpointCase{name: "management/main health for admins", setup: withMgmt, tenant: "monitoring", path: "/health", code: 200, raw: rawHas("application/json", `"status":"ok"`)},
		endpointCase{name: "management/main ready for admins", setup: withMgmt, tenant: "monitoring", path: "/ready", code: 200, raw: rawHas("application/json", `"status":"ready"`)},
	)

	// The page at / and its files.
	add(
		endpointCase{name: "page", path: "/", code: 200, raw: func(t *testing.T, rec *httptest.ResponseRecorder) {
			rawHas("text/html", "<html")(t, rec)
			if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
				t.Errorf("Content-Security-Policy %q", csp)
			}
		}},
		endpointCase{name: "page/script", path: "/ui/app.js", code: 200, raw: rawHas("text/javascript", "/api/v1/status/tenant")},
		endpointCase{name: "page/style", path: "/ui/style.css", code: 200, raw: rawHas("text/css")},
		endpointCase{name: "page/missing file", path: "/ui/nothing.js", code: 404, raw: rawHas("text/plain")},
	)
	return cases
}
