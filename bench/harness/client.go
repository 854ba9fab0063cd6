package harness

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil/e2ehost"
)

// newHTTPClient asks without Accept-Encoding: Prometheus would gzip its
// answers and the proxy might not (or the other way round), and the
// benchmark compares query work, not compression.
func newHTTPClient(conns int) *http.Client {
	return &http.Client{
		Timeout: 3 * time.Minute, // above both engines' 2 min query timeout
		Transport: &http.Transport{
			DisableCompression:  true,
			MaxIdleConnsPerHost: conns,
			MaxConnsPerHost:     conns,
			IdleConnTimeout:     time.Minute,
		},
	}
}

// query sends r to base and returns the time until the whole answer was
// read, and the answer when keep is set (decoding it is left out of the
// timing).
func query(ctx context.Context, hc *http.Client, base string, r request, keep bool) (time.Duration, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+r.path(), strings.NewReader(r.form().Encode()))
	if err != nil {
		return 0, nil, fmt.Errorf("%s: %w", base, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	t0 := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s%s: %w", base, r.path(), err)
	}
	defer func() { _ = resp.Body.Close() }()
	var body []byte
	if keep || resp.StatusCode != http.StatusOK {
		body, err = io.ReadAll(resp.Body)
	} else {
		_, err = io.Copy(io.Discard, resp.Body)
	}
	elapsed := time.Since(t0)
	if err != nil {
		return 0, nil, fmt.Errorf("%s%s: read answer: %w", base, r.path(), err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, nil, fmt.Errorf("%s%s %q: HTTP %d: %s", base, r.path(), r.expr, resp.StatusCode, e2ehost.LastBytes(body, 300))
	}
	return elapsed, body, nil
}

// queryEach sends r to every base at once and returns the time until the
// last of them had answered whole: what the backends take to answer the
// request themselves, side by side, with no proxy in between.
func queryEach(ctx context.Context, hc *http.Client, bases []string, r request) (time.Duration, error) {
	errs := make([]error, len(bases))
	var wg sync.WaitGroup
	t0 := time.Now()
	for i, base := range bases {
		wg.Go(func() { _, _, errs[i] = query(ctx, hc, base, r, false) })
	}
	wg.Wait()
	return time.Since(t0), errors.Join(errs...)
}

// answerShape summarises a Prometheus API answer: its size and a digest of
// its data with series sorted (their order is not defined), so two answers
// have one digest iff they hold the same data. Floats stay the strings
// Prometheus printed, so equality is exact.
type answerShape struct {
	Series   int    `json:"series"`
	Points   int    `json:"points"`
	Warnings int    `json:"warnings,omitempty"`
	Digest   string `json:"digest"`
}

func shapeOf(body []byte) (answerShape, error) {
	var a struct {
		Status   string   `json:"status"`
		Warnings []string `json:"warnings"`
		Data     struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &a); err != nil {
		return answerShape{}, fmt.Errorf("answer is not JSON: %w", err)
	}
	if a.Status != "success" {
		return answerShape{}, fmt.Errorf("answer status %q", a.Status)
	}
	s := answerShape{Warnings: len(a.Warnings)}
	h := sha256.New()
	h.Write([]byte(a.Data.ResultType))
	switch a.Data.ResultType {
	case "vector", "matrix":
		var list []struct {
			Metric map[string]string `json:"metric"`
			Value  json.RawMessage   `json:"value"`
			Values []json.RawMessage `json:"values"`
		}
		if err := json.Unmarshal(a.Data.Result, &list); err != nil {
			return answerShape{}, fmt.Errorf("answer result: %w", err)
		}
		lines := make([]string, 0, len(list))
		for _, r := range list {
			key, _ := json.Marshal(r.Metric) // map keys marshal sorted
			s.Series++
			s.Points += len(r.Values)
			if r.Value != nil {
				s.Points++
			}
			var vals strings.Builder
			vals.Write(r.Value)
			for _, v := range r.Values {
				vals.WriteByte(',')
				vals.Write(v)
			}
			lines = append(lines, string(key)+" "+vals.String())
		}
		sort.Strings(lines)
		for _, l := range lines {
			h.Write([]byte("\n" + l))
		}
	default: // scalar, string: one value
		s.Points = 1
		h.Write(a.Data.Result)
	}
	s.Digest = hex.EncodeToString(h.Sum(nil))[:16]
	return s, nil
}

// metricNames lists the metric names in a text exposition starting with prefix.
func metricNames(text []byte, prefix string) []string {
	seen := map[string]bool{}
	var names []string
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		name := line
		if i := strings.IndexAny(name, "{ "); i >= 0 {
			name = name[:i]
		}
		if !seen[name] {
			seen[name] = true
			names = append(names, name)
		}
	}
	return names
}

func fetch(ctx context.Context, hc *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: HTTP %d: %s", url, resp.StatusCode, e2ehost.LastBytes(b, 200))
	}
	return b, nil
}
