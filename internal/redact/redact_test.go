package redact

import (
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://user:s3cret@host:9090/prefix": "http://user:xxxxx@host:9090/prefix",
		"http://host:9090":                    "http://host:9090",
		"https://user@host":                   "https://user@host",
		"http://user:s3cret@host:9090/%zz":    "http://(unparsable URL)",
	} {
		if got := URL(in); got != want || strings.Contains(got, "s3cret") {
			t.Errorf("URL(%q) = %q, want %q", in, got, want)
		}
	}
}
