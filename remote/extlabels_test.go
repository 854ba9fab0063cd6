package remote

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

// TestExternalLabels reads global.external_labels from both Prometheus
// versions of real fleets, and fails (the caller then takes none) on a
// backend without the config API.
func TestExternalLabels(t *testing.T) {
	want := map[string]string{"cluster": "eu-1", "prometheus": "monitoring/k8s", "prometheus_replica": "prometheus-k8s-0"}
	for _, kind := range []e2eutil.Kind{e2eutil.V3, e2eutil.V2} {
		t.Run(kind.String(), func(t *testing.T) {
			p := e2eutil.StartPrometheus(t, kind, nil, e2eutil.WithExternalLabels(want))
			c, err := New(p.URL, DefaultConfig())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			got, err := c.ExternalLabels(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if !labels.Equal(got, labels.FromMap(want)) {
				t.Errorf("external labels %s, want %v", got, want)
			}
			plain := e2eutil.StartPrometheus(t, kind, nil)
			c2, _ := New(plain.URL, DefaultConfig())
			defer c2.Close()
			if got, err := c2.ExternalLabels(context.Background()); err != nil || !got.IsEmpty() {
				t.Errorf("a server without external labels: %s, %v", got, err)
			}
		})
	}
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	c, _ := New(srv.URL, DefaultConfig())
	defer c.Close()
	if _, err := c.ExternalLabels(context.Background()); err == nil {
		t.Error("a backend without /api/v1/status/config did not fail")
	}
}
