#!/usr/bin/env bash
# make demo: three Prometheus backends (one per "cluster", mixing the 3.x
# build of the engine's version and Debian's 2.42) holding generated data
# that ends now, the proxy in front with the example tenants, and curl lines.
# Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-8080}
BASE_PORT=${BASE_PORT:-19090}
DIR=.cache/demo
PROM_VERSION=$(go list -m -f '{{.Version}}' github.com/prometheus/prometheus)
PROM3=.cache/prometheus-$PROM_VERSION/prometheus
PROMTOOL=.cache/prometheus-$PROM_VERSION/promtool
PROM2=$(command -v prometheus || true)
CLUSTERS=(cluster-a cluster-b cluster-c)

pids=()
cleanup() {
	trap - INT TERM EXIT
	echo
	echo "stopping ${#pids[@]} processes"
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

for f in "$PROM3" "$PROMTOOL" bin/prometheus-multi-tenant-proxy; do
	[ -x "$f" ] || { echo "missing $f: run 'make build tools'"; exit 1; }
done

rm -rf "$DIR" && mkdir -p "$DIR"
# Data ends now, so queries without a time parameter find it.
START=$(date -u -d "@$(( $(date +%s) / 60 * 60 - 3 * 3600 ))" +%Y-%m-%dT%H:%M:%SZ)
echo "generating 3 h of data from $START for ${CLUSTERS[*]}"
go build -o "$DIR/datagen" ./bench/cmd/datagen

urls=()
for i in 0 1 2; do
	c=${CLUSTERS[$i]}
	"$DIR/datagen" --start="$START" --duration=3h --shard="$i" --out="$DIR/$c.om"
	mkdir -p "$DIR/$c/data"
	"$PROMTOOL" tsdb create-blocks-from openmetrics --max-block-duration=24h "$DIR/$c.om" "$DIR/$c/data" >"$DIR/$c/promtool.log"
	echo "scrape_configs: []" >"$DIR/$c/prometheus.yml"
	bin=$PROM3
	if [ "$i" = 1 ] && [ -n "$PROM2" ]; then bin=$PROM2; fi
	port=$((BASE_PORT + i))
	"$bin" --config.file="$DIR/$c/prometheus.yml" --storage.tsdb.path="$DIR/$c/data" \
		--web.listen-address="127.0.0.1:$port" >"$DIR/$c/prometheus.log" 2>&1 &
	pids+=($!)
	urls+=("http://127.0.0.1:$port")
	echo "  $c: $("$bin" --version 2>&1 | head -1 | cut -d' ' -f1-3) on http://127.0.0.1:$port"
done

cat >"$DIR/config.yaml" <<YAML
discovery:
  static:
    - {name: cluster-a, urls: ["${urls[0]}"], labels: {cluster: cluster-a}}
    - {name: cluster-b, urls: ["${urls[1]}"], labels: {cluster: cluster-b}}
    - {name: cluster-c, urls: ["${urls[2]}"], labels: {cluster: cluster-c}}
  health_check_interval: 5s
tenants:
  files: ["examples/tenants/*.yaml"]
  admin_namespaces: [monitoring]
proxy:
  enable_request_logging: true
YAML

for u in "${urls[@]}"; do
	for _ in $(seq 100); do curl -sf "$u/-/ready" >/dev/null && break; sleep 0.1; done
done
bin/prometheus-multi-tenant-proxy --config="$DIR/config.yaml" --listen-address="127.0.0.1:$PORT" 2>"$DIR/proxy.log" &
proxy=$!
pids+=($proxy)
for _ in $(seq 300); do
	curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null && break
	if ! kill -0 "$proxy" 2>/dev/null; then
		echo "the proxy exited:"; cat "$DIR/proxy.log"; exit 1
	fi
	sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null || { echo "the proxy is not ready after 30 s:"; tail -20 "$DIR/proxy.log"; exit 1; }

P="http://127.0.0.1:$PORT"
cat <<TXT

The proxy answers on $P (log: $DIR/proxy.log). Try:

  # admin namespace (monitoring) sees all three clusters
  curl -s -H 'X-Tenant-Namespace: monitoring' '$P/api/v1/query' --data-urlencode 'query=count by (cluster) (up)'
  # team-a sees only its http_requests_total and http_request_duration_seconds*
  curl -s -H 'X-Tenant-Namespace: team-a' '$P/api/v1/query' --data-urlencode 'query=count by (__name__) ({__name__=~".+"})'
  curl -s -H 'X-Tenant-Namespace: team-a' '$P/api/v1/query' --data-urlencode 'query=histogram_quantile(0.9, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))'
  # team-b: memory_* and node_cpu_* of namespace team-b
  curl -s -H 'X-Tenant-Namespace: team-b' '$P/api/v1/query_range' --data-urlencode 'query=sum by (cluster) (memory_usage_bytes)' --data-urlencode "start=\$(date -d '-1 hour' +%s)" --data-urlencode "end=\$(date +%s)" --data-urlencode 'step=300'
  # team-c: its API job and up, in cluster-a only
  curl -s -H 'X-Tenant-Namespace: team-c' '$P/api/v1/series' --data-urlencode 'match[]={namespace=~".+"}'
  curl -s -H 'X-Tenant-Namespace: team-c' '$P/api/v1/labels'
  # no tenant: 401; a namespace without MetricAccess: 403
  curl -s '$P/api/v1/query?query=up'
  curl -s -H 'X-Tenant-Namespace: nobody' '$P/api/v1/query?query=up'
  # who am I, my rules and the metric names I can see (the same facts as the page at $P/)
  curl -s -H 'X-Tenant-Namespace: team-a' '$P/api/v1/status/tenant'
  # operators (admin namespace only)
  curl -s -H 'X-Tenant-Namespace: monitoring' '$P/debug/targets'
  curl -s -H 'X-Tenant-Namespace: monitoring' '$P/debug/tenants'

Open $P/ in a browser for the page (enter a namespace, e.g. team-a, and a query).
Point Grafana at $P as a Prometheus data source with the custom header
X-Tenant-Namespace. Ctrl-C stops everything.
TXT
wait
