package e2eutil

import (
	"io"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil/e2ehost"
)

// SumMetric adds up the samples of metric name in a Prometheus text
// exposition whose label text contains every fragment (a trailing-open
// fragment like `result="` matches any value of that label).
func SumMetric(exposition io.Reader, name string, fragments ...string) (float64, error) {
	return e2ehost.SumMetric(exposition, name, fragments...)
}
