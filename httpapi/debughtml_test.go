package httpapi

import (
	"bytes"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

func TestWantsHTML(t *testing.T) {
	for accept, want := range map[string]bool{
		"":                 false,
		"*/*":              false,
		"application/json": false,
		"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8": true,
		"application/json, text/html":                                     false,
		"text/html":                                                       true,
	} {
		r := httptest.NewRequest("GET", "/debug/targets", nil)
		r.Header.Set("Accept", accept)
		if got := wantsHTML(r); got != want {
			t.Errorf("Accept %q: html=%v, want %v", accept, got, want)
		}
	}
}

const evil = `<script>alert("x")</script>`

func TestDebugPagesEscape(t *testing.T) {
	var buf bytes.Buffer
	targets := []discovery.GroupStatus{
		{Group: "cluster-a", Source: "static", Labels: map[string]string{"cluster": evil}, Replicas: []discovery.ReplicaStatus{
			{URL: "http://a:9090", Healthy: true, LastCheck: time.Now(), Latency: 3 * time.Millisecond},
			{URL: "http://b:9090", LastError: evil},
		}},
		{Group: "empty", Source: "static"},
	}
	if err := targetsPage.Execute(&buf, targets); err != nil {
		t.Fatal(err)
	}
	checkPage(t, buf.String(), "cluster-a", "http://b:9090", "unhealthy", "no replicas", "cluster=&lt;script&gt;")

	buf.Reset()
	view := tenancy.DebugView{
		Generation: 3, NamespaceLabel: "namespace", AdminNamespaces: []string{"monitoring"},
		Namespaces: map[string]tenancy.NamespaceView{
			"team-a": {Fingerprint: "abc", Rules: []string{`{__name__="up", namespace="team-a"}`}, Objects: []tenancy.ObjectView{
				{Source: "files", Name: "team-a/http", Spec: tenancy.MetricAccessSpec{Source: "team-a", Metrics: []string{"up", evil}},
					Rules: []string{`{__name__="up", namespace="team-a"}`}, Problems: []tenancy.Problem{{Object: "team-a/http", Entry: evil, Reason: "bad selector"}}},
			}},
		},
		SourceProblems: map[string][]tenancy.Problem{"files": {{Object: "/etc/x.yaml", Reason: evil}}},
	}
	if err := tenantsPage.Execute(&buf, tenantsPageData(view)); err != nil {
		t.Fatal(err)
	}
	checkPage(t, buf.String(), "team-a/http", "bad selector", "monitoring", "/etc/x.yaml", "namespace=&#34;team-a&#34;")

	buf.Reset()
	if err := tenantsPage.Execute(&buf, tenantsPageData(map[string]any{"tenancy": evil})); err != nil {
		t.Fatal(err)
	}
	checkPage(t, buf.String(), "tenancy")
}

func checkPage(t *testing.T, page string, want ...string) {
	t.Helper()
	if strings.Contains(page, "<script>") {
		t.Errorf("page holds unescaped markup:\n%s", page)
	}
	for _, w := range want {
		if !strings.Contains(page, w) {
			t.Errorf("page lacks %q:\n%s", w, page)
		}
	}
}
