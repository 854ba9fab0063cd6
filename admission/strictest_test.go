package admission

import (
	"testing"
	"time"

	"github.com/prometheus/common/model"
)

// TestStrictest: each limit is the smallest one set; unlimited (0) only
// when no namespace sets it; an entry under the joined name wins.
func TestStrictest(t *testing.T) {
	c := Config{
		Defaults: Limits{MaxFetchedSeriesPerQuery: 1000, MaxQueryLength: model.Duration(time.Hour)},
		Tenants: map[string]Limits{
			"noisy":         {MaxFetchedSeriesPerQuery: 10, MaxSamplesPerQuery: 500},
			"roomy":         {MaxFetchedSeriesPerQuery: 5000, MaxQueryLength: model.Duration(24 * time.Hour)},
			"noisy,special": {MaxFetchedSeriesPerQuery: 7},
		},
	}
	got := c.ForAll("noisy,roomy", []string{"noisy", "roomy"})
	want := Limits{MaxFetchedSeriesPerQuery: 10, MaxSamplesPerQuery: 500, MaxQueryLength: model.Duration(24 * time.Hour)}
	if got != want {
		t.Errorf("noisy+roomy: %+v, want %+v", got, want)
	}
	if got := c.ForAll("a,b", []string{"a", "b"}); got != c.Defaults {
		t.Errorf("two namespaces without entries: %+v, want the defaults", got)
	}
	if got := c.ForAll("noisy,special", []string{"noisy", "special"}); got.MaxFetchedSeriesPerQuery != 7 || got.MaxSamplesPerQuery != 0 {
		t.Errorf("an entry under the joined name: %+v, want it as written", got)
	}
	if got := Strictest(Limits{MaxResponseBytes: 0}, Limits{MaxResponseBytes: 9}); got.MaxResponseBytes != 9 {
		t.Errorf("unlimited and 9: %d, want 9", got.MaxResponseBytes)
	}
}
