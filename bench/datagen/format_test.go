package datagen

import (
	"math"
	"strconv"
	"testing"
)

func TestAppendValueMatchesG(t *testing.T) {
	for _, v := range []float64{0, 1, -1, 17, 999999, 1e6, 123456789, -999999, 0.5, -0.25,
		1e21, 3.14159, math.Copysign(0, -1), 5.2203915e+07} {
		if got, want := string(appendValue(nil, v)), strconv.FormatFloat(v, 'g', -1, 64); got != want {
			t.Errorf("appendValue(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestAppendTimestamp(t *testing.T) {
	for ms, want := range map[int64]string{0: "0\n", 1767225600000: "1767225600\n", 1500: "1.5\n", 1001: "1.001\n", 1010: "1.01\n"} {
		if got := string(appendTimestamp(nil, ms)); got != want {
			t.Errorf("appendTimestamp(%d) = %q, want %q", ms, got, want)
		}
	}
}
