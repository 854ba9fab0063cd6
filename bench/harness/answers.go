package harness

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
)

// floatTolerance is how far, relative to the larger magnitude, a point of
// a re-associated answer (`float_sums: reassociate`) may be from the
// reference's: partial sums added in another order differ in the last
// bits, well below this for the sums the dashboard asks.
const floatTolerance = 1e-12

// answerValues is an answer parsed far enough to compare its floats with
// a tolerance: series by their sorted label set, points in order.
type answerValues struct {
	resultType string
	series     map[string][]point
	// scalar and string answers: the raw result, compared exactly.
	raw string
}

// point is one sample. Timestamps stay the text Prometheus printed;
// histogram samples are kept as raw JSON and compared exactly.
type point struct {
	ts        string
	v         float64
	histogram string
}

// valuesOf parses an API answer into answerValues.
func valuesOf(body []byte) (*answerValues, error) {
	var a struct {
		Status string `json:"status"`
		Data   struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, fmt.Errorf("answer is not JSON: %w", err)
	}
	if a.Status != "success" {
		return nil, fmt.Errorf("answer status %q", a.Status)
	}
	av := &answerValues{resultType: a.Data.ResultType}
	if a.Data.ResultType != "vector" && a.Data.ResultType != "matrix" {
		av.raw = string(a.Data.Result)
		return av, nil
	}
	var list []struct {
		Metric     map[string]string   `json:"metric"`
		Value      []json.RawMessage   `json:"value"`
		Values     [][]json.RawMessage `json:"values"`
		Histogram  []json.RawMessage   `json:"histogram"`
		Histograms [][]json.RawMessage `json:"histograms"`
	}
	if err := json.Unmarshal(a.Data.Result, &list); err != nil {
		return nil, fmt.Errorf("answer result: %w", err)
	}
	av.series = make(map[string][]point, len(list))
	for _, s := range list {
		key, _ := json.Marshal(s.Metric) // map keys marshal sorted
		var pts []point
		add := func(pair []json.RawMessage, hist bool) error {
			if len(pair) != 2 {
				return fmt.Errorf("series %s: a sample of %d fields", key, len(pair))
			}
			p := point{ts: string(pair[0])}
			if hist {
				p.histogram = string(pair[1])
			} else {
				var text string
				if err := json.Unmarshal(pair[1], &text); err != nil {
					return fmt.Errorf("series %s: value %s: %w", key, pair[1], err)
				}
				v, err := strconv.ParseFloat(text, 64) // accepts NaN, +Inf, -Inf
				if err != nil {
					return fmt.Errorf("series %s: value %q: %w", key, text, err)
				}
				p.v = v
			}
			pts = append(pts, p)
			return nil
		}
		if s.Value != nil {
			if err := add(s.Value, false); err != nil {
				return nil, err
			}
		}
		if s.Histogram != nil {
			if err := add(s.Histogram, true); err != nil {
				return nil, err
			}
		}
		for _, v := range s.Values {
			if err := add(v, false); err != nil {
				return nil, err
			}
		}
		for _, h := range s.Histograms {
			if err := add(h, true); err != nil {
				return nil, err
			}
		}
		// Floats and histograms of one series interleave in time.
		sort.SliceStable(pts, func(i, j int) bool { return tsLess(pts[i].ts, pts[j].ts) })
		if _, dup := av.series[string(key)]; dup {
			return nil, fmt.Errorf("series %s twice in one answer", key)
		}
		av.series[string(key)] = pts
	}
	return av, nil
}

func tsLess(a, b string) bool {
	fa, errA := strconv.ParseFloat(a, 64)
	fb, errB := strconv.ParseFloat(b, 64)
	if errA != nil || errB != nil {
		return a < b
	}
	return fa < fb
}

// closeFloats tells whether got is within tol of want relative to the
// larger magnitude. NaN equals NaN; an infinity equals only itself.
func closeFloats(want, got, tol float64) bool {
	switch {
	case want == got:
		return true
	case math.IsNaN(want) || math.IsNaN(got):
		return math.IsNaN(want) && math.IsNaN(got)
	case math.IsInf(want, 0) || math.IsInf(got, 0):
		return false
	}
	return math.Abs(want-got) <= tol*math.Max(math.Abs(want), math.Abs(got))
}

// compareValues checks got against want: the same result type, the same
// series, the same timestamps per series, and every float within tol.
// It returns "" when they agree, else what differs first.
func compareValues(want, got *answerValues, tol float64) string {
	if want.resultType != got.resultType {
		return fmt.Sprintf("result type %s, reference %s", got.resultType, want.resultType)
	}
	if want.series == nil {
		if want.raw != got.raw {
			return fmt.Sprintf("%s %s, reference %s", got.resultType, got.raw, want.raw)
		}
		return ""
	}
	if len(want.series) != len(got.series) {
		return fmt.Sprintf("%d series, reference %d", len(got.series), len(want.series))
	}
	keys := make([]string, 0, len(want.series))
	for k := range want.series {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	worst, worstAt := 0.0, ""
	for _, k := range keys {
		w := want.series[k]
		g, ok := got.series[k]
		if !ok {
			return "series " + k + " missing"
		}
		if len(w) != len(g) {
			return fmt.Sprintf("series %s: %d points, reference %d", k, len(g), len(w))
		}
		for i := range w {
			switch {
			case w[i].ts != g[i].ts:
				return fmt.Sprintf("series %s: point %d at %s, reference at %s", k, i, g[i].ts, w[i].ts)
			case w[i].histogram != g[i].histogram:
				return fmt.Sprintf("series %s at %s: histogram %s, reference %s", k, w[i].ts, g[i].histogram, w[i].histogram)
			case !closeFloats(w[i].v, g[i].v, tol):
				if d := relDiff(w[i].v, g[i].v); d > worst || worstAt == "" {
					worst, worstAt = d, fmt.Sprintf("series %s at %s: %v, reference %v", k, w[i].ts, g[i].v, w[i].v)
				}
			}
		}
	}
	if worstAt != "" {
		return fmt.Sprintf("%s (relative difference %.3g > %g)", worstAt, worst, tol)
	}
	return ""
}

// relDiff is the relative difference of two floats, +Inf when one is NaN
// or infinite and they differ.
func relDiff(a, b float64) float64 {
	if a == b {
		return 0
	}
	if math.IsNaN(a) || math.IsNaN(b) || math.IsInf(a, 0) || math.IsInf(b, 0) {
		return math.Inf(1)
	}
	return math.Abs(a-b) / math.Max(math.Abs(a), math.Abs(b))
}
