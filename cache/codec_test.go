package cache

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
)

var awkwardFloats = []float64{
	0, math.Copysign(0, -1), 1e-300, -1e-300, 5e-324, math.MaxFloat64, -math.MaxFloat64,
	math.Inf(1), math.Inf(-1), math.NaN(), math.Float64frombits(value.StaleNaN),
	math.Float64frombits(0x7ff8dead0000beef), 0.1 + 0.2, 1.0 / 3,
}

func testHistograms() []*histogram.FloatHistogram {
	return []*histogram.FloatHistogram{
		{ // exponential buckets on both sides
			CounterResetHint: histogram.CounterReset, Schema: 3, ZeroThreshold: 1e-128, ZeroCount: 2.5, Count: math.NaN(), Sum: math.Copysign(0, -1), // -0.0 is +0 in Go
			PositiveSpans: []histogram.Span{{Offset: -5, Length: 2}, {Offset: 3, Length: 1}}, PositiveBuckets: []float64{1, math.Inf(1), 1e-300},
			NegativeSpans: []histogram.Span{{Offset: 2, Length: 1}}, NegativeBuckets: []float64{0.5},
		},
		{ // custom buckets
			CounterResetHint: histogram.GaugeType, Schema: histogram.CustomBucketsSchema, Count: 7, Sum: 3.25,
			PositiveSpans: []histogram.Span{{Offset: 0, Length: 3}}, PositiveBuckets: []float64{1, 2, 4},
			CustomValues: []float64{0.1, 0.5, 1},
		},
		{ // empty, non-nil slices
			Schema: -4, PositiveSpans: []histogram.Span{}, PositiveBuckets: []float64{}, NegativeSpans: []histogram.Span{}, NegativeBuckets: []float64{},
		},
		{}, // all nil
	}
}

func testMatrix() promql.Matrix {
	var m promql.Matrix
	fs := make([]promql.FPoint, len(awkwardFloats))
	for i, f := range awkwardFloats {
		fs[i] = promql.FPoint{T: -15_000 + int64(i)*15_000, F: f}
	}
	hs := make([]promql.HPoint, 0, 4)
	for i, h := range testHistograms() {
		hs = append(hs, promql.HPoint{T: int64(i) * 15_000, H: h})
	}
	m = append(m,
		promql.Series{Metric: labels.FromStrings("__name__", "x", "a", "ünïcode", "b", ""), Floats: fs},
		promql.Series{Metric: labels.FromStrings("le", "+Inf", "weird\nname", "va\x00lue"), Histograms: hs, DropName: true},
		promql.Series{Metric: labels.EmptyLabels(), Floats: fs[:1], Histograms: hs[:1]},
	)
	return m
}

func TestExtentRoundTrip(t *testing.T) {
	d := digest{1, 2, 3}
	m := testMatrix()
	ext := &extent{from: -15_000, to: 180_000, series: fromMatrix(m)}
	b := seal(appendExtent(newValue(kindExtent, d), ext))
	p, ok := open(b, kindExtent, d)
	if !ok {
		t.Fatal("cannot open own value")
	}
	got, err := decodeExtent(p)
	if err != nil {
		t.Fatal(err)
	}
	if got.from != ext.from || got.to != ext.to {
		t.Fatalf("coverage [%d, %d]", got.from, got.to)
	}
	a := newAssembler()
	a.add(got.series, math.MinInt64, math.MaxInt64, true)
	if d := diffValue(sorted(m), a.matrix()); d != "" {
		t.Fatal(d)
	}
}

func sorted(m promql.Matrix) promql.Matrix {
	c := append(promql.Matrix(nil), m...)
	for i := range c {
		for j := i + 1; j < len(c); j++ {
			if labels.Compare(c[j].Metric, c[i].Metric) < 0 {
				c[i], c[j] = c[j], c[i]
			}
		}
	}
	return c
}

func TestInstantRoundTrip(t *testing.T) {
	d := digest{9}
	vec := promql.Vector{
		{Metric: labels.FromStrings("a", "1"), T: 5, F: math.NaN()},
		{Metric: labels.FromStrings("a", "2"), T: -5, H: testHistograms()[0], DropName: true},
		{Metric: labels.EmptyLabels(), T: 0, F: math.Copysign(0, -1)},
	}
	values := []parser.Value{
		promql.Scalar{T: 1, V: math.Inf(-1)}, promql.String{T: 2, V: "héllo"}, vec, promql.Vector{}, testMatrix(), promql.Matrix{},
	}
	for _, v := range values {
		b, ok := appendInstant(newValue(kindInstant, d), v)
		if !ok {
			t.Fatalf("%T not encodable", v)
		}
		p, ok := open(seal(b), kindInstant, d)
		if !ok {
			t.Fatal("cannot open own value")
		}
		got, err := decodeInstant(p)
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		if diff := diffValue(v, got); diff != "" {
			t.Fatalf("%T: %s", v, diff)
		}
	}
}

// Every single-bit flip, every truncation, a wrong key and a wrong kind are
// rejected without a panic.
func TestDamagedValuesRejected(t *testing.T) {
	d := digest{7}
	ext := &extent{from: 0, to: 180_000, series: fromMatrix(testMatrix())}
	b := seal(appendExtent(newValue(kindExtent, d), ext))
	for i := range len(b) * 8 {
		c := append([]byte(nil), b...)
		c[i/8] ^= 1 << (i % 8)
		if _, ok := open(c, kindExtent, d); ok {
			t.Fatalf("bit %d flipped: accepted", i)
		}
	}
	for n := range len(b) {
		if _, ok := open(b[:n], kindExtent, d); ok {
			t.Fatalf("truncated to %d: accepted", n)
		}
	}
	if _, ok := open(b, kindExtent, digest{8}); ok {
		t.Fatal("value of another key accepted")
	}
	if _, ok := open(b, kindInstant, d); ok {
		t.Fatal("value of another kind accepted")
	}
	// A payload that passes the checksum but lies about its lengths.
	rng := rand.New(rand.NewPCG(3, 4))
	p, _ := open(b, kindExtent, d)
	for range 2000 {
		c := append([]byte(nil), p...)
		c[rng.IntN(len(c))] = byte(rng.IntN(256))
		c = c[:rng.IntN(len(c)+1)]
		_, _ = decodeExtent(c) // must not panic or allocate wildly
		_, _ = decodeInstant(c)
	}
}

// Encoded float sections answer range cuts exactly as the decoded points do.
func TestFloatSectionRanges(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for range 500 {
		var ps []promql.FPoint
		t0 := int64(rng.IntN(100)) - 50
		for range rng.IntN(40) {
			switch rng.IntN(4) {
			case 0:
				t0 += int64(1 + rng.IntN(100)) // irregular gap
			default:
				t0 += 15 // on the grid
			}
			ps = append(ps, promql.FPoint{T: t0, F: rng.NormFloat64()})
		}
		base := int64(-100)
		d := decoder{b: appendFloatPoints(nil, ps, base)}
		fs := d.floatSection(base)
		if d.err != nil || len(d.b) != 0 || fs.n != len(ps) {
			t.Fatalf("decode: %v, %d left, n %d want %d", d.err, len(d.b), fs.n, len(ps))
		}
		for range 20 {
			lo := int64(rng.IntN(int(t0)+200)) - 100
			hi := lo + int64(rng.IntN(300)) - 20
			want := floatsIn(ps, lo, hi)
			got := fs.appendTo(nil, lo, hi)
			if fs.count(lo, hi) != len(want) || len(got) != len(want) {
				t.Fatalf("[%d, %d]: %d points (count %d), want %d", lo, hi, len(got), fs.count(lo, hi), len(want))
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("[%d, %d] point %d: %v, want %v", lo, hi, i, got[i], want[i])
				}
			}
		}
	}
}
