package e2eproxy

import (
	"net/http"
	"testing"
)

func TestHasData(t *testing.T) {
	for _, c := range []struct {
		body string
		code int
		want bool
	}{
		{`{"status":"success","data":{"resultType":"vector","result":[]}}`, 200, false},
		{`{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"1"]}]}}`, 200, true},
		{`{"status":"success","data":{"result":[{"metric":{},"values":[[1,"1"]]}],"resultType":"matrix"}}`, 200, true},
		{`{"status":"success","data":{"resultType":"scalar","result":[1,"NaN"]}}`, 200, true},
		{`{"status":"success","data":{"resultType":"string","result":[1,"x"]}}`, 200, true},
		{`{"status":"success","data":{"resultType":"matrix","result":null}}`, 200, false},
		{`{"status":"success","data":{"resultType":"matrix"}}`, 200, false},
		{`{"status":"success","data":[]}`, 200, false},
		{`{"status":"success","data":["up"]}`, 200, true},
		{`{"status":"success","warnings":["w"],"data":[{"__name__":"up"}]}`, 200, true},
		{`{"status":"success","data":null}`, 200, false},
		{`{"status":"success"}`, 200, false},
		{`{"status":"error","errorType":"bad_data","error":"x"}`, http.StatusBadRequest, false},
	} {
		if got := HasData(t, APIAnswer{Code: c.code, Body: []byte(c.body)}); got != c.want {
			t.Errorf("HasData(%s) = %v, want %v", c.body, got, c.want)
		}
	}
}

// Two answers holding the same series in another order are equal; a
// changed value is not.
func TestDiffAnswersIgnoresSeriesOrder(t *testing.T) {
	a := []byte(`{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}]}}`)
	b := []byte(`{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"2"},"value":[1,"2"]},{"metric":{"a":"1"},"value":[1,"1"]}]}}`)
	c := []byte(`{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"2"},"value":[1,"2"]},{"metric":{"a":"1"},"value":[1,"3"]}]}}`)
	if d := DiffAnswers(t, APIAnswer{Code: 200, Body: a}, APIAnswer{Code: 200, Body: b}); d != "" {
		t.Errorf("same series in another order: %s", d)
	}
	if d := DiffAnswers(t, APIAnswer{Code: 200, Body: a}, APIAnswer{Code: 200, Body: c}); d == "" {
		t.Error("a changed value compared equal")
	}
}
