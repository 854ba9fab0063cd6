//go:build tools

// Package tools pins golangci-lint so "go build" in this module resolves it
// at one version, outside the proxy's go.mod.
package tools

import (
	_ "github.com/golangci/golangci-lint/v2/cmd/golangci-lint"
)
