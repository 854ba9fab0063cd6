package enum

import "testing"

type mode string

func TestOneOf(t *testing.T) {
	if err := OneOf(mode("a"), "a", "b"); err != nil {
		t.Errorf("a among a, b: %v", err)
	}
	for _, c := range []struct {
		v       mode
		allowed []mode
		want    string
	}{
		{"c", []mode{"a", "b"}, `"c" is neither "a" nor "b"`},
		{"", []mode{"a", "b", "c"}, `"" is not one of "a", "b", "c"`},
	} {
		if err := OneOf(c.v, c.allowed...); err == nil || err.Error() != c.want {
			t.Errorf("OneOf(%q, %q) = %v, want %s", c.v, c.allowed, err, c.want)
		}
	}
}
