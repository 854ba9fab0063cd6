package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"unsafe"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage"
	promremote "github.com/prometheus/prometheus/storage/remote"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/util/annotations"
	"google.golang.org/protobuf/encoding/protowire"
)

// Content types of the two remote-read answers.
const (
	contentTypeSamples = "application/x-protobuf"
	contentTypeChunked = "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse"
)

// readMultiple sends one remote-read request holding queries and returns
// its answer as one series set over [mint, maxt]: streamed chunk frames
// decoded by frameSet as the reader asks, an answer of samples (a backend
// older than Prometheus 2.13) read whole. Cancelling ctx ends the call.
//
// The library's client does the same exchange; it decodes each frame into
// protobuf structs (every label a string, every chunk a copy) and builds
// the labels again on every call. On small reads that decoding was a
// quarter of the proxy's CPU, so the frames are decoded here straight into
// labels and chunks that stay where the frame put them.
func (c *Client) readMultiple(ctx context.Context, queries []*prompb.Query, mint, maxt int64) (storage.SeriesSet, error) {
	req := &prompb.ReadRequest{Queries: queries, AcceptedResponseTypes: promremote.AcceptedResponseTypes}
	data, err := req.Marshal()
	if err != nil {
		return nil, fmt.Errorf("unable to marshal read request: %w", err)
	}
	httpReq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.readURL, bytes.NewReader(snappy.Encode(nil, data)))
	if err != nil {
		return nil, fmt.Errorf("unable to create request: %w", err)
	}
	httpReq.Header.Add("Content-Encoding", "snappy")
	httpReq.Header.Add("Accept-Encoding", "snappy")
	httpReq.Header.Set("Content-Type", "application/x-protobuf")
	httpReq.Header.Set("User-Agent", promremote.UserAgent)
	httpReq.Header.Set("X-Prometheus-Remote-Read-Version", "0.1.0")
	resp, err := c.readHTTP.Do(httpReq)
	if err != nil {
		return nil, fmt.Errorf("error sending request: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		_ = resp.Body.Close()
		return nil, fmt.Errorf("remote server returned http status %s: %s", resp.Status, snippet(body))
	}
	contentType := resp.Header.Get("Content-Type")
	switch {
	case strings.HasPrefix(contentType, contentTypeSamples):
		defer func() { _ = resp.Body.Close() }()
		return sampledAnswer(resp.Body, len(queries))
	case strings.HasPrefix(contentType, contentTypeChunked):
		return &frameSet{
			r:    promremote.NewChunkedReader(resp.Body, c.cfg.ChunkedReadLimit, nil),
			body: resp.Body, mint: mint, maxt: maxt,
		}, nil
	default:
		_ = resp.Body.Close()
		return nil, fmt.Errorf("unsupported content type: %s", contentType)
	}
}

// maxErrorBody is as much of an error answer as is read for its message.
const maxErrorBody = 4 << 10

// sampledAnswer decodes an answer of samples, one result per query, into
// one sorted set.
func sampledAnswer(body io.Reader, queries int) (storage.SeriesSet, error) {
	compressed, err := io.ReadAll(body)
	if err != nil {
		return nil, fmt.Errorf("error reading response: %w", err)
	}
	uncompressed, err := snappy.Decode(nil, compressed)
	if err != nil {
		return nil, fmt.Errorf("error reading response: %w", err)
	}
	var resp prompb.ReadResponse
	if err := resp.Unmarshal(uncompressed); err != nil {
		return nil, fmt.Errorf("unable to unmarshal response body: %w", err)
	}
	if len(resp.Results) != queries {
		return nil, fmt.Errorf("responses: want %d, got %d", queries, len(resp.Results))
	}
	sets := make([]storage.SeriesSet, 0, len(resp.Results))
	for _, r := range resp.Results {
		ss := promremote.FromQueryResult(true, r)
		if err := ss.Err(); err != nil {
			return nil, err
		}
		sets = append(sets, ss)
	}
	if len(sets) == 1 {
		return sets[0], nil
	}
	return storage.NewMergeSeriesSet(sets, 0, storage.ChainedSeriesMerge), nil
}

// frameSet reads a streamed answer frame by frame (Prometheus writes one
// series a frame; a long series spans several, each repeating its labels).
// Each series of a frame is decoded into a chunkSeries: its labels built
// once, its chunks' bytes copied into one buffer that they index. A frame
// that breaks off hands on none of its series.
type frameSet struct {
	r          *promremote.ChunkedReader
	body       io.ReadCloser
	mint, maxt int64

	b       labels.ScratchBuilder
	scratch []chunkRef
	decoded []*chunkSeries // the series of the last frame, reused
	queue   []*chunkSeries // of those, the ones not handed on yet
	cur     *chunkSeries
	err     error
	ended   bool
}

func (s *frameSet) Next() bool {
	for len(s.queue) == 0 {
		if s.ended {
			return false
		}
		frame, err := s.r.Next()
		if err == nil {
			s.decoded, err = s.decodeFrame(frame, s.decoded[:0])
			s.queue = s.decoded
		}
		if err != nil {
			s.ended, s.queue = true, nil
			_ = s.body.Close()
			if !errors.Is(err, io.EOF) {
				s.err = err
			}
			return false
		}
	}
	s.cur = s.queue[0]
	s.queue = s.queue[1:]
	return true
}

func (s *frameSet) At() storage.Series              { return s.cur }
func (s *frameSet) Err() error                      { return s.err }
func (*frameSet) Warnings() annotations.Annotations { return nil }

// decodeFrame appends the series of one ChunkedReadResponse to out.
func (s *frameSet) decodeFrame(b []byte, out []*chunkSeries) ([]*chunkSeries, error) {
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if num != 1 || typ != protowire.BytesType { // chunked_series; query_index is not needed: queries' series are merged
			return nil
		}
		cs, err := s.decodeSeries(v)
		if err != nil {
			return err
		}
		out = append(out, cs)
		return nil
	})
	if err != nil {
		return out, err
	}
	if len(out) == 0 {
		return out, fmt.Errorf("%w: a remote-read frame without series", ErrBadResponse)
	}
	return out, nil
}

// decodeSeries decodes one ChunkedSeries. The label names and values are
// read in place from the frame (the builder copies them into the labels
// before the frame's buffer is reused); the chunks' data is copied once.
func (s *frameSet) decodeSeries(b []byte) (*chunkSeries, error) {
	s.b.Reset()
	s.scratch = s.scratch[:0]
	size := 0
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 1: // labels
			var name, value []byte
			if err := eachField(v, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
				switch {
				case typ != protowire.BytesType:
				case num == 1:
					name = v
				case num == 2:
					value = v
				}
				return nil
			}); err != nil {
				return err
			}
			s.b.Add(unsafeString(name), unsafeString(value))
		case 2: // chunks
			c, err := decodeChunk(v)
			if err != nil {
				return err
			}
			size += len(c.data)
			s.scratch = append(s.scratch, c)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.b.Sort()
	cs := &chunkSeries{lset: s.b.Labels(), mint: s.mint, maxt: s.maxt}
	if len(s.scratch) <= len(cs.few) {
		cs.chunks = cs.few[:len(s.scratch)]
	} else {
		cs.chunks = make([]chunkRef, len(s.scratch))
	}
	data := make([]byte, 0, size)
	for i, c := range s.scratch {
		start := len(data)
		data = append(data, c.data...)
		c.data = data[start:len(data):len(data)]
		cs.chunks[i] = c
	}
	return cs, nil
}

// decodeChunk decodes one Chunk; its data still points into the frame.
func decodeChunk(b []byte) (chunkRef, error) {
	var c chunkRef
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case typ == protowire.VarintType && num == 1:
			c.mint = int64(x)
		case typ == protowire.VarintType && num == 2:
			c.maxt = int64(x)
		case typ == protowire.VarintType && num == 3:
			c.enc = chunkenc.Encoding(x)
		case typ == protowire.BytesType && num == 4:
			c.data = v
		}
		return nil
	})
	if err != nil {
		return c, err
	}
	// Every chunk encoding starts with a header its iterator reads
	// unchecked: the sample count (two bytes), then for all but XOR a
	// flags byte.
	header := 3
	if c.enc == chunkenc.EncXOR {
		header = 2
	}
	if len(c.data) < header {
		return c, fmt.Errorf("%w: a remote-read chunk of %d bytes", ErrBadResponse, len(c.data))
	}
	return c, nil
}

// eachField calls f with every length-delimited (v) and varint (x) field
// of the message b, and skips the others.
func eachField(b []byte, f func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return badFrame(n)
		}
		b = b[n:]
		var (
			v []byte
			x uint64
		)
		switch typ {
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return badFrame(n)
		}
		b = b[n:]
		if typ != protowire.BytesType && typ != protowire.VarintType {
			continue
		}
		if err := f(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}

func badFrame(n int) error {
	return fmt.Errorf("%w: remote-read frame: %w", ErrBadResponse, protowire.ParseError(n))
}

// unsafeString reads b as a string without copying: only for strings that
// are copied before b changes (ScratchBuilder.Labels copies what it was
// given).
func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// millis is a timestamp in milliseconds. (Named, an iterator's Seek does
// not read to vet as a wrong io.Seeker.)
type millis = int64

// chunkRef is one chunk of a streamed series.
type chunkRef struct {
	mint, maxt int64
	enc        chunkenc.Encoding
	data       []byte
}

// chunkSeries is a series of a streamed answer: its chunks as the backend
// sent them, read where they lie, clipped to the query's [mint, maxt] (a
// backend sends whole chunks).
type chunkSeries struct {
	lset       labels.Labels
	chunks     []chunkRef
	mint, maxt int64
	// few holds the chunks of a series of a few (a dashboard's hours at
	// a 15 s scrape), which then cost no allocation of their own.
	few [4]chunkRef
}

func (s *chunkSeries) Labels() labels.Labels { return s.lset }

func (s *chunkSeries) Iterator(it chunkenc.Iterator) chunkenc.Iterator {
	ci, ok := it.(*chunksIterator)
	if !ok {
		ci = &chunksIterator{}
	}
	ci.reset(s.chunks, s.mint, s.maxt)
	return ci
}

// joinFrames makes one series of the frames a long series was sent in,
// when their chunks follow one another in time (as a backend writes them);
// otherwise ok is false and the caller merges the parts sample by sample.
func joinFrames(parts []storage.Series) (_ *chunkSeries, ok bool) {
	first, ok := parts[0].(*chunkSeries)
	if !ok {
		return nil, false
	}
	joined := &chunkSeries{lset: first.lset, mint: first.mint, maxt: first.maxt, chunks: slices.Clone(first.chunks)}
	for _, p := range parts[1:] {
		cs, ok := p.(*chunkSeries)
		if !ok || len(cs.chunks) == 0 {
			return nil, false
		}
		if n := len(joined.chunks); n > 0 && cs.chunks[0].mint <= joined.chunks[n-1].maxt {
			return nil, false
		}
		joined.chunks = append(joined.chunks, cs.chunks...)
	}
	return joined, true
}

// chunksIterator iterates a streamed series' chunks in place. A chunk that
// lies inside [mint, maxt] (all but the first and last, usually) hands its
// samples on without a check each; the chunk object and its iterator are
// reused from one chunk to the next.
type chunksIterator struct {
	chunks     []chunkRef
	idx        int
	mint, maxt int64

	chunk  chunkenc.Chunk // the current chunk, Reset for the next of its encoding
	cur    chunkenc.Iterator
	inside bool // the current chunk lies inside [mint, maxt]
	vt     chunkenc.ValueType
	err    error
}

func (it *chunksIterator) reset(chunks []chunkRef, mint, maxt int64) {
	it.chunks, it.mint, it.maxt = chunks, mint, maxt
	it.idx, it.vt, it.err = -1, chunkenc.ValNone, nil
	it.nextChunk()
}

// nextChunk moves to the next chunk: false when there is none (or it
// cannot be decoded).
func (it *chunksIterator) nextChunk() bool {
	it.idx++
	if it.idx >= len(it.chunks) {
		it.chunks, it.idx = nil, 0
		return false
	}
	c := it.chunks[it.idx]
	if it.chunk != nil && it.chunk.Encoding() == c.enc {
		it.chunk.Reset(c.data)
	} else {
		chunk, err := chunkenc.FromData(c.enc, c.data)
		if err != nil {
			it.err = err
			it.chunks, it.idx = nil, 0
			return false
		}
		it.chunk = chunk
	}
	it.cur = it.chunk.Iterator(it.cur)
	it.inside = c.mint >= it.mint && c.maxt <= it.maxt
	return true
}

func (it *chunksIterator) exhausted() bool { return it.chunks == nil }

// chunkEnded moves on once the current chunk's iterator has ended: false
// when the series has too, or the chunk broke off.
func (it *chunksIterator) chunkEnded() bool {
	if err := it.cur.Err(); err != nil {
		it.err, it.chunks = err, nil
		return false
	}
	return it.nextChunk()
}

func (it *chunksIterator) Next() chunkenc.ValueType {
	for !it.exhausted() {
		vt := it.cur.Next()
		if vt == chunkenc.ValNone {
			if !it.chunkEnded() {
				break
			}
			continue
		}
		if it.inside {
			it.vt = vt
			return vt
		}
		t := it.cur.AtT()
		if t > it.maxt {
			it.chunks = nil
			break
		}
		if t >= it.mint {
			it.vt = vt
			return vt
		}
	}
	it.vt = chunkenc.ValNone
	return it.vt
}

func (it *chunksIterator) Seek(t millis) chunkenc.ValueType {
	if it.exhausted() {
		return chunkenc.ValNone
	}
	if it.vt != chunkenc.ValNone && it.cur.AtT() >= t {
		return it.vt
	}
	t = max(t, it.mint)
	// The current chunk and those after it that end before t need not be
	// read (nor decoded).
	if skip := sort.Search(len(it.chunks)-it.idx, func(i int) bool { return it.chunks[it.idx+i].maxt >= t }); skip > 0 {
		it.idx += skip - 1
		if !it.nextChunk() {
			it.vt = chunkenc.ValNone
			return it.vt
		}
	}
	for !it.exhausted() {
		vt := it.cur.Seek(t)
		if vt == chunkenc.ValNone {
			if !it.chunkEnded() {
				break
			}
			continue
		}
		if it.cur.AtT() > it.maxt {
			it.chunks = nil
			break
		}
		it.vt = vt
		return vt
	}
	it.vt = chunkenc.ValNone
	return it.vt
}

func (it *chunksIterator) At() (int64, float64) { return it.cur.At() }

func (it *chunksIterator) AtHistogram(h *histogram.Histogram) (int64, *histogram.Histogram) {
	return it.cur.AtHistogram(h)
}

func (it *chunksIterator) AtFloatHistogram(fh *histogram.FloatHistogram) (int64, *histogram.FloatHistogram) {
	return it.cur.AtFloatHistogram(fh)
}

func (it *chunksIterator) AtT() int64  { return it.cur.AtT() }
func (it *chunksIterator) AtST() int64 { return it.cur.AtST() }
func (it *chunksIterator) Err() error  { return it.err }
