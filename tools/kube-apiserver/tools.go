//go:build tools

// Package tools pins kube-apiserver and kubectl so "go build" in this
// module resolves them at the same Kubernetes version.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
