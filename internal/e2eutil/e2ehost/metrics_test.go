package e2ehost

import (
	"strings"
	"testing"
)

func TestSumMetric(t *testing.T) {
	text := `# HELP prometheus_http_requests_total x
prometheus_http_requests_total{code="200",handler="/api/v1/read"} 3
prometheus_http_requests_total{code="400",handler="/api/v1/read"} 1 1700000000000
prometheus_http_requests_total{code="200",handler="/api/v1/read_all"} 50
prometheus_http_requests_total{code="200",handler="/metrics"} 7
prometheus_http_requests_total_other{handler="/api/v1/read"} 100
prometheus_proxy_backend_requests_total 2.5
`
	for _, c := range []struct {
		name      string
		fragments []string
		want      float64
	}{
		{"prometheus_http_requests_total", []string{`handler="/api/v1/read"`}, 4},
		{"prometheus_http_requests_total", []string{`code="200"`, `handler="`}, 60},
		{"prometheus_http_requests_total", nil, 61},
		{"prometheus_proxy_backend_requests_total", nil, 2.5},
		{"absent_total", nil, 0},
	} {
		got, err := SumMetric(strings.NewReader(text), c.name, c.fragments...)
		if err != nil || got != c.want {
			t.Errorf("SumMetric(%s, %q) = %v, %v; want %v", c.name, c.fragments, got, err, c.want)
		}
	}
	if _, err := SumMetric(strings.NewReader("up{job=\"x\"} notanumber\n"), "up"); err == nil {
		t.Error("a value that is no number passed")
	}
}
