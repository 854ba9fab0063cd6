//go:build tools

// Package tools pins helm's command so "go build" in this module resolves it.
package tools

import _ "helm.sh/helm/v4/cmd/helm"
