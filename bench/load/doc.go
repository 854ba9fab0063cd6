// Package load drives the proxy binary with concurrent clients over loopback,
// against groups of real Prometheus replicas one of which dies half way, and
// reports failed answers, throughput, latency and the proxy's memory.
//
//	go test ./bench/load -run TestLoad -v                       # short run
//	LOAD_CLIENTS=32 LOAD_DURATION=5m go test ./bench/load -run TestLoad -v -timeout 30m
package load
