package httpapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
