# prometheus-multi-tenant-proxy
#
#   make demo   real Prometheus backends with generated data, the proxy in front, curl lines
#   make test   installs/builds what the tests need (cached under .cache/), then runs them

SHELL := /usr/bin/env bash
GO ?= go
BINARY := prometheus-multi-tenant-proxy
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
PROM_VERSION := $(shell $(GO) list -m -f '{{.Version}}' github.com/prometheus/prometheus 2>/dev/null)
PROM_RELEASE := $(shell echo $(PROM_VERSION) | awk -F. '{m=$$2+0; printf "%d.%d.%s", int(m/100), m%100, $$3}')
PROM_DIR := .cache/prometheus-$(PROM_VERSION)
PROMETHEUS := $(PROM_DIR)/prometheus
PROMTOOL := $(PROM_DIR)/promtool
# Three packages at a time on two cores: the end-to-end packages spend much
# of their time waiting (rule evaluations, scrapes, timeouts), so a third
# keeps the cores busy; measured, the packages took 335 s against 374 s
# at -p 2.
TEST_P ?= 3
TEST_TIMEOUT ?= 40m
# A count, not a duration: with -fuzztime 20s Go's fuzzing coordinator can
# fail the run with a bare "context deadline exceeded" (no input written)
# when the deadline falls while a worker is minimizing; a count has no
# deadline to race. 100000 inputs take 10-20 s here.
FUZZ_TIME ?= 100000x
# Go's fuzzer minimizes every input that adds coverage for up to 60 s by
# default, during which the run counts no inputs: 25-32 s a run instead
# of 17. A bound of 1000 calls did not bound it: one 8 kB input was still
# being minimized after 3 minutes, the count stuck below FUZZ_TIME. 0s
# turns minimization off (both limits zero); a crasher is written out whole.
FUZZ_MINIMIZE ?= 0s

.PHONY: all build pgo test test-race test-tools fuzz fuzz-pushdown dev-setup demo lint deps tools k8s-tools helm-tool k8s-deploy docker-build clean dev-run dev-test-request ci bench bench-quick bench-readme

all: build

build: bin/$(BINARY)

bin/$(BINARY): $(shell find . -name '*.go' -not -path './.cache/*' -not -name '*_test.go') go.mod go.sum
	$(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $@ ./cmd/proxy

# Debian packages the tests run for real: Prometheus 2.42 (a second backend
# version), redis-server with redis-cli (Redis Cluster and Sentinel tests)
# and chromium (the page's headless browser test). Installed only when
# missing, without starting their services: tests start their own servers,
# and nothing here stops a process it did not start.
deps:
	@missing=""; \
	command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v redis-cli >/dev/null || missing="$$missing redis-tools"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages:$$missing (apt-get install -y$$missing)"; exit 1; fi; \
	  echo "installing:$$missing"; \
	  ./scripts/apt-install-no-start.sh $$missing; \
	fi
	$(GO) mod download

# Prometheus and promtool built from the proxy's own module graph (the very
# PromQL engine and dependency versions the proxy links, so the reference
# answers as the proxy's engine does, and the test build reuses what this
# build compiled), and the Prometheus LTS server (3.5) the push-down
# compatibility tests run, built from tools/prometheus-lts (a module of its
# own) into .cache/prometheus-<its module version>/. Both without the
# service-discovery plugins (AWS, Azure, GCE, Kubernetes, ...): the tests'
# backends scrape nothing, and those SDKs were half of what a fresh machine
# compiled. The build's module file is a copy of go.mod, so go.mod and
# go.sum stay what the proxy needs.
PROM_LTS_VERSION := $(shell sed -n 's/^require github.com\/prometheus\/prometheus \(v[0-9.]*\)$$/\1/p' tools/prometheus-lts/go.mod)
PROM_LTS_RELEASE := $(shell echo $(PROM_LTS_VERSION) | awk -F. '{m=$$2+0; printf "%d.%d.%s", int(m/100), m%100, $$3}')
PROM_LTS_DIR := .cache/prometheus-$(PROM_LTS_VERSION)
PROMETHEUS_LTS := $(PROM_LTS_DIR)/prometheus

tools: $(PROMETHEUS) $(PROMTOOL) $(PROMETHEUS_LTS)

$(PROMETHEUS) $(PROMTOOL) &:
	@mkdir -p $(PROM_DIR)
	cp go.mod $(PROM_DIR)/build.mod && cp go.sum $(PROM_DIR)/build.sum
	$(GO) build -mod=mod -modfile=$(PROM_DIR)/build.mod -tags remove_all_sd \
	  -ldflags "-X github.com/prometheus/common/version.Version=$(PROM_RELEASE) -X github.com/prometheus/common/version.Revision=$(PROM_VERSION)" \
	  -o $(PROM_DIR)/ github.com/prometheus/prometheus/cmd/prometheus github.com/prometheus/prometheus/cmd/promtool
	rm -f $(PROM_DIR)/build.mod $(PROM_DIR)/build.sum

$(PROMETHEUS_LTS):
	@if [ -z "$(PROM_LTS_VERSION)" ]; then echo 'tools/prometheus-lts/go.mod: no "require github.com/prometheus/prometheus vX.Y.Z" line' >&2; exit 1; fi
	GO=$(GO) ./tools/prometheus-lts/build.sh $(abspath $(PROMETHEUS_LTS)) $(PROM_LTS_RELEASE) $(PROM_LTS_VERSION)

# bench/load measures one tenant's latency against its own idle baseline
# (fair scheduling), so it runs after the other packages, alone on the machine.
LOAD_PKG := ./bench/load
# make test runs the fairness measurements at half their length with team-b
# sending twice as often (as many requests behind each percentile; shorter
# still, the FIFO control's queue has no time to build and its slowdown
# nears what the fair scheduler's 8-fold margin allows) and the soak for
# 20 s, the hostile mix at half length with the dashboards loaded twice as
# often, the load with its replica killed for 8 s (halfway, as at 15 s);
# run the package alone for the lengths docs/limits.md reports.
LOAD_TEST_ENV ?= FAIR_DURATION=15s FAIR_IDLE=10s FAIR_INTERVAL=100ms SOAK_DURATION=20s HOSTILE_DURATION=10s HOSTILE_INTERVAL=100ms LOAD_DURATION=8s
test: deps
	$(MAKE) --no-print-directory -j2 --output-sync=target tools-shared tools-own-lint
	$(GO) test -p $(TEST_P) -timeout $(TEST_TIMEOUT) -count=1 $$($(GO) list ./... | grep -v '/bench/load$$')
	$(LOAD_TEST_ENV) $(GO) test -p 1 -timeout $(TEST_TIMEOUT) -count=1 $(LOAD_PKG)
	$(MAKE) fuzz

# The tools the tests run, in two chains side by side. Prometheus 3.16,
# kube-apiserver/kubectl/etcd and helm share most of their packages with
# each other and with the test build (client-go, grpc, OpenTelemetry, x/net:
# tools/*/go.mod require the proxy's versions, checked by e2ehost's
# TestToolModulesShareDependencyVersions, and every one of them is built
# with the tests' flags, no -trimpath), so they build one after the other
# and each finds the packages before it in the build cache; two builds
# compiling the same package at once would both compile it. The Prometheus
# LTS server and golangci-lint share little, and build beside that chain,
# keeping both cores busy through downloads and single-threaded links.
test-tools: deps
	$(MAKE) --no-print-directory -j2 --output-sync=target tools-shared tools-own

.PHONY: tools-shared tools-own test-tools
tools-shared:
	$(MAKE) --no-print-directory $(PROMETHEUS) $(PROMTOOL)
	$(MAKE) --no-print-directory k8s-tools
	$(MAKE) --no-print-directory helm-tool

tools-own:
	$(MAKE) --no-print-directory $(PROMETHEUS_LTS) $(GOLANGCI_LINT)

# make test's second chain: after its own tools, the lint and the fuzzer's
# instrumented build run beside kube-apiserver's build instead of after
# it. The lint compiles the proxy's dependencies, which Prometheus 3.16
# (first in the other chain, done before these tools on two cores) has
# put in the build cache.
.PHONY: tools-own-lint fuzz-build
tools-own-lint: tools-own
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory fuzz-build

# The fuzzer's binary (every package instrumented for coverage), compiled
# ahead of `make fuzz`.
fuzz-build:
	$(GO) test -c -fuzz '^FuzzCompile$$' -o /dev/null ./tenancy/fuzz/

# kube-apiserver, kubectl and etcd for the Kubernetes integration tests
# (kubectl applies deploy/kubernetes with -k), built once
# from tools/ (modules of their own, outside the proxy's go.mod) into
# .cache/kube-<version>/, the folder the tests (and KUBEBUILDER_ASSETS) use.
KUBE_VERSION := $(shell sed -n 's/^require k8s.io\/kubernetes \(v[0-9.]*\)$$/\1/p' tools/kube-apiserver/go.mod)
KUBE_DIR := .cache/kube-$(KUBE_VERSION)

k8s-tools: $(KUBE_DIR)/kube-apiserver $(KUBE_DIR)/kubectl $(KUBE_DIR)/etcd

$(KUBE_DIR)/kube-apiserver $(KUBE_DIR)/kubectl $(KUBE_DIR)/etcd &:
	GO=$(GO) ./tools/build.sh $(abspath $(KUBE_DIR))

# helm for the chart tests in e2e/ (lint, template), built once from
# tools/helm (a module of its own, outside the proxy's go.mod) into
# .cache/helm-<version>/helm; without -trimpath, like the test build, so
# the packages it shares with kube-apiserver and the tests compile once.
HELM_VERSION := $(shell sed -n 's/^require helm.sh\/helm\/v4 \(v[0-9.]*\)$$/\1/p' tools/helm/go.mod)
HELM := .cache/helm-$(HELM_VERSION)/helm

helm-tool: $(HELM)

$(HELM):
	@if [ -z "$(HELM_VERSION)" ]; then echo 'tools/helm/go.mod: no "require helm.sh/helm/v4 vX.Y.Z" line' >&2; exit 1; fi
	@mkdir -p $(dir $(HELM))
	cd tools/helm && $(GO) build -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$(HELM_VERSION) -X helm.sh/helm/v4/internal/version.metadata= -X helm.sh/helm/v4/internal/version.gitTreeState=clean" \
	  -o $(abspath $(HELM)).tmp helm.sh/helm/v4/cmd/helm
	mv $(HELM).tmp $(HELM)

# Everything the tests and the demo need, installed or built once.
dev-setup: deps tools k8s-tools helm-tool

# Installs the CRD, RBAC and the proxy into the current kubectl context.
k8s-deploy:
	kubectl apply --server-side -k deploy/kubernetes

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzCompile$$' -fuzztime $(FUZZ_TIME) -fuzzminimizetime $(FUZZ_MINIMIZE) ./tenancy/fuzz/

# The push-down fuzzer at length: random PromQL (promqlsmith) under tenant
# policies, push-down exact and re-associated against one evaluation over
# the union. `make test` runs it for about a minute (TestPushDownFuzz in
# ./engine); this runs PUSHDOWN_FUZZ_QUERIES queries from PUSHDOWN_FUZZ_SEED.
PUSHDOWN_FUZZ_QUERIES ?= 12000
PUSHDOWN_FUZZ_SEED ?= 7
fuzz-pushdown:
	PUSHDOWN_FUZZ_QUERIES=$(PUSHDOWN_FUZZ_QUERIES) PUSHDOWN_FUZZ_SEED=$(PUSHDOWN_FUZZ_SEED) PUSHDOWN_FUZZ_DURATION=0 \
	  $(GO) test -count=1 -p 1 -timeout 0 -run '^TestPushDownFuzz$$' -v ./engine/

# The packages whose own goroutines meet (the fan-out's reads, the
# scheduler, the caches), under the race detector; -short runs the push-down
# fuzzer for 10 s. Not part of make test: a race build of the Prometheus
# module and these tests take about six minutes here.
RACE_PKGS ?= ./admission ./authn ./cache ./discovery ./engine ./httpapi ./plan ./remote ./tenancy
test-race: deps tools
	$(GO) test -race -short -count=1 -p 2 -timeout $(TEST_TIMEOUT) $(RACE_PKGS)

# golangci-lint, built once from tools/golangci-lint (a module of its own,
# outside the proxy's go.mod) into .cache/golangci-lint-<version>/; the
# linters it runs and why are in .golangci.yml.
GOLANGCI_VERSION := $(shell sed -n 's/^require github.com\/golangci\/golangci-lint\/v2 \(v[0-9.]*\)$$/\1/p' tools/golangci-lint/go.mod)
GOLANGCI_LINT := .cache/golangci-lint-$(GOLANGCI_VERSION)/golangci-lint

$(GOLANGCI_LINT):
	@if [ -z "$(GOLANGCI_VERSION)" ]; then echo 'tools/golangci-lint/go.mod: no "require github.com/golangci/golangci-lint/v2 vX.Y.Z" line' >&2; exit 1; fi
	@mkdir -p $(dir $(GOLANGCI_LINT))
	cd tools/golangci-lint && $(GO) build -trimpath -ldflags "-s -w -X main.version=$(patsubst v%,%,$(GOLANGCI_VERSION))" \
	  -o $(abspath $(GOLANGCI_LINT)).tmp github.com/golangci/golangci-lint/v2/cmd/golangci-lint
	mv $(GOLANGCI_LINT).tmp $(GOLANGCI_LINT)

lint: $(GOLANGCI_LINT)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GOLANGCI_LINT) run ./...

demo: build tools deps
	./scripts/demo.sh

dev-run: build
	./bin/$(BINARY) --config=examples/config.yaml --listen-address=127.0.0.1:8080 --log-level=debug

dev-test-request:
	curl -s -H 'X-Tenant-Namespace: team-a' 'http://127.0.0.1:8080/api/v1/query?query=up' ; echo

ci: test

# Benchmark against real Prometheus servers with generated data (~12 min; the
# dataset is cached in .cache/bench/). Writes bench/results/latest.{md,json,svg}
# and the numbers of docs/benchmark.md.
bench: tools
	$(GO) run ./bench --readme $(BENCH_FLAGS)

# docs/benchmark.md's numbers (and latest.md/svg) again from latest.json.
bench-readme:
	$(GO) run ./bench --render bench/results/latest.json --readme

# The same pipeline on a few thousand series (under a minute); results in
# .cache/bench/results-quick/.
bench-quick: tools
	$(GO) run ./bench --quick $(BENCH_FLAGS)

# cmd/proxy/default.pgo again: the proxy's CPU profile over the bench's
# dashboard (push-down off, then the default configuration), which every
# go build of cmd/proxy uses for profile-guided optimisation.
pgo: tools
	$(GO) run ./bench --pgo-profile cmd/proxy/default.pgo $(BENCH_FLAGS)

IMAGE ?= prometheus-multi-tenant-proxy
docker-build:
	docker build --build-arg VERSION=$(VERSION) -t $(IMAGE):$(VERSION) .

clean:
	rm -rf bin/ .cache/demo .cache/bench
