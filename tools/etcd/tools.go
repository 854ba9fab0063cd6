//go:build tools

// Package tools pins the etcd server so "go build" in this module resolves it.
package tools

import _ "go.etcd.io/etcd/server/v3"
