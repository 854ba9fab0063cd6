package e2eutil

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestFaults(t *testing.T) {
	transport := &http.Transport{}
	client := &http.Client{Transport: transport}
	checkLeaks := LeakCheck(t, 0, transport.CloseIdleConnections)

	t.Run("Hang", func(t *testing.T) {
		f := Hang(t)
		c := &http.Client{Transport: transport, Timeout: 300 * time.Millisecond}
		start := time.Now()
		time.AfterFunc(150*time.Millisecond, func() {
			if n := f.OpenConnsTo("/-/ready"); n != 1 {
				t.Errorf("while the client waits: %d open connections to /-/ready, want 1", n)
			}
		})
		_, err := c.Get(f.URL + "/-/ready?x=1")
		if err == nil || time.Since(start) < 250*time.Millisecond {
			t.Fatalf("GET answered (%v) after %v, want a timeout", err, time.Since(start))
		}
		if f.Requests() != 1 {
			t.Errorf("Requests() = %d, want 1", f.Requests())
		}
		if !WaitFor(2*time.Second, func() bool { return f.OpenConns() == 0 && f.OpenConnsTo("/-/ready") == 0 }) {
			t.Errorf("the client gave up but the fault still counts %d open connections (%d to /-/ready)", f.OpenConns(), f.OpenConnsTo("/-/ready"))
		}
	})

	t.Run("Status500", func(t *testing.T) {
		f := Status500(t)
		code, _, body := get(t, client, f.URL+"/api/v1/read")
		if code != http.StatusInternalServerError || !strings.Contains(body, "injected") {
			t.Errorf("HTTP %d %q", code, body)
		}
	})

	t.Run("Garbage", func(t *testing.T) {
		f := Garbage(t, ContentTypeChunked)
		code, ct, body := get(t, client, f.URL+"/api/v1/read")
		if code != http.StatusOK || ct != ContentTypeChunked || len(body) != 8<<10 {
			t.Errorf("HTTP %d, %q, %d bytes", code, ct, len(body))
		}
		_, _, again := get(t, client, f.URL+"/api/v1/read")
		if again != body {
			t.Error("garbage differs between answers; it must be the same on every run")
		}
	})

	t.Run("WrongContentType", func(t *testing.T) {
		f := WrongContentType(t)
		code, ct, _ := get(t, client, f.URL+"/api/v1/read")
		if code != http.StatusOK || !strings.HasPrefix(ct, "text/html") {
			t.Errorf("HTTP %d, %q", code, ct)
		}
	})

	t.Run("CloseMidStream", func(t *testing.T) {
		payload := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
		upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", ContentTypeChunked)
			for rest := payload; len(rest) > 0; rest = rest[min(1000, len(rest)):] {
				_, _ = w.Write(rest[:min(1000, len(rest))])
				w.(http.Flusher).Flush()
			}
		}))
		t.Cleanup(upstream.Close)
		t.Cleanup(upstream.CloseClientConnections)
		f := CloseMidStream(t, upstream.URL, 5000)

		resp, err := client.Post(f.URL+"/api/v1/read", ContentTypeSamples, strings.NewReader("request"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("reading the cut answer: err = %v, want unexpected EOF", err)
		}
		if len(got) != 5000 || !bytes.Equal(got, payload[:5000]) {
			t.Errorf("got %d bytes before the cut, want the first 5000 of the upstream answer", len(got))
		}
		if ct := resp.Header.Get("Content-Type"); ct != ContentTypeChunked {
			t.Errorf("Content-Type %q not passed on", ct)
		}
		if f.Cuts() != 1 {
			t.Errorf("Cuts() = %d, want 1", f.Cuts())
		}
		// Anything but remote read passes whole.
		code, _, body := get(t, client, f.URL+"/-/ready")
		if code != http.StatusOK || body != string(payload) {
			t.Errorf("/-/ready through the fault: HTTP %d, %d bytes, want the whole upstream answer", code, len(body))
		}
	})

	t.Run("ClosedPort", func(t *testing.T) {
		_, err := client.Get(ClosedPort(t) + "/-/ready")
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("err = %v, want connection refused", err)
		}
	})

	checkLeaks()
}

func get(t *testing.T, c *http.Client, url string) (code int, contentType, body string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

// leakRecorder catches what LeakCheck reports.
type leakRecorder struct {
	testing.TB
	errors []string
}

func (r *leakRecorder) Errorf(format string, args ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}
func (*leakRecorder) Logf(string, ...any) {}

// TestLeakCheckCatchesLeaks is the leak check's negative control.
func TestLeakCheckCatchesLeaks(t *testing.T) {
	rec := &leakRecorder{TB: t}
	check := leakCheck(rec, 1, 200*time.Millisecond)
	stop := make(chan struct{})
	for range 3 {
		go func() { <-stop }()
	}
	check()
	close(stop)
	if len(rec.errors) != 1 || !strings.Contains(rec.errors[0], "goroutine leak") || !strings.Contains(rec.errors[0], "TestLeakCheckCatchesLeaks") {
		t.Errorf("three parked goroutines with slack 1 were not reported with their stacks: %q", rec.errors)
	}
}
