package authn

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/common/model"
)

// oidcProvider serves a discovery document and the key set it names; the
// test can move the key set and change the advertised issuer.
type oidcProvider struct {
	*httptest.Server
	mu       sync.Mutex
	issuer   string // "" means the server's own URL
	jwksPath string
	keys     []map[string]string
}

func newOIDCProvider(t testing.TB) *oidcProvider {
	p := &oidcProvider{jwksPath: "/keys/v1"}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		defer p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			iss := p.issuer
			if iss == "" {
				iss = p.URL
			}
			_ = json.NewEncoder(w).Encode(map[string]string{"issuer": iss, "jwks_uri": p.URL + p.jwksPath})
		case p.jwksPath:
			_ = json.NewEncoder(w).Encode(map[string]any{"keys": p.keys})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *oidcProvider) update(f func(p *oidcProvider)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p)
}

// TestOIDCDiscovery: the key set is found through the issuer's discovery
// document, followed when it moves, the issuer is enforced, and a document
// naming another issuer hands out no keys.
func TestOIDCDiscovery(t *testing.T) {
	testKeys(t)
	idp := newOIDCProvider(t)
	idp.update(func(p *oidcProvider) { p.keys = []map[string]string{rsaJWK("k1", &rsaKey.PublicKey)} })
	id := newTestIdentifier(t, jwtConfig(func(c *JWTConfig) {
		c.SecretKey = ""
		c.Issuer = ""
		c.OIDCIssuerURL = idp.URL
		c.JWKSRefreshInterval = model.Duration(time.Second)
	}))
	claims := claimsFor("team-a", func(c jwt.MapClaims) { c["iss"] = idp.URL })
	check := func(what, tok string, want error) {
		t.Helper()
		_, err := id.Identify(requestWith(bearer(tok)))
		if (want == nil && err != nil) || (want != nil && !errors.Is(err, want)) {
			t.Errorf("%s: err = %v, want %v", what, err, want)
		}
	}
	tokK1 := sign(t, jwt.SigningMethodRS256, rsaKey, "k1", claims)
	check("token of the issuer", tokK1, nil)
	check("token of another issuer, same key", sign(t, jwt.SigningMethodRS256, rsaKey, "k1", claimsFor("team-a", nil)), ErrInvalidCredentials)
	check("token by a key not published", sign(t, jwt.SigningMethodRS256, rsaKey2, "k2", claims), ErrInvalidCredentials)

	// The provider moves its key set and rotates: found through discovery.
	idp.update(func(p *oidcProvider) {
		p.jwksPath = "/keys/v2"
		p.keys = []map[string]string{rsaJWK("k2", &rsaKey2.PublicKey)}
	})
	tokK2 := sign(t, jwt.SigningMethodRS256, rsaKey2, "k2", claims)
	eventually(t, 5*time.Second, "key set moved and rotated", func() bool {
		_, err := id.Identify(requestWith(bearer(tokK2)))
		return err == nil
	})

	// A discovery document that names another issuer yields no keys.
	other := newOIDCProvider(t)
	other.update(func(p *oidcProvider) {
		p.issuer = "https://evil.example"
		p.keys = []map[string]string{rsaJWK("k1", &rsaKey.PublicKey)}
	})
	bad := newTestIdentifier(t, jwtConfig(func(c *JWTConfig) {
		c.SecretKey = ""
		c.Issuer = ""
		c.OIDCIssuerURL = other.URL
	}))
	tok := sign(t, jwt.SigningMethodRS256, rsaKey, "k1", claimsFor("team-a", func(c jwt.MapClaims) { c["iss"] = other.URL }))
	if _, err := bad.Identify(requestWith(bearer(tok))); !errors.Is(err, ErrInvalidCredentials) {
		t.Errorf("keys of a document naming another issuer: err = %v", err)
	}
}

// TestPublicKeyFileRemovedRevokes: deleting or breaking the public key file
// refuses every token it verified, rather than keeping the last keys.
func TestPublicKeyFileRemovedRevokes(t *testing.T) {
	testKeys(t)
	file := writePEM(t, "PUBLIC KEY", pkix(t, &rsaKey.PublicKey))
	good, _ := os.ReadFile(file)
	id := newTestIdentifier(t, jwtConfig(func(c *JWTConfig) { c.SecretKey = ""; c.PublicKeyFile = file }))
	tok := sign(t, jwt.SigningMethodRS256, rsaKey, "", claimsFor("team-a", nil))
	if _, err := id.Identify(requestWith(bearer(tok))); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		what   string
		change func() error
		want   bool
	}{
		{"broken file", func() error { return os.WriteFile(file, []byte("garbage"), 0o600) }, false},
		{"repaired file", func() error { return os.WriteFile(file, good, 0o600) }, true},
		{"deleted file", func() error { return os.Remove(file) }, false},
	} {
		if err := step.change(); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, step.what, func() bool {
			_, err := id.Identify(requestWith(bearer(tok)))
			return (err == nil) == step.want
		})
	}
}

// TestRepeatedHeadersRefused: a credential or tenant header given twice is
// ambiguous, never resolved by taking the first.
func TestRepeatedHeadersRefused(t *testing.T) {
	testKeys(t)
	tok := sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", claimsFor("team-a", nil))
	jwtID := newTestIdentifier(t, jwtConfig(nil))
	keys := newTestIdentifier(t, typed(TypeAPIKey, func(c *Config) { c.APIKeys = []string{keyLine("k", "team-a")} }))
	for _, c := range []struct {
		name string
		id   Identifier
		h    http.Header
	}{
		{"two Authorization headers", jwtID, http.Header{"Authorization": {"Bearer " + tok, "Bearer " + tok}}},
		{"two X-API-Key headers", keys, http.Header{"X-Api-Key": {"k", "other"}}},
		{"two tenant headers", HeaderIdentifier{}, http.Header{"X-Tenant-Namespace": {"team-a", "monitoring"}}},
	} {
		if _, err := c.id.Identify(requestWith(c.h)); !errors.Is(err, ErrAmbiguous) {
			t.Errorf("%s: err = %v, want ErrAmbiguous", c.name, err)
		}
	}
}
