package harness

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestQueryEach: every backend gets the panel's request, all at once, and
// the time runs until the slowest has answered whole; a refusal by any of
// them is an error naming it.
func TestQueryEach(t *testing.T) {
	const slow = 50 * time.Millisecond
	// Each backend answers only once the other has been asked too, so
	// requests sent one after the other fail.
	arrived := make(chan struct{}, 2)
	backend := func(delay time.Duration, code int) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/api/v1/query" || r.FormValue("query") != "up" || r.FormValue("time") != "1767229200" {
				http.Error(w, "unexpected request "+r.URL.String(), http.StatusBadRequest)
				return
			}
			arrived <- struct{}{}
			deadline := time.After(5 * time.Second)
			for len(arrived) < 2 {
				select {
				case <-deadline:
					http.Error(w, "the other backend was not asked", http.StatusServiceUnavailable)
					return
				case <-time.After(time.Millisecond):
				}
			}
			time.Sleep(delay)
			w.WriteHeader(code)
			_, _ = w.Write([]byte(`{"status":"success","data":{"resultType":"vector","result":[]}}`))
		}))
		t.Cleanup(s.Close)
		return s
	}
	rq := request{expr: "up", instant: true, at: time.Unix(1767229200, 0)}
	hc := newHTTPClient(1)

	fast, late := backend(0, http.StatusOK), backend(slow, http.StatusOK)
	d, err := queryEach(context.Background(), hc, []string{fast.URL, late.URL}, rq)
	if err != nil {
		t.Fatal(err)
	}
	if d < slow {
		t.Errorf("took %v; the slower backend answers after %v", d, slow)
	}

	for len(arrived) > 0 {
		<-arrived
	}
	ok, refusing := backend(0, http.StatusOK), backend(0, http.StatusUnprocessableEntity)
	if _, err := queryEach(context.Background(), hc, []string{ok.URL, refusing.URL}, rq); err == nil || !strings.Contains(err.Error(), "HTTP 422") ||
		!strings.Contains(err.Error(), refusing.URL) {
		t.Errorf("a refusing backend: error %v", err)
	}
}
