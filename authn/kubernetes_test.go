package authn

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"k8s.io/client-go/rest"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/configtest"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

// TestTTLCache: answers expire, and the cache never holds more than its size.
func TestTTLCache(t *testing.T) {
	c := newTTLCache(100, 200*time.Millisecond)
	for i := range 1000 {
		c.put(fmt.Sprint(i), i)
		if len(c.m) > 100 {
			t.Fatalf("%d entries after %d puts, bound 100", len(c.m), i+1)
		}
	}
	if v, ok := c.get("999"); !ok || v != 999 {
		t.Fatalf("the newest entry: %v %v", v, ok)
	}
	time.Sleep(250 * time.Millisecond)
	if _, ok := c.get("999"); ok {
		t.Fatal("an entry outlived its TTL")
	}
}

func TestKubernetesConfigValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", typed(TypeKubernetes, nil), true},
		{"cache longer than 5m", typed(TypeKubernetes, func(c *Config) { c.Kubernetes.CacheTTL = model.Duration(time.Hour) }), false},
		{"no cache", typed(TypeKubernetes, func(c *Config) { c.Kubernetes.CacheSize = 0 }), false},
		{"check without a verb", typed(TypeKubernetes, func(c *Config) { c.Kubernetes.AdminAccess = AccessCheck{Resource: "pods"} }), false},
		{"jwks_url and oidc_issuer_url", typed(TypeJWT, func(c *Config) { c.JWT.JWKSURL, c.JWT.OIDCIssuerURL = "https://a/keys", "https://a" }), false},
		{"oidc_issuer_url alone", typed(TypeJWT, func(c *Config) { c.JWT.OIDCIssuerURL = "https://dex.example" }), true},
		{"oidc_issuer_url not http", typed(TypeJWT, func(c *Config) { c.JWT.OIDCIssuerURL = "dex.example" }), false},
	} {
		err := c.cfg.Validate()
		if (err == nil) != c.ok {
			t.Errorf("%s: err = %v, want ok=%v", c.name, err, c.ok)
		}
	}
}

// TestConfigDefaults: an empty or partial section is DefaultConfig with the
// keys it sets (a written access check is whole, never mixed with the
// default's), and Validate changes nothing.
func TestConfigDefaults(t *testing.T) {
	configtest.Decodes(t, DefaultConfig, Config.Validate, []configtest.Case[Config]{
		{YAML: "{}"},
		{YAML: "type: kubernetes\nkubernetes: {timeout: 1s, audiences: [a]}\n", Want: func(c *Config) {
			c.Type, c.Kubernetes.Timeout, c.Kubernetes.Audiences = TypeKubernetes, model.Duration(time.Second), []string{"a"}
		}},
		{YAML: "type: kubernetes\nkubernetes: {namespace_access: {verb: list}}\n", Want: func(c *Config) {
			c.Type, c.Kubernetes.NamespaceAccess = TypeKubernetes, AccessCheck{Verb: "list"}
		}, Invalid: "kubernetes.namespace_access: "},
	})
}

// TestKubernetesSlowAPIServerFailsClosed: an API server that never answers
// (a hung listener) costs one timeout and refuses the request as
// unavailable; nothing is let through or cached.
func TestKubernetesSlowAPIServerFailsClosed(t *testing.T) {
	hang := e2eutil.Hang(t)
	cfg := typed(TypeKubernetes, func(c *Config) { c.Kubernetes.Timeout = model.Duration(300 * time.Millisecond) })
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	id, err := New(cfg, Options{KubeConfig: &rest.Config{Host: hang.URL}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		start := time.Now()
		_, err := id.Identify(requestWith(bearer("some-token")))
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("attempt %d: err = %v, want ErrUnavailable", i, err)
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("attempt %d took %v with a 300ms timeout", i, took)
		}
	}
	if n := hang.Requests(); n < 2 {
		t.Errorf("%d connections reached the API server: a failure was cached", n)
	}
	if _, err := id.Identify(requestWith(nil)); !errors.Is(err, ErrNoCredentials) {
		t.Errorf("no token: err = %v", err)
	}
}

// TestKubernetesReviewFloodBounded: made-up tokens cost nothing to make;
// however many arrive at once, at most maxConcurrentReviews reviews reach
// the API server, and every one of the requests is refused.
func TestKubernetesReviewFloodBounded(t *testing.T) {
	hang := e2eutil.Hang(t)
	cfg := typed(TypeKubernetes, func(c *Config) { c.Kubernetes.Timeout = model.Duration(500 * time.Millisecond) })
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	// Reviews in flight are counted where they leave the proxy: the hung
	// server notices a cancelled connection only some time after the
	// client gave it up, so its count of open connections overlaps the
	// next review's.
	var inFlight, peak atomic.Int64
	kc := &rest.Config{Host: hang.URL, WrapTransport: func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			n := inFlight.Add(1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			defer inFlight.Add(-1)
			return rt.RoundTrip(r)
		})
	}}
	id, err := New(cfg, Options{KubeConfig: kc})
	if err != nil {
		t.Fatal(err)
	}
	const n = 4 * maxConcurrentReviews
	var (
		wg      sync.WaitGroup
		refused atomic.Int64
	)
	for i := range n {
		wg.Go(func() {
			if _, err := id.Identify(requestWith(bearer(fmt.Sprintf("made-up-%d", i)))); errors.Is(err, ErrUnavailable) {
				refused.Add(1)
			}
		})
	}
	wg.Wait()
	if refused.Load() != n {
		t.Errorf("%d of %d requests refused as unavailable", refused.Load(), n)
	}
	if p := peak.Load(); p > maxConcurrentReviews || p == 0 {
		t.Errorf("peak %d reviews in flight to the API server, bound %d", p, maxConcurrentReviews)
	}
	if hang.Requests() == 0 {
		t.Error("no review reached the API server")
	}
	t.Logf("peak %d concurrent reviews for %d made-up tokens; %d connections opened", peak.Load(), n, hang.Requests())
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
