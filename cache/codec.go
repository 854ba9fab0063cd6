package cache

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
)

// A stored value is
//
//	magic(4) version(1) kind(1) digest(32) payload crc32c(4) | hmac-sha256(32)
//
// The digest is the key's own hash, so an entry written under another key
// (a collision of key strings, a foreign writer) is recognised and ignored.
// Floats are stored as their IEEE bits, so NaN payloads, -0 and denormals
// come back exactly.
const (
	codecMagic   = "PMQC"
	codecVersion = 1

	kindExtent  = 1
	kindInstant = 2

	headerLen  = len(codecMagic) + 2 + digestLen
	trailerLen = 4
	macLen     = sha256.Size
)

var (
	crcTable = crc32.MakeTable(crc32.Castagnoli)

	errCorrupt = errors.New("corrupt cache entry")
)

// newValue starts a value with its header; the payload is appended to it
// and seal adds the checksum.
func newValue(kind byte, d digest) []byte {
	b := make([]byte, 0, 512)
	b = append(b, codecMagic...)
	b = append(b, codecVersion, kind)
	return append(b, d[:]...)
}

func seal(b []byte) []byte { return sealer{}.seal(b) }

func open(b []byte, kind byte, d digest) ([]byte, bool) { return sealer{}.open(b, kind, d) }

// sealer closes values with a CRC-32C, or with an HMAC-SHA256 when it has a
// key: then only a writer holding the same cache.signing_key makes an entry
// this proxy believes, so whoever else can write to a shared Redis can at
// worst cause misses, never a forged answer.
type sealer struct{ key []byte }

func (s sealer) trailerLen() int {
	if s.key != nil {
		return macLen
	}
	return trailerLen
}

func (s sealer) sum(b []byte) []byte {
	if s.key == nil {
		return binary.LittleEndian.AppendUint32(nil, crc32.Checksum(b, crcTable))
	}
	m := hmac.New(sha256.New, s.key)
	m.Write(b)
	return m.Sum(nil)
}

func (s sealer) seal(b []byte) []byte { return append(b, s.sum(b)...) }

// open checks the frame of a stored value and returns its payload; ok is
// false for anything that is not a sound value of this kind for this key.
func (s sealer) open(b []byte, kind byte, d digest) (payload []byte, ok bool) {
	tl := s.trailerLen()
	if len(b) < headerLen+tl {
		return nil, false
	}
	body, sum := b[:len(b)-tl], b[len(b)-tl:]
	if !hmac.Equal(s.sum(body), sum) {
		return nil, false
	}
	if string(body[:4]) != codecMagic || body[4] != codecVersion || body[5] != kind {
		return nil, false
	}
	if [digestLen]byte(body[6:headerLen]) != d {
		return nil, false
	}
	return body[headerLen:], true
}

// series is one series of an engine answer or of a decoded value. lblock
// is its label set in the encoded form, which doubles as a map key when
// stitching. Float points are either decoded (floats) or still encoded
// (fsec), to be copied straight into the stitched answer.
type series struct {
	lblock    []byte
	metric    labels.Labels // set when hasMetric: the engine's own labels
	hasMetric bool
	dropName  bool
	floats    []promql.FPoint
	fsec      floatSection
	hists     []promql.HPoint
}

// Float points are stored as runs of evenly spaced timestamps followed by
// the values' bits: answers sit on a step grid, so a series is a few runs
// and its timestamps cost almost nothing to store or read.
type floatSection struct {
	n    int
	runs []pointRun
	vals []byte // 8 bytes per point
}

type pointRun struct {
	start, delta int64
	n            int
}

// span returns the indexes [k0, k1) of the run's points within [lo, hi].
func (r pointRun) span(lo, hi int64) (k0, k1 int) {
	last := r.start + int64(r.n-1)*r.delta
	if last < lo || r.start > hi {
		return 0, 0
	}
	k0, k1 = 0, r.n
	if r.start < lo {
		k0 = int((lo - r.start + r.delta - 1) / r.delta)
	}
	if last > hi {
		k1 = int((hi-r.start)/r.delta) + 1
	}
	return k0, max(k0, k1)
}

func (fs floatSection) count(lo, hi int64) int {
	c := 0
	for _, r := range fs.runs {
		k0, k1 := r.span(lo, hi)
		c += k1 - k0
	}
	return c
}

func (fs floatSection) appendTo(dst []promql.FPoint, lo, hi int64) []promql.FPoint {
	base := 0
	for _, r := range fs.runs {
		k0, k1 := r.span(lo, hi)
		for k := k0; k < k1; k++ {
			bits := binary.LittleEndian.Uint64(fs.vals[(base+k)*8:])
			dst = append(dst, promql.FPoint{T: r.start + int64(k)*r.delta, F: math.Float64frombits(bits)})
		}
		base += r.n
	}
	return dst
}

func (s *series) countFloats(lo, hi int64) int {
	if s.fsec.n > 0 {
		return s.fsec.count(lo, hi)
	}
	return len(floatsIn(s.floats, lo, hi))
}

func (s *series) appendFloats(dst []promql.FPoint, lo, hi int64) []promql.FPoint {
	if s.fsec.n > 0 {
		return s.fsec.appendTo(dst, lo, hi)
	}
	return append(dst, floatsIn(s.floats, lo, hi)...)
}

// extent is the cached part of a range query between two grid points.
type extent struct {
	from, to int64 // first and last covered evaluation timestamps
	series   []series
}

func appendExtent(b []byte, e *extent) []byte {
	b = binary.AppendVarint(b, e.from)
	b = binary.AppendVarint(b, e.to)
	return appendSeriesList(b, e.series, e.from)
}

func decodeExtent(p []byte) (*extent, error) {
	d := decoder{b: p}
	e := &extent{from: d.varint(), to: d.varint()}
	e.series = d.seriesList(e.from)
	if d.err != nil || len(d.b) != 0 {
		return nil, errCorrupt
	}
	return e, nil
}

func appendSeriesList(b []byte, ss []series, base int64) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for i := range ss {
		s := &ss[i]
		b = append(b, s.lblock...)
		b = append(b, boolByte(s.dropName))
		b = appendFloatPoints(b, s.floats, base)
		b = binary.AppendUvarint(b, uint64(len(s.hists)))
		prev := base
		for _, p := range s.hists {
			b = binary.AppendVarint(b, p.T-prev)
			b = appendHistogram(b, p.H)
			prev = p.T
		}
	}
	return b
}

func appendFloatPoints(b []byte, ps []promql.FPoint, base int64) []byte {
	b = binary.AppendUvarint(b, uint64(len(ps)))
	prev := base
	for i := 0; i < len(ps); {
		j, delta := i+1, int64(0)
		if j < len(ps) {
			delta = ps[j].T - ps[i].T
			for j < len(ps) && ps[j].T-ps[j-1].T == delta {
				j++
			}
		}
		b = binary.AppendVarint(b, ps[i].T-prev)
		b = binary.AppendUvarint(b, uint64(j-i))
		b = binary.AppendVarint(b, delta)
		prev = ps[j-1].T
		i = j
	}
	for _, p := range ps {
		b = appendFloat(b, p.F)
	}
	return b
}

// appendLabels encodes a label set as a count and name/value pairs. It does
// not rely on the in-memory layout of labels.Labels, which differs between
// build tags.
func appendLabels(b []byte, ls labels.Labels) []byte {
	b = binary.AppendUvarint(b, uint64(ls.Len()))
	ls.Range(func(l labels.Label) {
		b = appendString(b, l.Name)
		b = appendString(b, l.Value)
	})
	return b
}

func labelsFromBlock(block []byte, sb *labels.ScratchBuilder) (labels.Labels, error) {
	d := decoder{b: block}
	n := d.uvarint()
	sb.Reset()
	for i := uint64(0); i < n && d.err == nil; i++ {
		name := d.bytes()
		value := d.bytes()
		sb.Add(string(name), string(value))
	}
	if d.err != nil {
		return labels.EmptyLabels(), errCorrupt
	}
	return sb.Labels(), nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendFloat(b []byte, f float64) []byte {
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
}

// appendHistogram writes every field of h. Slice lengths are stored plus
// one, zero meaning nil, so that nil and empty slices survive as they were.
func appendHistogram(b []byte, h *histogram.FloatHistogram) []byte {
	b = append(b, byte(h.CounterResetHint))
	b = binary.AppendVarint(b, int64(h.Schema))
	b = appendFloat(b, h.ZeroThreshold)
	b = appendFloat(b, h.ZeroCount)
	b = appendFloat(b, h.Count)
	b = appendFloat(b, h.Sum)
	b = appendSpans(b, h.PositiveSpans)
	b = appendSpans(b, h.NegativeSpans)
	b = appendFloats(b, h.PositiveBuckets)
	b = appendFloats(b, h.NegativeBuckets)
	return appendFloats(b, h.CustomValues)
}

func appendSpans(b []byte, spans []histogram.Span) []byte {
	if spans == nil {
		return append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(spans))+1)
	for _, s := range spans {
		b = binary.AppendVarint(b, int64(s.Offset))
		b = binary.AppendUvarint(b, uint64(s.Length))
	}
	return b
}

func appendFloats(b []byte, fs []float64) []byte {
	if fs == nil {
		return append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(fs))+1)
	for _, f := range fs {
		b = appendFloat(b, f)
	}
	return b
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// Value types of a cached instant answer.
const (
	valueScalar = 1
	valueString = 2
	valueVector = 3
	valueMatrix = 4
)

// appendInstant encodes the value of an instant query; ok is false for a
// value type it does not know.
func appendInstant(b []byte, v parser.Value) ([]byte, bool) {
	switch v := v.(type) {
	case promql.Scalar:
		b = append(b, valueScalar)
		b = binary.AppendVarint(b, v.T)
		b = appendFloat(b, v.V)
	case promql.String:
		b = append(b, valueString)
		b = binary.AppendVarint(b, v.T)
		b = appendString(b, v.V)
	case promql.Vector:
		b = append(b, valueVector)
		b = binary.AppendUvarint(b, uint64(len(v)))
		for _, s := range v {
			b = appendLabels(b, s.Metric)
			flags := boolByte(s.DropName)
			if s.H != nil {
				flags |= 2
			}
			b = append(b, flags)
			b = binary.AppendVarint(b, s.T)
			b = appendFloat(b, s.F)
			if s.H != nil {
				b = appendHistogram(b, s.H)
			}
		}
	case promql.Matrix:
		b = append(b, valueMatrix)
		ss := make([]series, len(v))
		for i, s := range v {
			ss[i] = series{lblock: appendLabels(nil, s.Metric), dropName: s.DropName, floats: s.Floats, hists: s.Histograms}
		}
		b = appendSeriesList(b, ss, 0)
	default:
		return b, false
	}
	return b, true
}

func decodeInstant(p []byte) (parser.Value, error) {
	d := decoder{b: p}
	var v parser.Value
	switch d.byte() {
	case valueScalar:
		v = promql.Scalar{T: d.varint(), V: d.float()}
	case valueString:
		t := d.varint()
		v = promql.String{T: t, V: string(d.bytes())}
	case valueVector:
		n := d.count()
		vec := make(promql.Vector, 0, n)
		sb := labels.NewScratchBuilder(8)
		for i := 0; i < n && d.err == nil; i++ {
			ls, err := labelsFromBlock(d.labelBlock(), &sb)
			if err != nil {
				return nil, err
			}
			flags := d.byte()
			s := promql.Sample{Metric: ls, DropName: flags&1 != 0, T: d.varint(), F: d.float()}
			if flags&2 != 0 {
				s.H = d.histogram()
			}
			vec = append(vec, s)
		}
		v = vec
	case valueMatrix:
		ss := d.seriesList(0)
		mat := make(promql.Matrix, 0, len(ss))
		sb := labels.NewScratchBuilder(8)
		for _, s := range ss {
			ls, err := labelsFromBlock(s.lblock, &sb)
			if err != nil {
				return nil, err
			}
			var fs []promql.FPoint
			if s.fsec.n > 0 {
				fs = s.fsec.appendTo(make([]promql.FPoint, 0, s.fsec.n), math.MinInt64, math.MaxInt64)
			}
			mat = append(mat, promql.Series{Metric: ls, DropName: s.dropName, Floats: fs, Histograms: s.hists})
		}
		v = mat
	default:
		return nil, errCorrupt
	}
	if d.err != nil || len(d.b) != 0 {
		return nil, errCorrupt
	}
	return v, nil
}

// decoder reads what the append functions wrote; the first error sticks and
// every later read returns zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() { d.err = errCorrupt; d.b = nil }

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a length and rejects one that the remaining bytes cannot
// hold, so a corrupt length never makes a huge allocation.
func (d *decoder) count() int {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return 0
	}
	return int(n)
}

func (d *decoder) float() float64 {
	if len(d.b) < 8 {
		d.fail()
		return 0
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(d.b))
	d.b = d.b[8:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.count()
	if d.err != nil {
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// labelBlock returns the encoded label set at the cursor without decoding it.
func (d *decoder) labelBlock() []byte {
	start := d.b
	n := d.count()
	for i := 0; i < n && d.err == nil; i++ {
		d.bytes()
		d.bytes()
	}
	if d.err != nil {
		return nil
	}
	used := len(start) - len(d.b)
	return start[:used:used]
}

func (d *decoder) seriesList(base int64) []series {
	n := d.count()
	ss := make([]series, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		s := series{lblock: d.labelBlock(), dropName: d.byte() != 0}
		s.fsec = d.floatSection(base)
		if nh := d.count(); nh > 0 {
			s.hists = make([]promql.HPoint, 0, nh)
			t := base
			for j := 0; j < nh && d.err == nil; j++ {
				t += d.varint()
				s.hists = append(s.hists, promql.HPoint{T: t, H: d.histogram()})
			}
		}
		ss = append(ss, s)
	}
	return ss
}

// floatSection checks the runs of a float section (counts add up,
// timestamps strictly increase, the values are all there) and keeps the
// values encoded.
func (d *decoder) floatSection(base int64) floatSection {
	n := d.count()
	fs := floatSection{n: n}
	prev, total := base, 0
	for total < n && d.err == nil {
		r := pointRun{start: prev + d.varint()}
		cnt := d.uvarint()
		r.delta = d.varint()
		if cnt == 0 || cnt > uint64(n-total) || (cnt > 1 && r.delta <= 0) || (total > 0 && r.start <= prev) {
			d.fail()
			break
		}
		r.n = int(cnt)
		fs.runs = append(fs.runs, r)
		prev = r.start + int64(r.n-1)*r.delta
		total += r.n
	}
	if d.err != nil || len(d.b) < 8*n {
		d.fail()
		return floatSection{}
	}
	fs.vals = d.b[: 8*n : 8*n]
	d.b = d.b[8*n:]
	return fs
}

func (d *decoder) histogram() *histogram.FloatHistogram {
	h := &histogram.FloatHistogram{
		CounterResetHint: histogram.CounterResetHint(d.byte()),
		Schema:           int32(d.varint()),
		ZeroThreshold:    d.float(),
		ZeroCount:        d.float(),
		Count:            d.float(),
		Sum:              d.float(),
	}
	h.PositiveSpans = d.spans()
	h.NegativeSpans = d.spans()
	h.PositiveBuckets = d.floats()
	h.NegativeBuckets = d.floats()
	h.CustomValues = d.floats()
	return h
}

func (d *decoder) spans() []histogram.Span {
	n := d.count()
	if n == 0 || d.err != nil {
		return nil
	}
	s := make([]histogram.Span, n-1)
	for i := range s {
		s[i] = histogram.Span{Offset: int32(d.varint()), Length: uint32(d.uvarint())}
	}
	return s
}

func (d *decoder) floats() []float64 {
	n := d.count()
	if n == 0 || d.err != nil {
		return nil
	}
	f := make([]float64, n-1)
	for i := range f {
		f[i] = d.float()
	}
	return f
}
