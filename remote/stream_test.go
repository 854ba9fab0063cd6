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

	"github.com/prometheus/prometheus/prompb"
	promremote "github.com/prometheus/prometheus/storage/remote"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

// frame is one streamed frame of series i holding samples [from, to) step 10.
func frame(t *testing.T, i int, from, to int64) []byte {
	t.Helper()
	c := chunkenc.NewXORChunk()
	app, err := c.Appender()
	if err != nil {
		t.Fatal(err)
	}
	for ts := from; ts < to; ts += 10 {
		app.Append(0, ts, float64(ts))
	}
	b, err := (&prompb.ChunkedReadResponse{ChunkedSeries: []*prompb.ChunkedSeries{{
		Labels: []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "i", Value: fmt.Sprintf("%03d", i)}},
		Chunks: []prompb.Chunk{{MinTimeMs: from, MaxTimeMs: to - 10, Type: prompb.Chunk_XOR, Data: c.Bytes()}},
	}}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := promremote.NewChunkedWriter(&buf, nopFlusher{}).Write(b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestStreamHandsOnBeforeTheEnd: the backend sends two series and then
// stalls without ending its answer. Read must return the first series
// while the answer is still open (a read that waited for the whole body
// would time out instead), and the stall then ends the set with an error
// saying how far the answer got — never as a shorter answer.
func TestStreamHandsOnBeforeTheEnd(t *testing.T) {
	release := make(chan struct{})
	sent := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", e2eutil.ContentTypeChunked)
		_, _ = w.Write(frame(t, 0, 0, 500))
		_, _ = w.Write(frame(t, 1, 0, 500))
		w.(http.Flusher).Flush()
		close(sent)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	c := testClient(t, srv.URL) // 300ms timeout for the whole call
	start := time.Now()
	ss, err := c.Read(context.Background(), 0, 1000, nil, upSets)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	<-sent
	if !ss.Next() || ss.At().Labels().Get("i") != "000" {
		t.Fatalf("first series not handed on while the answer was open (err %v)", ss.Err())
	}
	if took := time.Since(start); took >= 300*time.Millisecond {
		t.Errorf("first series after %v: the answer was waited for", took)
	}
	// The second series is complete only when the next frame (or the end)
	// arrives: the stall keeps it back, and the call's deadline ends it.
	n := 1
	for ss.Next() {
		n++
	}
	err = ss.Err()
	if !errors.Is(err, ErrStreamBroken) || !strings.Contains(err.Error(), "after 1 series") ||
		!strings.Contains(err.Error(), "backend "+srv.URL) || !strings.Contains(err.Error(), "timed out after 300ms") {
		t.Errorf("%d series, err = %v; want a broken-stream error after 1 series naming the backend and the timeout", n, err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the stalled answer took %v to fail with a 300ms timeout", took)
	}
}

// TestLongSeriesSpansFrames: frames that repeat a series' labels are one
// series with every sample, in order.
func TestLongSeriesSpansFrames(t *testing.T) {
	var buf bytes.Buffer
	buf.Write(frame(t, 0, 0, 300))
	buf.Write(frame(t, 0, 300, 600))
	buf.Write(frame(t, 0, 600, 1000))
	buf.Write(frame(t, 1, 0, 100))
	c := testClient(t, serveStream(t, buf.Bytes()))
	ss, err := c.Read(context.Background(), 0, 1000, nil, upSets)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for ss.Next() {
		s := ss.At()
		n, last := 0, int64(-1)
		it := s.Iterator(nil)
		for it.Next() == chunkenc.ValFloat {
			ts, _ := it.At()
			if ts <= last {
				t.Errorf("%s: sample %d after %d", s.Labels(), ts, last)
			}
			n, last = n+1, ts
		}
		got = append(got, fmt.Sprintf("%s:%d", s.Labels().Get("i"), n))
	}
	if err := ss.Err(); err != nil {
		t.Fatal(err)
	}
	if want := "000:100 001:10"; strings.Join(got, " ") != want {
		t.Errorf("got %v, want %s", got, want)
	}
}

// TestBreakBeforeFirstSeriesFailsRead: a cut inside the first series (which
// spans two frames) is an error of Read itself, so the caller can still
// fail over; a cut after it is an error of the set. A series is handed on
// only once the frame after it has arrived whole (it might have continued
// the series), so a cut in the third series stops after the first.
func TestBreakBeforeFirstSeriesFailsRead(t *testing.T) {
	var buf bytes.Buffer
	buf.Write(frame(t, 0, 0, 500))
	firstFrame := buf.Len()
	buf.Write(frame(t, 0, 500, 1000))
	buf.Write(frame(t, 1, 0, 500))
	secondSeries := buf.Len()
	buf.Write(frame(t, 2, 0, 500))
	upstream := serveStream(t, buf.Bytes())

	cut := e2eutil.CloseMidStream(t, upstream, firstFrame+3)
	if _, err := testClient(t, cut.URL).Read(context.Background(), 0, 1000, nil, upSets); err == nil || errors.Is(err, ErrStreamBroken) || !strings.Contains(err.Error(), "unexpected EOF") {
		t.Errorf("cut in the first series: Read err = %v; want unexpected EOF from Read, not a broken stream", err)
	}
	cut = e2eutil.CloseMidStream(t, upstream, secondSeries+3)
	ss, err := testClient(t, cut.URL).Read(context.Background(), 0, 1000, nil, upSets)
	if err != nil {
		t.Fatalf("cut in the third series: Read err = %v; want the first series", err)
	}
	n := 0
	for ss.Next() {
		n++
	}
	if err := ss.Err(); n != 1 || !errors.Is(err, ErrStreamBroken) || !strings.Contains(err.Error(), "after 1 series") {
		t.Errorf("cut in the third series: %d series, err = %v; want 1 then a broken stream after 1 series", n, err)
	}
}

// TestStreamHandsOnInBatches: after the first series, a stream hands on
// whole batches. Every series of a long answer arrives once and in order;
// a cut inside the third batch ends the set after the first series and
// the first full batch, as a broken stream: the series decoded after those
// never reached the reader.
func TestStreamHandsOnInBatches(t *testing.T) {
	n := 2*streamBatch + 5
	var buf bytes.Buffer
	var cutAt int
	for i := range n {
		if i == 1+streamBatch+streamBatch/2 {
			cutAt = buf.Len() + 3
		}
		buf.Write(frame(t, i, 0, 100))
	}
	upstream := serveStream(t, buf.Bytes())
	ss, err := testClient(t, upstream).Read(context.Background(), 0, 1000, nil, upSets)
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for ss.Next() {
		if want := fmt.Sprintf("%03d", got); ss.At().Labels().Get("i") != want {
			t.Fatalf("series %d is i=%s, want i=%s", got, ss.At().Labels().Get("i"), want)
		}
		got++
	}
	if err := ss.Err(); err != nil || got != n {
		t.Fatalf("%d of %d series, err %v", got, n, err)
	}

	cut := e2eutil.CloseMidStream(t, upstream, cutAt)
	ss, err = testClient(t, cut.URL).Read(context.Background(), 0, 1000, nil, upSets)
	if err != nil {
		t.Fatal(err)
	}
	got = 0
	for ss.Next() {
		got++
	}
	handed := fmt.Sprintf("after %d series", 1+streamBatch)
	if err := ss.Err(); got != 1+streamBatch || !errors.Is(err, ErrStreamBroken) || !strings.Contains(err.Error(), handed) {
		t.Errorf("cut in the third batch: %d series, err = %v; want %d then a broken stream %s", got, err, 1+streamBatch, handed)
	}
}

// TestUnsortedAnswerIsAnError: a backend that does not sort its streamed
// answer (Prometheus adds external labels after sorting, so a series
// storing an external label's name sorts elsewhere) cannot be merged as
// it streams; that is an error, not a wrong answer, and the client reads
// that backend's answers whole from then on, sorted by the proxy.
func TestUnsortedAnswerIsAnError(t *testing.T) {
	var buf bytes.Buffer
	buf.Write(frame(t, 1, 0, 100))
	buf.Write(frame(t, 0, 0, 100))
	c := testClient(t, serveStream(t, buf.Bytes()))
	ss, err := c.Read(context.Background(), 0, 1000, nil, upSets)
	if err != nil {
		t.Fatal(err)
	}
	if _, streamed := ss.(interface{ Close() }); !streamed {
		t.Fatal("the first read was not streamed")
	}
	for ss.Next() {
	}
	if err := ss.Err(); !errors.Is(err, ErrBadResponse) || !errors.Is(err, ErrUnsortedAnswer) {
		t.Errorf("err = %v; want a malformed-response error saying the answer is not sorted", err)
	}
	ss, err = c.Read(context.Background(), 0, 1000, nil, upSets)
	if err != nil {
		t.Fatal(err)
	}
	if _, streamed := ss.(interface{ Close() }); streamed {
		t.Fatal("read streamed again after an unsorted answer")
	}
	var got []string
	for ss.Next() {
		got = append(got, ss.At().Labels().String())
	}
	if err := ss.Err(); err != nil || len(got) != 2 || got[0] >= got[1] {
		t.Errorf("whole read: %v, err %v; want two series in label order", got, err)
	}
}

// TestAbandonedStreamLetsGo: a reader that stops after one series and
// cancels leaves no connection behind (the stream itself runs no
// goroutine; the transport's end with the connection).
func TestAbandonedStreamLetsGo(t *testing.T) {
	var buf bytes.Buffer
	for i := range 200 {
		buf.Write(frame(t, i, 0, 1000))
	}
	f := e2eutil.CloseMidStream(t, serveStream(t, buf.Bytes()), 1<<30) // passes everything
	c := testClient(t, f.URL)
	ctx, cancel := context.WithCancel(context.Background())
	ss, err := c.Read(ctx, 0, 1000, nil, upSets)
	if err != nil || !ss.Next() {
		t.Fatalf("Read: %v", err)
	}
	cancel()
	c.Close()
	if !e2eutil.WaitFor(2*time.Second, func() bool { return f.OpenConns() == 0 }) {
		t.Errorf("%d connections still open after the reader gave up", f.OpenConns())
	}
}

// TestReaderTimeIsNotTheBackends: a reader that pauses for longer than the
// backend timeout between series (the engine busy with a slower group)
// still gets the whole answer: only waits on the backend count.
func TestReaderTimeIsNotTheBackends(t *testing.T) {
	var buf bytes.Buffer
	for i := range 300 {
		buf.Write(frame(t, i, 0, 1000))
	}
	c := testClient(t, serveStream(t, buf.Bytes())) // 300ms timeout
	ss, err := c.Read(context.Background(), 0, 1000, nil, upSets)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for ss.Next() {
		if n++; n == 1 {
			time.Sleep(700 * time.Millisecond)
		}
	}
	if err := ss.Err(); err != nil || n != 300 {
		t.Errorf("%d series, err %v; want all 300 after the reader's pause", n, err)
	}
}
