package e2ehost

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// SumMetric adds up the samples of metric name in a Prometheus text
// exposition whose label text contains every fragment (`handler="/x"` one
// value, a trailing-open fragment like `result="` any value of that label).
// No sample is a sum of 0.
func SumMetric(exposition io.Reader, name string, fragments ...string) (float64, error) {
	sum := 0.0
	sc := bufio.NewScanner(exposition)
	sc.Buffer(nil, 1<<20)
lines:
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok {
			continue
		}
		var labels string
		switch {
		case strings.HasPrefix(rest, "{"):
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				return 0, fmt.Errorf("metrics line %q: labels not closed", line)
			}
			labels, rest = rest[1:end], rest[end+1:]
		case strings.HasPrefix(rest, " "):
		default:
			continue // a longer name with the same prefix
		}
		for _, f := range fragments {
			if !strings.Contains(labels, f) {
				continue lines
			}
		}
		// The value is the first field after the labels; a timestamp may follow.
		f := strings.Fields(rest)
		if len(f) == 0 {
			return 0, fmt.Errorf("metrics line %q: no value", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, fmt.Errorf("metrics line %q: %w", line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}
