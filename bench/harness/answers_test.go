package harness

import (
	"math"
	"strings"
	"testing"
)

func matrixAnswer(series string) []byte {
	return []byte(`{"status":"success","data":{"resultType":"matrix","result":[` + series + `]}}`)
}

func mustValues(t *testing.T, body []byte) *answerValues {
	t.Helper()
	v, err := valuesOf(body)
	if err != nil {
		t.Fatalf("valuesOf(%s): %v", body, err)
	}
	return v
}

// TestCompareValues: a re-associated answer passes when every float is
// within the tolerance of the reference's, and fails on one point beyond
// it, on NaN against a number, on infinities that differ, on another set
// of series, on other timestamps, and on another result type.
func TestCompareValues(t *testing.T) {
	ref := matrixAnswer(`{"metric":{"a":"1"},"values":[[1,"1"],[2,"1e300"],[3,"NaN"],[4,"+Inf"],[5,"0"]]},` +
		`{"metric":{"a":"2"},"values":[[1,"-3.25"]]}`)
	for _, c := range []struct {
		name, got string
		ok        bool
		why       string
	}{
		{"identical", `{"metric":{"a":"1"},"values":[[1,"1"],[2,"1e300"],[3,"NaN"],[4,"+Inf"],[5,"0"]]},{"metric":{"a":"2"},"values":[[1,"-3.25"]]}`, true, ""},
		{"series order", `{"metric":{"a":"2"},"values":[[1,"-3.25"]]},{"metric":{"a":"1"},"values":[[1,"1"],[2,"1e300"],[3,"NaN"],[4,"+Inf"],[5,"0"]]}`, true, ""},
		{"within", `{"metric":{"a":"1"},"values":[[1,"1.0000000000002"],[2,"1.0000000000005e300"],[3,"NaN"],[4,"+Inf"],[5,"0"]]},{"metric":{"a":"2"},"values":[[1,"-3.2500000000001"]]}`, true, ""},
		{"over", `{"metric":{"a":"1"},"values":[[1,"1.000000000002"],[2,"1e300"],[3,"NaN"],[4,"+Inf"],[5,"0"]]},{"metric":{"a":"2"},"values":[[1,"-3.25"]]}`, false, "relative difference"},
		{"sign", `{"metric":{"a":"1"},"values":[[1,"1"],[2,"1e300"],[3,"NaN"],[4,"+Inf"],[5,"0"]]},{"metric":{"a":"2"},"values":[[1,"3.25"]]}`, false, "reference -3.25"},
		{"zero against tiny", `{"metric":{"a":"1"},"values":[[1,"1"],[2,"1e300"],[3,"NaN"],[4,"+Inf"],[5,"1e-300"]]},{"metric":{"a":"2"},"values":[[1,"-3.25"]]}`, false, "relative difference"},
		{"NaN against number", `{"metric":{"a":"1"},"values":[[1,"1"],[2,"1e300"],[3,"0"],[4,"+Inf"],[5,"0"]]},{"metric":{"a":"2"},"values":[[1,"-3.25"]]}`, false, "reference NaN"},
		{"+Inf against -Inf", `{"metric":{"a":"1"},"values":[[1,"1"],[2,"1e300"],[3,"NaN"],[4,"-Inf"],[5,"0"]]},{"metric":{"a":"2"},"values":[[1,"-3.25"]]}`, false, "reference +Inf"},
		{"+Inf against huge", `{"metric":{"a":"1"},"values":[[1,"1"],[2,"1e300"],[3,"NaN"],[4,"1.7976931348623157e308"],[5,"0"]]},{"metric":{"a":"2"},"values":[[1,"-3.25"]]}`, false, "reference +Inf"},
		{"series missing", `{"metric":{"a":"1"},"values":[[1,"1"],[2,"1e300"],[3,"NaN"],[4,"+Inf"],[5,"0"]]}`, false, "1 series, reference 2"},
		{"other series", `{"metric":{"a":"1"},"values":[[1,"1"],[2,"1e300"],[3,"NaN"],[4,"+Inf"],[5,"0"]]},{"metric":{"a":"3"},"values":[[1,"-3.25"]]}`, false, "missing"},
		{"extra label", `{"metric":{"a":"1"},"values":[[1,"1"],[2,"1e300"],[3,"NaN"],[4,"+Inf"],[5,"0"]]},{"metric":{"a":"2","b":"x"},"values":[[1,"-3.25"]]}`, false, "missing"},
		{"point missing", `{"metric":{"a":"1"},"values":[[1,"1"],[2,"1e300"],[3,"NaN"],[4,"+Inf"]]},{"metric":{"a":"2"},"values":[[1,"-3.25"]]}`, false, "4 points, reference 5"},
		{"other timestamp", `{"metric":{"a":"1"},"values":[[1,"1"],[2,"1e300"],[3,"NaN"],[4,"+Inf"],[6,"0"]]},{"metric":{"a":"2"},"values":[[1,"-3.25"]]}`, false, "at 6, reference at 5"},
	} {
		got := compareValues(mustValues(t, ref), mustValues(t, matrixAnswer(c.got)), floatTolerance)
		if (got == "") != c.ok || !strings.Contains(got, c.why) {
			t.Errorf("%s: compareValues = %q, want ok %v (%q)", c.name, got, c.ok, c.why)
		}
	}

	vec := []byte(`{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[10,"2"]}]}}`)
	if d := compareValues(mustValues(t, ref), mustValues(t, vec), floatTolerance); !strings.Contains(d, "result type vector") {
		t.Errorf("matrix against vector: %q", d)
	}
	near := []byte(`{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[10,"2.000000000000001"]}]}}`)
	if d := compareValues(mustValues(t, vec), mustValues(t, near), floatTolerance); d != "" {
		t.Errorf("vector within tolerance: %q", d)
	}
	sc1 := []byte(`{"status":"success","data":{"resultType":"scalar","result":[10,"2"]}}`)
	sc2 := []byte(`{"status":"success","data":{"resultType":"scalar","result":[10,"3"]}}`)
	if d := compareValues(mustValues(t, sc1), mustValues(t, sc2), floatTolerance); d == "" {
		t.Error("scalars 2 and 3 compared equal")
	}
	if _, err := valuesOf([]byte(`{"status":"error","error":"x"}`)); err == nil {
		t.Error("an error answer parsed")
	}
	if _, err := valuesOf(matrixAnswer(`{"metric":{},"values":[[1,"one"]]}`)); err == nil {
		t.Error("a value that is no float parsed")
	}
}

func TestCloseFloats(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	for _, c := range []struct {
		a, b float64
		want bool
	}{
		{1, 1, true}, {0, 0, true}, {0, math.Copysign(0, -1), true},
		{1, 1 + 1e-13, true}, {1, 1 + 1e-11, false}, {-1, 1, false},
		{nan, nan, true}, {nan, 1, false}, {1, nan, false},
		{inf, inf, true}, {-inf, -inf, true}, {inf, -inf, false}, {inf, math.MaxFloat64, false},
		{0, 1e-300, false},
	} {
		if got := closeFloats(c.a, c.b, floatTolerance); got != c.want {
			t.Errorf("closeFloats(%v, %v) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}
