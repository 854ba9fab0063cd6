package remote

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage"
	promremote "github.com/prometheus/prometheus/storage/remote"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/tsdbutil"
)

// randomStream is a streamed answer of random series: each of one to four
// chunks of floats, integer histograms or float histograms (one encoding a
// series, as Prometheus stores a series' samples of one kind in a row),
// samples at random gaps, sometimes a series across several frames and,
// if packed, several series in one frame.
func randomStream(t testing.TB, rng *rand.Rand, series int, packed bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := promremote.NewChunkedWriter(&buf, nopFlusher{})
	var pending []*prompb.ChunkedSeries
	flush := func() {
		if len(pending) == 0 {
			return
		}
		b, err := (&prompb.ChunkedReadResponse{ChunkedSeries: pending, QueryIndex: 0}).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(b); err != nil {
			t.Fatal(err)
		}
		pending = nil
	}
	for i := range series {
		kind := rng.IntN(3)
		ts := int64(1000 + rng.IntN(50))
		var chunks []prompb.Chunk
		for range 1 + rng.IntN(4) {
			var c chunkenc.Chunk
			switch kind {
			case 0:
				c = chunkenc.NewXORChunk()
			case 1:
				c = chunkenc.NewHistogramChunk()
			default:
				c = chunkenc.NewFloatHistogramChunk()
			}
			app, err := c.Appender()
			if err != nil {
				t.Fatal(err)
			}
			first := ts
			n := 1 + rng.IntN(30)
			for j := range n {
				if j > 0 {
					ts += int64(1 + rng.IntN(40))
				}
				switch kind {
				case 0:
					app.Append(0, ts, rng.NormFloat64()*100)
				case 1:
					_, _, app, err = app.AppendHistogram(nil, 0, ts, tsdbutil.GenerateTestHistogram(int64(j)), true)
				default:
					_, _, app, err = app.AppendFloatHistogram(nil, 0, ts, tsdbutil.GenerateTestFloatHistogram(int64(j)), true)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			chunks = append(chunks, prompb.Chunk{MinTimeMs: first, MaxTimeMs: ts, Type: prompb.Chunk_Encoding(c.Encoding()), Data: c.Bytes()})
			ts += int64(1 + rng.IntN(40))
		}
		lbls := []prompb.Label{{Name: "__name__", Value: "m"}, {Name: "i", Value: fmt.Sprintf("%04d", i)}, {Name: "kind", Value: fmt.Sprint(kind)}}
		if len(chunks) > 1 && rng.IntN(3) == 0 {
			// The series across two frames, each repeating its labels.
			cut := 1 + rng.IntN(len(chunks)-1)
			pending = append(pending, &prompb.ChunkedSeries{Labels: lbls, Chunks: chunks[:cut]})
			flush()
			pending = append(pending, &prompb.ChunkedSeries{Labels: lbls, Chunks: chunks[cut:]})
		} else {
			pending = append(pending, &prompb.ChunkedSeries{Labels: lbls, Chunks: chunks})
		}
		if rng.IntN(4) != 0 || !packed {
			flush()
		}
	}
	flush()
	return buf.Bytes()
}

// step is one call on an iterator and what it saw.
func step(it chunkenc.Iterator, op int, t int64) string {
	var vt chunkenc.ValueType
	if op == 0 {
		vt = it.Next()
	} else {
		vt = it.Seek(t)
	}
	switch vt {
	case chunkenc.ValFloat:
		ts, v := it.At()
		return fmt.Sprintf("float %d %v", ts, v)
	case chunkenc.ValHistogram:
		ts, h := it.AtHistogram(nil)
		return fmt.Sprintf("histogram %d %s", ts, h)
	case chunkenc.ValFloatHistogram:
		ts, fh := it.AtFloatHistogram(nil)
		return fmt.Sprintf("floathistogram %d %s", ts, fh)
	}
	return "none"
}

// TestFramesReadAsTheLibraryReadsThem decodes random streamed answers with
// frameSet and with Prometheus' own decoder (each frame's series as one
// series, the frames of a long series merged), clipped to random windows,
// and walks every series of both with the same random Next and Seek calls:
// labels, value types, timestamps and values must be the same. The
// library's series are read once with Next and walked as lists: its Seek
// stops at the end of a chunk whose samples all precede the window, where
// the next chunk may hold the sample sought.
func TestFramesReadAsTheLibraryReadsThem(t *testing.T) {
	rng := rand.New(rand.NewPCG(20261206, 1))
	for round := range 200 {
		stream := randomStream(t, rng, 1+rng.IntN(20), false)
		mint := int64(900 + rng.IntN(600))
		maxt := mint + int64(rng.IntN(3000))
		lib := promremote.NewChunkedSeriesSet(promremote.NewChunkedReader(bytes.NewReader(stream), 1<<20, nil), io.NopCloser(nil), mint, maxt, func(error) {})
		want := asLists(t, mergeFrames(t, lib))
		got := mergeFrames(t, &frameSet{r: promremote.NewChunkedReader(bytes.NewReader(stream), 1<<20, nil), body: io.NopCloser(nil), mint: mint, maxt: maxt})
		if len(got) != len(want) {
			t.Fatalf("round %d: %d series, want %d", round, len(got), len(want))
		}
		var reuse chunkenc.Iterator
		for i := range want {
			if got[i].Labels().String() != want[i].Labels().String() {
				t.Fatalf("round %d: series %d is %s, want %s", round, i, got[i].Labels(), want[i].Labels())
			}
			a, b := want[i].Iterator(nil), got[i].Iterator(reuse)
			reuse = b
			for n := 0; n < 80; n++ {
				op, ts := rng.IntN(3), mint-50+int64(rng.IntN(int(maxt-mint)+100))
				if op > 1 {
					op = 0
				}
				if w, g := step(a, op, ts), step(b, op, ts); w != g {
					t.Fatalf("round %d, %s [%d, %d], call %d (op %d, t %d): got %q, want %q", round, want[i].Labels(), mint, maxt, n, op, ts, g, w)
				}
			}
			if b.Err() != nil {
				t.Fatalf("round %d: %v", round, b.Err())
			}
		}
	}
}

// asLists reads each series' samples with Next into a list series.
func asLists(t *testing.T, ss []storage.Series) []storage.Series {
	t.Helper()
	out := make([]storage.Series, len(ss))
	for i, s := range ss {
		var samples []chunks.Sample
		it := s.Iterator(nil)
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			switch vt {
			case chunkenc.ValFloat:
				ts, v := it.At()
				samples = append(samples, testSample{t: ts, f: v})
			case chunkenc.ValHistogram:
				ts, h := it.AtHistogram(nil)
				samples = append(samples, testSample{t: ts, h: h})
			case chunkenc.ValFloatHistogram:
				ts, fh := it.AtFloatHistogram(nil)
				samples = append(samples, testSample{t: ts, fh: fh})
			}
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		out[i] = storage.NewListSeries(s.Labels(), samples)
	}
	return out
}

type testSample struct {
	t  int64
	f  float64
	h  *histogram.Histogram
	fh *histogram.FloatHistogram
}

func (s testSample) T() int64                      { return s.t }
func (testSample) ST() int64                       { return 0 }
func (s testSample) F() float64                    { return s.f }
func (s testSample) H() *histogram.Histogram       { return s.h }
func (s testSample) FH() *histogram.FloatHistogram { return s.fh }
func (s testSample) Copy() chunks.Sample           { return s }
func (s testSample) Type() chunkenc.ValueType {
	switch {
	case s.h != nil:
		return chunkenc.ValHistogram
	case s.fh != nil:
		return chunkenc.ValFloatHistogram
	}
	return chunkenc.ValFloat
}

// TestFramesHoldingSeveralSeries: Prometheus writes one series a frame, but
// the format allows several; each is handed on, in order.
func TestFramesHoldingSeveralSeries(t *testing.T) {
	for seed := range uint64(50) {
		one := randomStream(t, rand.New(rand.NewPCG(seed, 2)), 12, false)
		packed := randomStream(t, rand.New(rand.NewPCG(seed, 2)), 12, true)
		read := func(stream []byte) string {
			var b bytes.Buffer
			for _, s := range mergeFrames(t, &frameSet{r: promremote.NewChunkedReader(bytes.NewReader(stream), 1<<20, nil), body: io.NopCloser(nil), mint: 0, maxt: 1 << 40}) {
				fmt.Fprintln(&b, s.Labels())
				it := s.Iterator(nil)
				for {
					st := step(it, 0, 0)
					fmt.Fprintln(&b, st)
					if st == "none" {
						break
					}
				}
			}
			return b.String()
		}
		if w, g := read(one), read(packed); w != g || len(w) < 100 {
			t.Fatalf("seed %d: several series a frame read as\n%s\nwant\n%s", seed, g, w)
		}
	}
}

// mergeFrames reads a set the way producer hands it on: consecutive frames
// of one series made one.
func mergeFrames(t *testing.T, ss storage.SeriesSet) []storage.Series {
	t.Helper()
	var out []storage.Series
	var parts []storage.Series
	end := func() {
		if len(parts) == 0 {
			return
		}
		if len(parts) == 1 {
			out = append(out, parts[0])
		} else if joined, ok := joinFrames(parts); ok {
			out = append(out, joined)
		} else {
			out = append(out, storage.ChainedSeriesMerge(parts...))
		}
		parts = nil
	}
	for ss.Next() {
		s := ss.At()
		if len(parts) > 0 && s.Labels().String() != parts[0].Labels().String() {
			end()
		}
		parts = append(parts, s)
	}
	end()
	if err := ss.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestJoinFramesOnlyInOrder: frames of one series are joined only where
// their chunks follow one another; overlapping ones are left to the
// sample-by-sample merge, which drops the repeated samples.
func TestJoinFramesOnlyInOrder(t *testing.T) {
	frames := func(spans ...[2]int64) []storage.Series {
		var buf bytes.Buffer
		for _, s := range spans {
			buf.Write(frame(t, 0, s[0], s[1]))
		}
		return mergeFramesParts(t, buf.Bytes())
	}
	if _, ok := joinFrames(frames([2]int64{0, 300}, [2]int64{300, 600})); !ok {
		t.Error("frames in order not joined")
	}
	overlapping := frames([2]int64{0, 300}, [2]int64{200, 600})
	if _, ok := joinFrames(overlapping); ok {
		t.Fatal("overlapping frames joined")
	}
	n := 0
	it := storage.ChainedSeriesMerge(overlapping...).Iterator(nil)
	for it.Next() == chunkenc.ValFloat {
		n++
	}
	if n != 60 {
		t.Errorf("merged overlapping frames: %d samples, want 60", n)
	}
}

func mergeFramesParts(t *testing.T, stream []byte) []storage.Series {
	t.Helper()
	ss := &frameSet{r: promremote.NewChunkedReader(bytes.NewReader(stream), 1<<20, nil), body: io.NopCloser(nil), mint: 0, maxt: 10_000}
	var out []storage.Series
	for ss.Next() {
		out = append(out, ss.At())
	}
	if err := ss.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestBrokenFramesAreErrors mangles the protobuf inside frames whose
// checksums still hold (a backend's bug, or a hostile one): every frame is
// decoded to an ErrBadResponse or to series, never a panic, and what is
// decoded iterates without one.
func TestBrokenFramesAreErrors(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	good, _ := chunkedStream(t, 1)
	body := frameBody(t, good)
	errs := 0
	for range 5000 {
		b := bytes.Clone(body)
		switch rng.IntN(3) {
		case 0:
			b = b[:rng.IntN(len(b))]
		case 1:
			for range 1 + rng.IntN(4) {
				b[rng.IntN(len(b))] = byte(rng.IntN(256))
			}
		default:
			b = append(b[:rng.IntN(len(b))], byte(rng.IntN(256)), byte(rng.IntN(256)))
		}
		s := &frameSet{}
		got, err := s.decodeFrame(b, nil)
		if err != nil {
			if !errors.Is(err, ErrBadResponse) {
				t.Fatalf("frame %x: %v, want an ErrBadResponse", b, err)
			}
			errs++
			continue
		}
		for _, cs := range got {
			it := cs.Iterator(nil)
			for it.Next() != chunkenc.ValNone {
			}
			_ = it.Err()
		}
	}
	if errs == 0 {
		t.Error("no mangled frame was an error")
	}
}

// frameBody is the protobuf of the first frame of a stream.
func frameBody(t *testing.T, stream []byte) []byte {
	t.Helper()
	b, err := promremote.NewChunkedReader(bytes.NewReader(stream), 1<<20, nil).Next()
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(b)
}

// BenchmarkDecodeFrames decodes a streamed answer of 500 series of two
// hours every 15 s and reads every sample, with the library's decoder (the
// baseline) and with frameSet; decoded/library is the ratio of their times.
func BenchmarkDecodeFrames(b *testing.B) {
	var buf bytes.Buffer
	w := promremote.NewChunkedWriter(&buf, nopFlusher{})
	for i := range 500 {
		var chunks []prompb.Chunk
		for c := range 4 {
			chk := chunkenc.NewXORChunk()
			app, _ := chk.Appender()
			first := int64(c) * 120 * 15_000
			for j := range 120 {
				app.Append(0, first+int64(j)*15_000, float64((i*31+j*7)%1009))
			}
			chunks = append(chunks, prompb.Chunk{MinTimeMs: first, MaxTimeMs: first + 119*15_000, Type: prompb.Chunk_XOR, Data: chk.Bytes()})
		}
		frame, err := (&prompb.ChunkedReadResponse{ChunkedSeries: []*prompb.ChunkedSeries{{
			Labels: []prompb.Label{{Name: "__name__", Value: "http_requests_total"}, {Name: "instance", Value: fmt.Sprintf("10.0.%d.%d:8080", i/250, i%250)}, {Name: "job", Value: "api"}, {Name: "namespace", Value: fmt.Sprintf("team-%d", i%7)}, {Name: "pod", Value: fmt.Sprintf("api-%04d", i)}},
			Chunks: chunks,
		}}}).Marshal()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := w.Write(frame); err != nil {
			b.Fatal(err)
		}
	}
	stream := buf.Bytes()
	const mint, maxt = 60_000, 2*3600_000 - 60_000
	read := func(ss storage.SeriesSet) {
		var it chunkenc.Iterator
		n := 0
		for ss.Next() {
			s := ss.At()
			_ = s.Labels()
			it = s.Iterator(it)
			for it.Next() != chunkenc.ValNone {
				n++
			}
		}
		if ss.Err() != nil || n != 500*(480-7) {
			b.Fatalf("%d samples, %v", n, ss.Err())
		}
	}
	var library, decoded float64
	b.Run("decoder=library", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			read(promremote.NewChunkedSeriesSet(promremote.NewChunkedReader(bytes.NewReader(stream), 1<<20, nil), io.NopCloser(nil), mint, maxt, func(error) {}))
		}
		library = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	})
	b.Run("decoder=frames", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			read(&frameSet{r: promremote.NewChunkedReader(bytes.NewReader(stream), 1<<20, nil), body: io.NopCloser(nil), mint: mint, maxt: maxt})
		}
		decoded = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
		if library > 0 {
			b.ReportMetric(decoded/library, "decoded/library")
		}
	})
}

// TestBrokenFrameHandsOnNothing: a frame whose second series is broken
// fails the set without handing on its first.
func TestBrokenFrameHandsOnNothing(t *testing.T) {
	good, _ := chunkedStream(t, 1)
	var first prompb.ChunkedReadResponse
	if err := first.Unmarshal(frameBody(t, good)); err != nil {
		t.Fatal(err)
	}
	broken := *first.ChunkedSeries[0]
	broken.Chunks = []prompb.Chunk{{MinTimeMs: 0, MaxTimeMs: 900, Type: prompb.Chunk_XOR, Data: []byte{0}}}
	frame, err := (&prompb.ChunkedReadResponse{ChunkedSeries: []*prompb.ChunkedSeries{first.ChunkedSeries[0], &broken}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := promremote.NewChunkedWriter(&buf, nopFlusher{}).Write(frame); err != nil {
		t.Fatal(err)
	}
	ss := &frameSet{r: promremote.NewChunkedReader(&buf, 1<<20, nil), body: io.NopCloser(nil), mint: 0, maxt: 1000}
	n := 0
	for ss.Next() {
		n++
	}
	if n != 0 || !errors.Is(ss.Err(), ErrBadResponse) || ss.Next() {
		t.Errorf("%d series handed on, err %v; want none and an ErrBadResponse", n, ss.Err())
	}
}
