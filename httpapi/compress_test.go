package httpapi

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/util/httputil"
)

// TestPooledGzip: a client accepting gzip gets the answer compressed, whole
// and with its headers; the API behind sees no Accept-Encoding (so it does
// not compress a second time); 204 and clients not accepting gzip get the
// answer as written.
func TestPooledGzip(t *testing.T) {
	body := `{"status":"success","data":{"resultType":"vector","result":[]}}` + strings.Repeat(" ", 5000)
	var seen string
	h := pooledGzip(httputil.CompressionHandler{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.Header.Get("Accept-Encoding")
		if r.URL.Path == "/empty" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "999999") // a compressed answer cannot keep it
		for i := 0; i < len(body); i += 1000 {
			_, _ = w.Write([]byte(body[i:min(i+1000, len(body))]))
		}
	})})
	for _, c := range []struct {
		path, accept string
		gzipped      bool
	}{
		{"/q", "gzip, deflate, br", true},
		{"/q", "br;q=1.0, gzip;q=0.5", true},
		{"/q", "gzip;q=0", false},
		{"/q", "", false},
		{"/empty", "gzip", false},
	} {
		for range 3 { // the pooled writer, used again
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodGet, c.path, nil)
			if c.accept != "" {
				req.Header.Set("Accept-Encoding", c.accept)
			}
			h.ServeHTTP(rec, req)
			if c.gzipped && seen != "" {
				t.Errorf("%s %q: the API saw Accept-Encoding %q", c.path, c.accept, seen)
			}
			got := rec.Body.Bytes()
			enc := rec.Header().Get("Content-Encoding")
			if c.gzipped {
				if enc != "gzip" || rec.Header().Get("Content-Length") != "" || rec.Header().Get("Vary") != "Accept-Encoding" {
					t.Fatalf("%s %q: headers %v", c.path, c.accept, rec.Header())
				}
				zr, err := gzip.NewReader(bytes.NewReader(got))
				if err != nil {
					t.Fatal(err)
				}
				if got, err = io.ReadAll(zr); err != nil {
					t.Fatal(err)
				}
			} else if enc != "" {
				t.Errorf("%s %q: Content-Encoding %q", c.path, c.accept, enc)
			}
			want := body
			if c.path == "/empty" {
				want = ""
				if rec.Code != http.StatusNoContent {
					t.Errorf("/empty: HTTP %d", rec.Code)
				}
			}
			if string(got) != want {
				t.Errorf("%s %q: body of %d bytes, want %d", c.path, c.accept, len(got), len(want))
			}
		}
	}
}

// BenchmarkAnswerCompression: the v1 API's own compression (a new writer
// per answer) against the pooled one, on a small answer.
func BenchmarkAnswerCompression(b *testing.B) {
	body := []byte(`{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"namespace":"team-a"},"values":[[1767225600,"12"],[1767225615,"12"]]}]}}`)
	inner := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
	for _, c := range []struct {
		name string
		h    http.Handler
	}{
		{"prometheus", httputil.CompressionHandler{Handler: inner}},
		{"pooled", pooledGzip(httputil.CompressionHandler{Handler: inner})},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				req := httptest.NewRequest(http.MethodGet, "/api/v1/query", nil)
				req.Header.Set("Accept-Encoding", "gzip")
				c.h.ServeHTTP(rec, req)
				if rec.Header().Get("Content-Encoding") != "gzip" {
					b.Fatal("not compressed")
				}
			}
		})
	}
}
