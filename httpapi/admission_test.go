package httpapi

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/admission"
)

// The size limit holds the answer back until it is complete, so an answer
// that would pass the limit can still be replaced by an error.
func TestSizeLimitWriter(t *testing.T) {
	for _, tc := range []struct {
		writes []string
		over   bool
	}{
		{[]string{"0123456789"}, false},         // exactly the limit
		{[]string{"01234", "56789"}, false},     // in pieces
		{[]string{"01234", "56789", "x"}, true}, // one byte over, late
		{[]string{strings.Repeat("a", 11)}, true},
	} {
		rec := httptest.NewRecorder()
		w := &sizeLimitWriter{ResponseWriter: rec, max: 10}
		w.WriteHeader(http.StatusAccepted)
		for _, s := range tc.writes {
			if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
				t.Fatalf("Write(%q) = %d, %v", s, n, err)
			}
		}
		if rec.Body.Len() != 0 || rec.Code != http.StatusOK || rec.Flushed {
			t.Fatalf("%q: something reached the client before the handler ended", tc.writes)
		}
		if w.over != tc.over {
			t.Errorf("%q: over = %v, want %v", tc.writes, w.over, tc.over)
		}
		if !tc.over {
			w.flush()
			if got := rec.Body.String(); got != strings.Join(tc.writes, "") || rec.Code != http.StatusAccepted {
				t.Errorf("%q: flushed %d %q", tc.writes, rec.Code, got)
			}
		}
	}
}

func TestCountSelectors(t *testing.T) {
	for q, want := range map[string]int{
		"":                                    0,
		"up":                                  1,
		"up or up or up":                      3,
		`sum(rate(x[5m])) / sum(rate(y[5m]))`: 2,
		`max_over_time(up[1h:1m])`:            1,
		"1 + 2":                               0,
		"up{":                                 0, // the handler answers bad_data
	} {
		if got := countSelectors(q); got != want {
			t.Errorf("countSelectors(%q) = %d, want %d", q, got, want)
		}
	}
}

// A well-formed query deep enough to take the parser long is refused from
// the lexer's count alone, naming max_selectors_per_query; one within the
// limit is parsed and counted as before, whatever its operators.
func TestCheckSelectorsBeforeParsing(t *testing.T) {
	limits := admission.Limits{MaxSelectorsPerQuery: 100}
	deep := strings.Repeat("up or ", 4999) + "up"
	scalars := strings.Repeat("1 + ", 4999) + "1"                          // no selector at all
	parens := strings.Repeat("(", 2000) + "up" + strings.Repeat(")", 2000) // well formed, nested deep
	for what, q := range map[string]string{"5,000 selectors": deep, "5,000 scalars": scalars, "2,000 parentheses": parens} {
		err := checkSelectors(limits, q)
		var le *admission.LimitError
		if !errors.As(err, &le) || le.Limit != "max_selectors_per_query" || !strings.Contains(err.Error(), "operators and parentheses") {
			t.Errorf("%s: %v, want the operators' bound of max_selectors_per_query", what, err)
		}
		if n, lexed := countOperators(q); !lexed || n < 2000 {
			t.Errorf("%s: %d operators and parentheses counted (lexed %v), want at least 2,000", what, n, lexed)
		}
	}
	// Malformed is left to the handler's bad_data, as Prometheus answers
	// it: the parser stops at a syntax error without type-checking.
	if err := checkSelectors(limits, strings.Repeat("(", 10000)+"up"); err != nil {
		t.Errorf("10,000 unclosed parentheses: %v, want it left to the parser's bad_data", err)
	}
	for q, wantErr := range map[string]bool{
		strings.Repeat("up or ", 99) + "up":  false,
		strings.Repeat("up or ", 100) + "up": true, // 101 selectors: refused by the count
		`sum by (job) (rate(http_requests_total{job=~"a.*", code!="500"}[5m])) / on (job) group_left sum by (job) (rate(http_requests_total[5m]))`: false,
		"up{": false, // the handler answers bad_data
	} {
		err := checkSelectors(limits, q)
		if (err != nil) != wantErr {
			t.Errorf("checkSelectors(%.40q…) = %v, want error %v", q, err, wantErr)
		}
	}
	if err := checkSelectors(admission.Limits{}, deep); err != nil {
		t.Errorf("unlimited selectors: %v", err)
	}
}

// BenchmarkSelectorFloodRefusal: the cost of refusing `up or up or …`
// 5,000 deep, from the lexer's count (checkSelectors) against parsing it
// to count its selectors.
func BenchmarkSelectorFloodRefusal(b *testing.B) {
	deep := strings.Repeat("up or ", 4999) + "up"
	limits := admission.Limits{MaxSelectorsPerQuery: 100}
	b.Run("lexed", func(b *testing.B) {
		for b.Loop() {
			if checkSelectors(limits, deep) == nil {
				b.Fatal("not refused")
			}
		}
	})
	b.Run("parsed", func(b *testing.B) {
		for b.Loop() {
			if admission.CheckSelectors(limits, countSelectors(deep)) == nil {
				b.Fatal("not refused")
			}
		}
	})
}
