package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	promremote "github.com/prometheus/prometheus/storage/remote"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

func testClient(t *testing.T, url string) *Client {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Timeout = model.Duration(300 * time.Millisecond)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	c, err := New(url, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

var upSets = [][]*labels.Matcher{{labels.MustNewMatcher(labels.MatchEqual, "__name__", "up")}}

func read(c *Client) (int, error) {
	ss, err := c.Read(context.Background(), 0, 1000, nil, upSets)
	if err != nil {
		return 0, err
	}
	n := 0
	for ss.Next() {
		n++
	}
	return n, ss.Err()
}

// TestFaultsAreNamed checks that each way a backend can fail is an error
// naming the backend and the fault, for remote read and the HTTP API alike.
func TestFaultsAreNamed(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start func(t *testing.T) string
		read  string // in the remote-read error
		api   string // in the label-names error
	}{
		{"hang", func(t *testing.T) string { return e2eutil.Hang(t).URL }, "request timed out after 300ms", "request timed out after 300ms"},
		{"status 500", func(t *testing.T) string { return e2eutil.Status500(t).URL }, "status 500", "HTTP 500"},
		{"garbage samples", func(t *testing.T) string { return e2eutil.Garbage(t, e2eutil.ContentTypeSamples).URL }, "snappy", "malformed backend response"},
		{"garbage stream", func(t *testing.T) string { return e2eutil.Garbage(t, e2eutil.ContentTypeChunked).URL }, "chunked", "malformed backend response"},
		{"wrong content type", func(t *testing.T) string { return e2eutil.WrongContentType(t).URL }, "unsupported content type: text/html", `content type "text/html`},
		{"closed port", func(t *testing.T) string { return e2eutil.ClosedPort(t) }, "connection refused", "connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := tc.start(t)
			c := testClient(t, url)
			start := time.Now()
			n, err := read(c)
			if err == nil || !strings.Contains(err.Error(), "backend "+url) || !strings.Contains(err.Error(), tc.read) {
				t.Errorf("Read: %d series, err = %v; want an error naming %s and %q", n, err, url, tc.read)
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("Read took %v with a 300ms timeout", took)
			}
			_, _, err = c.LabelNames(context.Background(), 0, 1000, nil, 0)
			if err == nil || !strings.Contains(err.Error(), "backend "+url) || !strings.Contains(err.Error(), tc.api) {
				t.Errorf("LabelNames: err = %v; want an error naming %s and %q", err, url, tc.api)
			}
		})
	}
}

// chunkedStream is a valid streamed remote-read answer of n series, and the
// offsets where its frames end.
func chunkedStream(t *testing.T, n int) ([]byte, []int) {
	t.Helper()
	var buf bytes.Buffer
	w := promremote.NewChunkedWriter(&buf, nopFlusher{})
	var ends []int
	for i := range n {
		c := chunkenc.NewXORChunk()
		app, err := c.Appender()
		if err != nil {
			t.Fatal(err)
		}
		for ts := int64(0); ts < 1000; ts += 100 {
			app.Append(0, ts, float64(i))
		}
		frame := &prompb.ChunkedReadResponse{ChunkedSeries: []*prompb.ChunkedSeries{{
			Labels: []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "i", Value: fmt.Sprintf("%03d", i)}},
			Chunks: []prompb.Chunk{{MinTimeMs: 0, MaxTimeMs: 900, Type: prompb.Chunk_XOR, Data: c.Bytes()}},
		}}}
		b, err := frame.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(b); err != nil {
			t.Fatal(err)
		}
		ends = append(ends, buf.Len())
	}
	return buf.Bytes(), ends
}

type nopFlusher struct{}

func (nopFlusher) Flush() {}

func serveStream(t *testing.T, stream []byte) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", e2eutil.ContentTypeChunked)
		_, _ = w.Write(stream)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestCutStreamIsAnError cuts a streamed answer at and around every frame
// boundary: a stream that ends early must never read as a shorter answer.
func TestCutStreamIsAnError(t *testing.T) {
	stream, ends := chunkedStream(t, 5)
	upstream := serveStream(t, stream)
	if n, err := read(testClient(t, upstream)); err != nil || n != 5 {
		t.Fatalf("whole stream: %d series, %v; want 5", n, err)
	}
	var cuts []int
	for _, e := range ends[:len(ends)-1] {
		cuts = append(cuts, e-1, e, e+1)
	}
	cuts = append(cuts, 1, len(stream)-1)
	for _, at := range cuts {
		f := e2eutil.CloseMidStream(t, upstream, at)
		n, err := read(testClient(t, f.URL))
		if err == nil || !strings.Contains(err.Error(), "backend "+f.URL) || !strings.Contains(err.Error(), "unexpected EOF") {
			t.Errorf("stream cut after %d of %d bytes: %d series, err = %v; want an unexpected EOF naming the backend", at, len(stream), n, err)
		}
		if f.Cuts() != 1 {
			t.Errorf("cut after %d bytes: the fault cut %d answers, want 1", at, f.Cuts())
		}
	}
}

// TestFrameWithoutSeries: every frame holds a series; a frame without one
// must be an error, not a crash.
func TestFrameWithoutSeries(t *testing.T) {
	stream, _ := chunkedStream(t, 2)
	var buf bytes.Buffer
	buf.Write(stream)
	empty, err := (&prompb.ChunkedReadResponse{QueryIndex: 1}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := promremote.NewChunkedWriter(&buf, nopFlusher{}).Write(empty); err != nil {
		t.Fatal(err)
	}
	url := serveStream(t, buf.Bytes())
	n, err := read(testClient(t, url))
	if !errors.Is(err, ErrBadResponse) || !strings.Contains(err.Error(), "backend "+url) {
		t.Errorf("%d series, err = %v; want a malformed-response error naming the backend", n, err)
	}
}

// TestCloseReleasesConnections: after Close no kept-alive connection of the
// client is left, for remote read and API calls alike.
func TestCloseReleasesConnections(t *testing.T) {
	stream, _ := chunkedStream(t, 3)
	f := e2eutil.CloseMidStream(t, serveStream(t, stream), 1<<20) // passes everything
	c := testClient(t, f.URL)
	if n, err := read(c); err != nil || n != 3 {
		t.Fatalf("read: %d series, %v", n, err)
	}
	_ = c.Ready(context.Background())
	if f.OpenConns() == 0 {
		t.Fatal("no kept-alive connection to release: the test proves nothing")
	}
	c.Close()
	if !e2eutil.WaitFor(2*time.Second, func() bool { return f.OpenConns() == 0 }) {
		t.Errorf("%d connections still open after Close", f.OpenConns())
	}
}
