package e2eutil

import (
	"bufio"
	"bytes"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Content types a Prometheus remote-read answer may carry.
const (
	ContentTypeSamples = "application/x-protobuf"
	ContentTypeChunked = "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse"
)

// Fault is a fake backend that fails in one particular way, listening on
// 127.0.0.1. It is shut down, with every connection it holds, when the test
// ends. Fakes exist only for faults a real Prometheus cannot be made to show.
type Fault struct {
	// URL is the base URL, http://127.0.0.1:PORT.
	URL string
	// Addr is 127.0.0.1:PORT.
	Addr string
	// Kind names the fault, e.g. "hang" or "status-500".
	Kind string

	requests atomic.Int64 // requests (connections, for Hang) seen
	open     atomic.Int64 // connections open now
	cuts     atomic.Int64 // answers cut short (CloseMidStream)

	mu     sync.Mutex
	byPath map[string]int // Hang: open connections by request path
}

// Requests is how many requests reached the fault (for Hang: connections).
func (f *Fault) Requests() int64 { return f.requests.Load() }

// OpenConns is how many client connections are open right now; a client that
// gave up must bring it back to zero.
func (f *Fault) OpenConns() int64 { return f.open.Load() }

// OpenConnsTo is how many connections Hang holds whose request was for
// path (e.g. "/api/v1/read"), so probes of other paths do not count.
func (f *Fault) OpenConnsTo(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.byPath[path]
}

func (f *Fault) addPath(path string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.byPath[path] += n
}

// Cuts is how many answers CloseMidStream cut short.
func (f *Fault) Cuts() int64 { return f.cuts.Load() }

// Hang accepts connections and never answers or closes them: a backend
// stuck in a long GC pause, or a firewall that drops packets after the
// handshake.
func Hang(t testing.TB) *Fault {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("e2eutil: hang: %v", err)
	}
	f := &Fault{Addr: ln.Addr().String(), Kind: "hang", byPath: map[string]int{}}
	f.URL = "http://" + f.Addr
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.requests.Add(1)
			f.open.Add(1)
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				// Note the request's path, then read and drop whatever
				// comes, only to notice when the client closes its end.
				br := bufio.NewReader(c)
				path := "?"
				if line, err := br.ReadString('\n'); err == nil {
					if fields := strings.Fields(line); len(fields) == 3 {
						path, _, _ = strings.Cut(fields[1], "?")
					}
				}
				f.addPath(path, 1)
				_, _ = io.Copy(io.Discard, br)
				f.addPath(path, -1)
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				_ = c.Close()
				f.open.Add(-1)
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return f
}

// Status500 answers every request with HTTP 500 and a short text.
func Status500(t testing.TB) *Fault {
	t.Helper()
	return serveFault(t, "status-500", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "injected failure", http.StatusInternalServerError)
	})
}

// Garbage answers every request with HTTP 200, the given Content-Type (one
// of the remote-read types, so the client tries to decode it) and random
// bytes. The bytes are the same on every run.
func Garbage(t testing.TB, contentType string) *Fault {
	t.Helper()
	body := make([]byte, 8<<10)
	rng := rand.New(rand.NewPCG(4, 2))
	for i := range body {
		body[i] = byte(rng.Uint32())
	}
	return serveFault(t, "garbage", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.Header().Set("Content-Encoding", "snappy")
		_, _ = w.Write(body)
	})
}

// WrongContentType answers every request with HTTP 200 and an HTML page, as
// a login portal or a misrouted ingress would.
func WrongContentType(t testing.TB) *Fault {
	t.Helper()
	return serveFault(t, "wrong-content-type", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, "<!DOCTYPE html><html><body><h1>Please sign in</h1></body></html>\n")
	})
}

// CloseMidStream passes every request on to the real Prometheus at upstream,
// but cuts each remote-read answer after afterBytes bytes of its body by
// closing the connection: the client sees a chunked stream without its end.
// Other requests (readiness, labels, series) pass whole, so the backend looks
// healthy and only its data is broken.
func CloseMidStream(t testing.TB, upstream string, afterBytes int) *Fault {
	t.Helper()
	transport := &http.Transport{DisableCompression: true}
	client := &http.Client{Transport: transport}
	t.Cleanup(transport.CloseIdleConnections)
	var f *Fault
	f = serveFault(t, "close-mid-stream", func(w http.ResponseWriter, r *http.Request) {
		req, err := http.NewRequestWithContext(r.Context(), r.Method, strings.TrimRight(upstream, "/")+r.URL.RequestURI(), r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		req.Header = r.Header.Clone()
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer func() { _ = resp.Body.Close() }()
		for k, vs := range resp.Header {
			if k != "Content-Length" { // the answer goes out chunked, and short
				w.Header()[k] = vs
			}
		}
		w.WriteHeader(resp.StatusCode)
		if r.URL.Path != "/api/v1/read" {
			_, _ = io.Copy(w, resp.Body)
			return
		}
		n, _ := io.CopyN(w, resp.Body, int64(afterBytes))
		if n < int64(afterBytes) {
			return // the whole answer was shorter than the cut
		}
		w.(http.Flusher).Flush()
		f.cuts.Add(1)
		// Closes the connection without the chunked stream's last chunk.
		panic(http.ErrAbortHandler)
	})
	return f
}

// serveFault starts an HTTP server on 127.0.0.1 running h for every request.
func serveFault(t testing.TB, kind string, h http.HandlerFunc) *Fault {
	t.Helper()
	f := &Fault{Kind: kind}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		h(w, r)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			f.open.Add(1)
		case http.StateClosed, http.StateHijacked:
			f.open.Add(-1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	f.Addr = strings.TrimPrefix(srv.URL, "http://")
	return f
}

// ClosedPort returns a URL on 127.0.0.1 where nothing listens: connections
// are refused at once, as with a crashed pod's address.
func ClosedPort(t testing.TB) string {
	t.Helper()
	return "http://127.0.0.1:" + strconv.Itoa(FreePort(t))
}

// WaitFor polls cond every 20 ms until it holds or timeout passes, and
// reports whether it held.
func WaitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// LeakCheck counts the goroutines now and returns a function that fails the
// test when, after up to 10 s for things to wind down, more than slack
// goroutines are left over. settle runs on every attempt (e.g. to close idle
// HTTP connections, whose reader goroutines would otherwise linger). Call
// the returned function after everything the test started was stopped.
func LeakCheck(t testing.TB, slack int, settle ...func()) func() {
	t.Helper()
	return leakCheck(t, slack, 10*time.Second, settle...)
}

func leakCheck(t testing.TB, slack int, wait time.Duration, settle ...func()) func() {
	t.Helper()
	before := runtime.NumGoroutine()
	return func() {
		t.Helper()
		var now int
		ok := WaitFor(wait, func() bool {
			for _, fn := range settle {
				fn()
			}
			now = runtime.NumGoroutine()
			return now <= before+slack
		})
		if !ok {
			t.Errorf("goroutine leak: %d goroutines before, %d after (slack %d)\n%s", before, now, slack, goroutineDump())
		} else {
			t.Logf("goroutines: %d before, %d after (slack %d)", before, now, slack)
		}
	}
}

// goroutineDump returns every goroutine's stack, those of the test framework
// and the runtime left out.
func goroutineDump() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out bytes.Buffer
	for g := range bytes.SplitSeq(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte("testing.(*T).Run(")) || bytes.Contains(g, []byte("e2eutil.goroutineDump(")) {
			continue
		}
		out.Write(g)
		out.WriteString("\n\n")
	}
	if out.Len() > 32<<10 {
		return out.String()[:32<<10] + "\n[...]"
	}
	return out.String()
}

// Eventually polls cond until it returns nil, failing the test with cond's
// last error when within has passed; it logs how long the wait took, since
// "how fast does X follow" is often what a test shows.
func Eventually(t testing.TB, within time.Duration, what string, cond func() error) {
	t.Helper()
	start := time.Now()
	for {
		err := cond()
		if err == nil {
			t.Logf("%s: after %v", what, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > within {
			t.Fatalf("%s: not within %v: %v", what, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// IgnoreLabelMatchers passes every request on to the real Prometheus at
// upstream, but drops match[] from label-name and label-value calls, as a
// backend too old to honour it there does: it answers the names and values
// of every series it holds.
func IgnoreLabelMatchers(t testing.TB, upstream string) *Fault {
	t.Helper()
	transport := &http.Transport{}
	client := &http.Client{Transport: transport}
	t.Cleanup(transport.CloseIdleConnections)
	return serveFault(t, "ignore-label-matchers", func(w http.ResponseWriter, r *http.Request) {
		target := strings.TrimRight(upstream, "/") + r.URL.RequestURI()
		var body io.Reader = r.Body
		contentType := r.Header.Get("Content-Type")
		if p := r.URL.Path; p == "/api/v1/labels" || (strings.HasPrefix(p, "/api/v1/label/") && strings.HasSuffix(p, "/values")) {
			if err := r.ParseForm(); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.Form.Del("match[]")
			// Label values are served over GET only.
			target = strings.TrimRight(upstream, "/") + p + "?" + r.Form.Encode()
			body, contentType = nil, ""
			r.Method = http.MethodGet
		}
		req, err := http.NewRequestWithContext(r.Context(), r.Method, target, body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		req.Header = r.Header.Clone()
		req.Header.Del("Content-Length")
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer func() { _ = resp.Body.Close() }()
		for k, vs := range resp.Header {
			w.Header()[k] = vs
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	})
}
