package e2eutil

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// SumMetric adds up the samples of metric name in a Prometheus text
// exposition whose label text contains every fragment (a trailing-open
// fragment like `result="` matches any value of that label).
func SumMetric(exposition io.Reader, name string, fragments ...string) (float64, error) {
	sum := 0.0
	sc := bufio.NewScanner(exposition)
	sc.Buffer(nil, 1<<20)
lines:
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		for _, f := range fragments {
			if !strings.Contains(line, f) {
				continue lines
			}
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("metrics line %q: %w", line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}
