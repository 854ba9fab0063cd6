//go:build tools

// Package tools pins the Prometheus 3.5 LTS server so "go build" in this
// module resolves it.
package tools

import _ "github.com/prometheus/prometheus/cmd/prometheus"
