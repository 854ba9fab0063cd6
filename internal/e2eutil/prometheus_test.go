package e2eutil

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/bench/datagen"
)

func TestStartPrometheus(t *testing.T) {
	cfg := datagen.DefaultConfig()
	at := cfg.Start.Add(30 * time.Minute) // first half: split series are only in shard 0

	countUp := func(keep func(labels.Labels) bool) int {
		n := 0
		datagen.ForEachSeries(cfg, func(lset labels.Labels) {
			if lset.Get(model.MetricNameLabel) == "up" && keep(lset) {
				n++
			}
		})
		return n
	}
	all := func(labels.Labels) bool { return true }
	shard1 := func(lset labels.Labels) bool {
		c := lset.Get("cluster")
		return c == cfg.Clusters[1] || c == datagen.GlobalCluster
	}

	for _, tc := range []struct {
		kind  Kind
		shard int
		want  int
	}{
		{V3, -1, countUp(all)},
		{V2, -1, countUp(all)},
		{V3LTS, -1, countUp(all)}, // blocks from the v3 promtool, opened by 3.5
		{V3, 1, countUp(shard1)},
	} {
		name := fmt.Sprintf("%v/shard%d", tc.kind, tc.shard)
		if tc.shard == -1 {
			name = tc.kind.String() + "/all"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			data := datagen.Reader(cfg, tc.shard, nil)
			defer func() { _ = data.Close() }()
			p := StartPrometheus(t, tc.kind, data, WithName(name))
			if got := queryScalar(t, p.URL, "count(up)", at); got != float64(tc.want) {
				t.Errorf("count(up) = %v, want %d", got, tc.want)
			}
			if tc.kind != V3 || tc.shard != -1 {
				return
			}
			// The reference server must accept what the proxy's engine accepts.
			queryScalar(t, p.URL, `count(sort_by_label(up, "instance"))`, at)

			p.Kill()
			if _, err := http.Get(p.URL + "/-/ready"); err == nil {
				t.Fatal("server still answers after Kill")
			}
			p.Restart()
			if got := queryScalar(t, p.URL, "count(up)", at); got != float64(tc.want) {
				t.Errorf("after Restart: count(up) = %v, want %d", got, tc.want)
			}
		})
	}
}

func TestStartPrometheusEmpty(t *testing.T) {
	t.Parallel()
	for name, data := range map[string]io.Reader{
		"nil":       nil,
		"no bytes":  strings.NewReader(""),
		"no series": datagen.Reader(datagen.DefaultConfig(), -1, func(labels.Labels) bool { return false }),
	} {
		p := StartPrometheus(t, V3, data, WithName(name))
		if got := queryScalar(t, p.URL, "count(up) or vector(0)", datagen.DefaultConfig().Start); got != 0 {
			t.Errorf("%s: count(up) = %v, want 0", name, got)
		}
		p.Stop()
	}
}

// queryScalar runs an instant query whose answer is one sample.
func queryScalar(t *testing.T, base, query string, at time.Time) float64 {
	t.Helper()
	u := base + "/api/v1/query?" + url.Values{
		"query": {query},
		"time":  {strconv.FormatInt(at.Unix(), 10)},
	}.Encode()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("query %q: %v", query, err)
	}
	defer func() { _ = resp.Body.Close() }()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("query %q: decode: %v", query, err)
	}
	if body.Status != "success" || len(body.Data.Result) != 1 {
		t.Fatalf("query %q: status %s (%s), %d results", query, body.Status, body.Error, len(body.Data.Result))
	}
	s, _ := body.Data.Result[0].Value[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("query %q: value %q: %v", query, s, err)
	}
	return v
}
