package e2eproxy

import (
	"fmt"
	"math"
	"reflect"
	"strconv"
)

// Tally counts how answers compared within a tolerance.
type Tally struct {
	Answers, BitEqual, SamplesWithin, SamplesExact int
	MaxRel                                         float64
}

// Within walks two decoded answers; under "value" or "values" a string is
// a sample value, compared within tol.
func Within(w, g any, tol float64, sample bool, tl *Tally) string {
	switch wv := w.(type) {
	case map[string]any:
		gv, ok := g.(map[string]any)
		if !ok || len(gv) != len(wv) {
			return fmt.Sprintf("object %v, reference %v", g, w)
		}
		for k, x := range wv {
			y, ok := gv[k]
			if !ok {
				return fmt.Sprintf("no %q", k)
			}
			if d := Within(x, y, tol, sample || k == "value" || k == "values", tl); d != "" {
				return k + ": " + d
			}
		}
	case []any:
		gv, ok := g.([]any)
		if !ok || len(gv) != len(wv) {
			return fmt.Sprintf("list of %d, reference %d", len(gv), len(wv))
		}
		for i := range wv {
			if d := Within(wv[i], gv[i], tol, sample, tl); d != "" {
				return fmt.Sprintf("[%d]: %s", i, d)
			}
		}
	case string:
		gs, ok := g.(string)
		if !ok {
			return fmt.Sprintf("%v, reference %q", g, wv)
		}
		if gs == wv {
			if sample {
				tl.SamplesExact++
			}
			return ""
		}
		a, errA := strconv.ParseFloat(wv, 64)
		b, errB := strconv.ParseFloat(gs, 64)
		if !sample || errA != nil || errB != nil || math.IsInf(a, 0) || math.IsInf(b, 0) || math.IsNaN(a) || math.IsNaN(b) {
			return fmt.Sprintf("%q, reference %q", gs, wv)
		}
		if rel := math.Abs(a-b) / math.Max(math.Abs(a), math.Abs(b)); rel > tol {
			return fmt.Sprintf("%s, reference %s: relative difference %.3g above %g", gs, wv, rel, tol)
		}
		tl.SamplesWithin++
		tl.MaxRel = max(tl.MaxRel, math.Abs(a-b)/math.Max(math.Abs(a), math.Abs(b)))
	default:
		if !reflect.DeepEqual(w, g) {
			return fmt.Sprintf("%v, reference %v", g, w)
		}
	}
	return ""
}
