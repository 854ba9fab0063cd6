package remote

import (
	"bytes"
	"fmt"
	"math"
	"runtime"
	"testing"

	jsoniter "github.com/json-iterator/go"
)

// matrixAnswer is a query_range answer of n series with points each, as
// Prometheus writes it.
func matrixAnswer(n, points int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"status":"success","data":{"resultType":"matrix","result":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"metric":{"namespace":"team-%d","job":"api","instance":"10.0.0.%d:8080"},"values":[`, i%4, i)
		for p := range points {
			if p > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `[%d.%03d,"%g"]`, 1767225600+60*p, p%1000, float64(i*p)/7)
		}
		b.WriteString(`]}`)
	}
	b.WriteString(`]}}`)
	return b.Bytes()
}

func BenchmarkDecodeQueryAnswer(b *testing.B) {
	body := matrixAnswer(100, 61)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := decodeQueryAnswer(bytes.NewReader(body), nil); err != nil {
			b.Fatal(err)
		}
	}
}

func TestReadPoint(t *testing.T) {
	for in, want := range map[string]int64{
		"1767225600":     1767225600000,
		"1767225600.5":   1767225600500,
		"1767225600.123": 1767225600123,
		"1767225600.05":  1767225600050,
		"4102444799.999": 4102444799999,
		"-1.5":           -1500,
		"-0.001":         -1,
		"1.7672256e9":    1767225600000,
		"0.0004":         0,
	} {
		it := jsoniter.ParseString(jsoniter.ConfigDefault, "["+in+`,"0.25"]`)
		ts, v, err := readPoint(it)
		if err != nil || ts != want || v != 0.25 {
			t.Errorf("readPoint([%s, \"0.25\"]) = %d, %g, %v; want %d, 0.25", in, ts, v, err, want)
		}
	}
	for _, in := range []string{`[]`, `["1","2"]`, `[1]`, `[1,2]`, `[1,""]`, `[1,"x"]`, `[1,"1",3]`, `[1e300,"1"]`, `{}`} {
		if _, _, err := readPoint(jsoniter.ParseString(jsoniter.ConfigDefault, in)); err == nil {
			t.Errorf("readPoint(%s): no error", in)
		}
	}
	for in, want := range map[string]float64{`"NaN"`: math.NaN(), `"+Inf"`: math.Inf(1), `"-Inf"`: math.Inf(-1), `"1e-300"`: 1e-300} {
		_, v, err := readPoint(jsoniter.ParseString(jsoniter.ConfigDefault, "[1,"+in+"]"))
		if err != nil || math.Float64bits(v) != math.Float64bits(want) && !(math.IsNaN(v) && math.IsNaN(want)) {
			t.Errorf("readPoint value %s = %g, %v", in, v, err)
		}
	}
}

// Every millisecond of a day decodes exactly: the time passes through a
// float64.
func TestReadPointMillisecondsExact(t *testing.T) {
	for ms := int64(1767225600000); ms < 1767225600000+86_400_000; ms += 7 {
		in := fmt.Sprintf(`[%d.%03d,"1"]`, ms/1000, ms%1000)
		ts, _, err := readPoint(jsoniter.ParseString(jsoniter.ConfigDefault, in))
		if err != nil || ts != ms {
			t.Fatalf("readPoint(%s) = %d, %v", in, ts, err)
		}
	}
}

func TestDecodeQueryAnswerShapes(t *testing.T) {
	ans, env, err := decodeQueryAnswer(bytes.NewReader(matrixAnswer(3, 4)), nil)
	if err != nil || env.Status != "success" || env.ResultType != "matrix" || len(ans.Series) != 3 || len(ans.Series[2].T) != 4 {
		t.Fatalf("matrix: %v %+v %+v", err, env, ans)
	}
	if got := ans.Series[2].T[3]; got != (1767225600+180)*1000+3 {
		t.Errorf("time of the last point: %d", got)
	}
	if got := ans.Series[2].Labels.String(); got != `{instance="10.0.0.2:8080", job="api", namespace="team-2"}` {
		t.Errorf("labels: %s", got)
	}
	vec := `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"b"},"value":[1.5,"NaN"]},{"metric":{},"histogram":[1,{"count":"1"}]}]},"warnings":["w"],"infos":["i"]}`
	ans, env, err = decodeQueryAnswer(bytes.NewReader([]byte(vec)), nil)
	if err != nil || len(ans.Series) != 1 || ans.Series[0].T[0] != 1500 || !ans.Histograms || len(env.Warnings) != 1 || len(env.Infos) != 1 {
		t.Fatalf("vector: %v %+v %+v", err, env, ans)
	}
	if ans.SamplesRead != -1 {
		t.Errorf("an answer without stats read %d samples, want -1 (not told)", ans.SamplesRead)
	}
	// As Prometheus writes them with stats=true: after the result, timings
	// before samples.
	withStats := `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"1"]}],"stats":{"timings":{"evalTotalTime":0.0003},"samples":{"totalQueryableSamples":11568,"samplesRead":11568,"peakSamples":48}}}}`
	if ans, _, err = decodeQueryAnswer(bytes.NewReader([]byte(withStats)), nil); err != nil || ans.SamplesRead != 11568 || len(ans.Series) != 1 {
		t.Fatalf("stats: %v, samples read %d, %d series", err, ans.SamplesRead, len(ans.Series))
	}
	errAns := `{"status":"error","errorType":"bad_data","error":"parse error"}`
	if _, env, err = decodeQueryAnswer(bytes.NewReader([]byte(errAns)), nil); err != nil || env.Status != "error" || env.ErrorType != "bad_data" || env.Error != "parse error" {
		t.Fatalf("error answer: %v %+v", err, env)
	}
	for _, bad := range []string{
		`<html>502</html>`,
		`{"status":"success","data":{"result":[{"values":[[1,"x"]]}]}}`,
		`{"status":"success","data":{"result":[{"values":[[1,"1",2]]}]}}`,
		`{"status":"success","data":{"result":[{"values":[[1]]}]}}`,
		`{"status":"success","data":{"result":[1,"2"]}}`,
		`{"status":"success","data":{"result":[{"values":[[1,"1"]`,
	} {
		if _, _, err := decodeQueryAnswer(bytes.NewReader([]byte(bad)), nil); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

// A long series followed by many short ones allocates for the points the
// answer has: a series may be sized from the one before it, never from
// the longest (which would multiply the long one by the short ones).
func TestDecodeAllocatesForThePointsRead(t *testing.T) {
	var b bytes.Buffer
	b.WriteString(`{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"pod":"long"},"values":[`)
	for p := range 10_000 {
		if p > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `[%d,"1"]`, 1767225600+p)
	}
	b.WriteString(`]}`)
	for i := range 2_000 {
		fmt.Fprintf(&b, `,{"metric":{"pod":"short-%d"},"values":[[1767225600,"1"]]}`, i)
	}
	b.WriteString(`]}}`)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	ans, _, err := decodeQueryAnswer(bytes.NewReader(b.Bytes()), nil)
	runtime.ReadMemStats(&after)
	if err != nil || len(ans.Series) != 2_001 {
		t.Fatalf("decode: %v, %d series", err, len(ans.Series))
	}
	// 12,000 points of 16 bytes and 2,001 label sets: well under 4 MiB;
	// every short series sized like the long one would take 320 MB.
	if got := after.TotalAlloc - before.TotalAlloc; got > 4<<20 {
		t.Errorf("decoding allocated %d bytes", got)
	}
}
