package httpapi

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/admission"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/authn"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/engine"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/remote"
)

// A query whose matchers contradict every group's labels asks no backend:
// the answer is an empty success that says so in its warnings, and the
// request log names each group with the reason it was skipped.
func TestEveryGroupSkipped(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	dcfg := discovery.DefaultConfig()
	dcfg.Static = []discovery.StaticGroup{
		// Nothing listens there: a call would fail the query, not skip it.
		{Name: "eu", URLs: []string{"http://127.0.0.1:1"}, Labels: map[string]string{"cluster": "eu"}},
		{Name: "us", URLs: []string{"http://127.0.0.1:1"}, Labels: map[string]string{"cluster": "us"}},
	}
	if err := dcfg.Validate(); err != nil {
		t.Fatal(err)
	}
	backends, err := discovery.NewManager(dcfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	fanout, err := engine.NewFanout(backends, engine.FanoutOptions{Remote: remote.DefaultConfig(), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	ecfg := engine.DefaultConfig()
	srv, err := New(Options{
		Proxy: DefaultProxyConfig(), Server: DefaultServerConfig(), Engine: ecfg,
		Limits: admission.DefaultConfig(), MaxNamespaces: authn.DefaultConfig().MaxNamespaces,
		QueryEngine: engine.NewPromQL(ecfg, reg, logger),
		Fanout:      fanout, Backends: backends, Registry: reg, Logger: logger,
	})
	if err != nil {
		t.Fatal(err)
	}

	for _, path := range []string{
		"/api/v1/query?" + url.Values{"query": {`up{cluster="asia"}`}, "time": {"1700000000"}}.Encode(),
		"/api/v1/series?" + url.Values{"match[]": {`up{cluster="asia"}`}}.Encode(),
		"/api/v1/labels?" + url.Values{"match[]": {`up{cluster="asia"}`}}.Encode(),
	} {
		logs.Reset()
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		var body struct {
			Status   string   `json:"status"`
			Warnings []string `json:"warnings"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != http.StatusOK || body.Status != "success" {
			t.Fatalf("%s: %d %s (%v)", path, rec.Code, rec.Body, err)
		}
		if !slices.ContainsFunc(body.Warnings, func(w string) bool {
			return strings.Contains(w, "every backend group was skipped") && strings.Contains(w, "eu (group_labels)") && strings.Contains(w, "us (group_labels)")
		}) {
			t.Errorf("%s: warnings %q name no skipped group", path, body.Warnings)
		}

		var line struct {
			Msg    string     `json:"msg"`
			Target []string   `json:"target"`
			Groups []groupLog `json:"groups"`
		}
		for l := range strings.Lines(logs.String()) {
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatalf("log line %q: %v", l, err)
			}
			if line.Msg == "request" {
				break
			}
		}
		if line.Msg != "request" {
			t.Fatalf("%s: no request log line in %s", path, logs.String())
		}
		if len(line.Target) != 0 || len(line.Groups) != 2 {
			t.Fatalf("%s: log line targets %q, groups %+v; want no target and both groups", path, line.Target, line.Groups)
		}
		for i, name := range []string{"eu", "us"} {
			g := line.Groups[i]
			if g.Name != name || g.Called || len(g.Skipped) != 1 || !strings.HasPrefix(g.Skipped[0], string(engine.SkipGroupLabels)+": ") {
				t.Errorf("%s: group %d logged as %+v; want %s skipped for its labels", path, i, g, name)
			}
		}
	}
}
