package httpapi

import (
	"encoding/json"
	"testing"
)

func TestAppendWarnings(t *testing.T) {
	body := []byte(`{"status":"success","data":[{"seriesLabels":{"a":"b"},"exemplars":[]}]}` + "\n")
	out := appendWarnings(body, []string{`partial response: group "x" unavailable`}, []string{"info"})
	var v struct {
		Status   string
		Data     []any
		Warnings []string
		Infos    []string
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if v.Status != "success" || len(v.Data) != 1 || len(v.Warnings) != 1 || v.Warnings[0] != `partial response: group "x" unavailable` || len(v.Infos) != 1 {
		t.Errorf("got %s", out)
	}
	if got := appendWarnings([]byte("not json"), []string{"w"}, nil); string(got) != "not json" {
		t.Errorf("a body that is not an object must pass unchanged, got %s", got)
	}
}
