package httpapi

import (
	"errors"
	"net/url"
	"testing"
	"time"
)

func TestListingRange(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	window := 12 * time.Hour
	cases := []struct {
		name       string
		form       url.Values
		window     time.Duration
		start, end time.Time
		ok         bool
	}{
		{"none: the window ending now", url.Values{}, window, now.Add(-window), now, true},
		{"end only: the window ending there", url.Values{"end": {"1767225600"}}, window, time.Unix(1767225600, 0).Add(-window), time.Unix(1767225600, 0), true},
		{"start only: until now", url.Values{"start": {"2026-01-01T00:00:00Z"}}, window, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), now, true},
		{"both", url.Values{"start": {"1767225600.5"}, "end": {"1767229200"}}, window, time.Unix(1767225600, 5e8), time.Unix(1767229200, 0), true},
		{"no window, none: all time", url.Values{}, 0, time.Time{}, time.Time{}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start, end, ok, err := listingRange(c.form, c.window, now)
			if err != nil || ok != c.ok || !start.Equal(c.start) || !end.Equal(c.end) {
				t.Fatalf("got %v..%v ok=%v err=%v, want %v..%v ok=%v", start, end, ok, err, c.start, c.end, c.ok)
			}
			if !ok {
				return
			}
			// Prometheus' handler reads the same range from the form.
			fs, err1 := parseTime(c.form.Get("start"))
			fe, err2 := parseTime(c.form.Get("end"))
			if err1 != nil || err2 != nil || !fs.Equal(c.start.Truncate(time.Millisecond)) || !fe.Equal(c.end.Truncate(time.Millisecond)) {
				t.Errorf("form says %v..%v (%v, %v), want %v..%v", fs, fe, err1, err2, c.start, c.end)
			}
		})
	}
	for _, bad := range []url.Values{{"start": {"x"}}, {"end": {"NaN"}}, {"start": {"1e300"}}} {
		_, _, _, err := listingRange(bad, window, now)
		if pe := (*promError)(nil); !errors.As(err, &pe) || pe.Type != "bad_data" {
			t.Errorf("%v: got %v, want bad_data", bad, err)
		}
	}
}
