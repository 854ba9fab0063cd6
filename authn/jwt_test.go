package authn

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/common/model"
)

const testSecret = "a-test-secret-that-is-long-enough-for-hs256"

func claimsFor(ns any, mod func(jwt.MapClaims)) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{
		"iss":       "prometheus-proxy",
		"aud":       "prometheus-users",
		"sub":       "alice",
		"iat":       now.Unix(),
		"nbf":       now.Unix(),
		"exp":       now.Add(time.Hour).Unix(),
		"namespace": ns,
	}
	if mod != nil {
		mod(c)
	}
	return c
}

func sign(t testing.TB, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// unsigned builds a token with alg "none" by hand: the library refuses to.
func unsigned(claims jwt.MapClaims) string {
	h, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT"})
	p, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p) + "."
}

func requestWith(h http.Header) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/api/v1/query?query=up", nil)
	for k, v := range h {
		r.Header[k] = v
	}
	return r
}

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

func newTestIdentifier(t testing.TB, cfg Config) Identifier {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
	id, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("identifier: %v", err)
	}
	return id
}

// typed is DefaultConfig with auth.type typ, changed by mod (may be nil).
func typed(typ string, mod func(*Config)) Config {
	c := DefaultConfig()
	c.Type = typ
	if mod != nil {
		mod(&c)
	}
	return c
}

func jwtConfig(mod func(*JWTConfig)) Config {
	c := typed(TypeJWT, func(c *Config) {
		c.JWT.SecretKey = testSecret
		c.JWT.Issuer = "prometheus-proxy"
		c.JWT.Audience = "prometheus-users"
		c.JWT.AdminClaim = "groups=platform-admins"
	})
	if mod != nil {
		mod(&c.JWT)
	}
	return c
}

func writePEM(t testing.TB, typ string, der ...[]byte) string {
	t.Helper()
	var b []byte
	for _, d := range der {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: d})...)
	}
	path := filepath.Join(t.TempDir(), "keys.pem")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func pkix(t testing.TB, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

var (
	keysOnce sync.Once
	rsaKey   *rsa.PrivateKey
	rsaKey2  *rsa.PrivateKey
	ecKey    *ecdsa.PrivateKey
	ec384Key *ecdsa.PrivateKey
)

func testKeys(t testing.TB) {
	keysOnce.Do(func() {
		var err error
		if rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if rsaKey2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if ecKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
		if ec384Key, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader); err != nil {
			panic(err)
		}
	})
}

type identifyCase struct {
	name    string
	header  http.Header
	wantErr error // nil: accepted
	wantNS  []string
	admin   bool
}

func runIdentifyCases(t *testing.T, id Identifier, cases []identifyCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := id.Identify(requestWith(c.header))
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("err = %v, want %v", err, c.wantErr)
				}
				if got.Admin || len(got.Namespaces) > 0 {
					t.Fatalf("refused request still got an identity: %+v", got)
				}
				for _, v := range c.header {
					if tok := strings.TrimPrefix(v[0], "Bearer "); len(tok) > 8 && strings.Contains(err.Error(), tok) {
						t.Fatalf("error message holds the credential: %v", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !slices.Equal(got.Namespaces, c.wantNS) || got.Admin != c.admin {
				t.Fatalf("identity %+v, want namespaces %v admin %v", got, c.wantNS, c.admin)
			}
		})
	}
}

func TestJWTClaims(t *testing.T) {
	id := newTestIdentifier(t, jwtConfig(nil))
	hs := func(ns any, mod func(jwt.MapClaims)) http.Header {
		return bearer(sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", claimsFor(ns, mod)))
	}
	ago := func(d time.Duration) int64 { return time.Now().Add(-d).Unix() }
	ahead := func(d time.Duration) int64 { return time.Now().Add(d).Unix() }
	runIdentifyCases(t, id, []identifyCase{
		{name: "valid", header: hs("team-a", nil), wantNS: []string{"team-a"}},
		{name: "scheme is case-insensitive", header: http.Header{"Authorization": {"bearer " + sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", claimsFor("team-a", nil))}}, wantNS: []string{"team-a"}},
		{name: "HS512", header: bearer(sign(t, jwt.SigningMethodHS512, []byte(testSecret), "", claimsFor("team-a", nil))), wantNS: []string{"team-a"}},
		{name: "namespace list", header: hs([]string{"team-a", "team-b"}, nil), wantNS: []string{"team-a", "team-b"}},
		{name: "admin group", header: hs("team-a", func(c jwt.MapClaims) { c["groups"] = []string{"dev", "platform-admins"} }), wantNS: []string{"team-a"}, admin: true},
		{name: "admin group as string", header: hs(nil, func(c jwt.MapClaims) { c["groups"] = "platform-admins" }), admin: true},
		{name: "other group is no admin", header: hs("team-a", func(c jwt.MapClaims) { c["groups"] = []string{"platform-admins-not"} }), wantNS: []string{"team-a"}},
		{name: "expired within leeway", header: hs("team-a", func(c jwt.MapClaims) { c["exp"] = ago(10 * time.Second) }), wantNS: []string{"team-a"}},
		{name: "expired", header: hs("team-a", func(c jwt.MapClaims) { c["exp"] = ago(2 * time.Minute) }), wantErr: ErrInvalidCredentials},
		{name: "no exp", header: hs("team-a", func(c jwt.MapClaims) { delete(c, "exp") }), wantErr: ErrInvalidCredentials},
		{name: "not yet valid", header: hs("team-a", func(c jwt.MapClaims) { c["nbf"] = ahead(2 * time.Minute) }), wantErr: ErrInvalidCredentials},
		{name: "nbf within leeway", header: hs("team-a", func(c jwt.MapClaims) { c["nbf"] = ahead(10 * time.Second) }), wantNS: []string{"team-a"}},
		{name: "issued in the future", header: hs("team-a", func(c jwt.MapClaims) { c["iat"] = ahead(10 * time.Minute) }), wantErr: ErrInvalidCredentials},
		{name: "wrong issuer", header: hs("team-a", func(c jwt.MapClaims) { c["iss"] = "someone-else" }), wantErr: ErrInvalidCredentials},
		{name: "no issuer", header: hs("team-a", func(c jwt.MapClaims) { delete(c, "iss") }), wantErr: ErrInvalidCredentials},
		{name: "wrong audience", header: hs("team-a", func(c jwt.MapClaims) { c["aud"] = "grafana" }), wantErr: ErrInvalidCredentials},
		{name: "audience list holding ours", header: hs("team-a", func(c jwt.MapClaims) { c["aud"] = []string{"grafana", "prometheus-users"} }), wantNS: []string{"team-a"}},
		{name: "no audience", header: hs("team-a", func(c jwt.MapClaims) { delete(c, "aud") }), wantErr: ErrInvalidCredentials},
		{name: "wrong secret", header: bearer(sign(t, jwt.SigningMethodHS256, []byte("another-secret-of-sufficient-length!!"), "", claimsFor("team-a", nil))), wantErr: ErrInvalidCredentials},
		{name: "tampered payload", header: bearer(tamper(sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", claimsFor("team-a", nil)), claimsFor("team-b", nil))), wantErr: ErrInvalidCredentials},
		{name: "alg none", header: bearer(unsigned(claimsFor("team-a", nil))), wantErr: ErrInvalidCredentials},
		{name: "alg none, admin", header: bearer(unsigned(claimsFor("team-a", func(c jwt.MapClaims) { c["groups"] = "platform-admins" }))), wantErr: ErrInvalidCredentials},
		{name: "garbage", header: bearer("not.a.token"), wantErr: ErrInvalidCredentials},
		{name: "namespace not a string", header: hs(42, nil), wantErr: ErrInvalidCredentials},
		{name: "namespace list with a number", header: hs([]any{"team-a", 1}, nil), wantErr: ErrInvalidCredentials},
		{name: "no header", header: nil, wantErr: ErrNoCredentials},
		{name: "basic auth", header: http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}}, wantErr: ErrNoCredentials},
		{name: "empty bearer", header: http.Header{"Authorization": {"Bearer "}}, wantErr: ErrNoCredentials},
	})
}

// tamper swaps a signed token's payload for another, keeping the signature.
func tamper(tok string, claims jwt.MapClaims) string {
	parts := strings.Split(tok, ".")
	p, _ := json.Marshal(claims)
	parts[1] = base64.RawURLEncoding.EncodeToString(p)
	return strings.Join(parts, ".")
}

func TestJWTPublicKeysAndAlgConfusion(t *testing.T) {
	testKeys(t)
	rsaDER := pkix(t, &rsaKey.PublicKey)
	file := writePEM(t, "PUBLIC KEY", rsaDER, pkix(t, &ecKey.PublicKey))
	pemBytes, _ := os.ReadFile(file)

	onlyKeys := newTestIdentifier(t, jwtConfig(func(c *JWTConfig) { c.SecretKey = ""; c.PublicKeyFile = file }))
	both := newTestIdentifier(t, jwtConfig(func(c *JWTConfig) { c.PublicKeyFile = file }))
	claims := claimsFor("team-a", nil)
	cases := []identifyCase{
		{name: "RS256", header: bearer(sign(t, jwt.SigningMethodRS256, rsaKey, "", claims)), wantNS: []string{"team-a"}},
		{name: "PS256", header: bearer(sign(t, jwt.SigningMethodPS256, rsaKey, "", claims)), wantNS: []string{"team-a"}},
		{name: "ES256", header: bearer(sign(t, jwt.SigningMethodES256, ecKey, "", claims)), wantNS: []string{"team-a"}},
		{name: "RS256 by another key", header: bearer(sign(t, jwt.SigningMethodRS256, rsaKey2, "", claims)), wantErr: ErrInvalidCredentials},
		{name: "ES384 by a key not configured", header: bearer(sign(t, jwt.SigningMethodES384, ec384Key, "", claims)), wantErr: ErrInvalidCredentials},
		// The classic forgery: HMAC keyed with the public key everyone can read.
		{name: "HS256 keyed with the public key PEM", header: bearer(sign(t, jwt.SigningMethodHS256, pemBytes, "", claims)), wantErr: ErrInvalidCredentials},
		{name: "HS256 keyed with the public key DER", header: bearer(sign(t, jwt.SigningMethodHS256, rsaDER, "", claims)), wantErr: ErrInvalidCredentials},
		{name: "alg none", header: bearer(unsigned(claims)), wantErr: ErrInvalidCredentials},
	}
	t.Run("public keys only", func(t *testing.T) {
		runIdentifyCases(t, onlyKeys, append(cases,
			identifyCase{name: "HS256 by the right secret but no secret configured", header: bearer(sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", claims)), wantErr: ErrInvalidCredentials}))
	})
	t.Run("secret and public keys", func(t *testing.T) {
		runIdentifyCases(t, both, append(cases,
			identifyCase{name: "HS256 by the secret", header: bearer(sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", claims)), wantNS: []string{"team-a"}}))
	})
	t.Run("secret only refuses RS256", func(t *testing.T) {
		runIdentifyCases(t, newTestIdentifier(t, jwtConfig(nil)), []identifyCase{
			{name: "RS256", header: bearer(sign(t, jwt.SigningMethodRS256, rsaKey, "", claims)), wantErr: ErrInvalidCredentials},
		})
	})
	t.Run("certificate and PKCS1 blocks", func(t *testing.T) {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ecKey.PublicKey, ecKey)
		if err != nil {
			t.Fatal(err)
		}
		keys, err := parsePublicKeys(append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)})...))
		if err != nil || len(keys) != 2 {
			t.Fatalf("keys %v, err %v", keys, err)
		}
		priv, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
		if _, err := parsePublicKeys(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: priv})); err == nil {
			t.Fatal("a private key was accepted as a public key file")
		}
		if _, err := parsePublicKeys([]byte("nothing here")); err == nil {
			t.Fatal("a file without keys was accepted")
		}
	})
}

// jwksServer serves a key set that the test can change, counting fetches.
type jwksServer struct {
	*httptest.Server
	mu      sync.Mutex
	body    []byte
	status  int
	fetches atomic.Int64
}

func newJWKSServer(t testing.TB) *jwksServer {
	s := &jwksServer{status: http.StatusOK}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		defer s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(s.status)
		_, _ = w.Write(s.body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(status int, keys ...map[string]string) {
	b, _ := json.Marshal(map[string]any{"keys": keys})
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.body = status, b
}

func rsaJWK(kid string, k *rsa.PublicKey) map[string]string {
	return map[string]string{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
		"n": base64.RawURLEncoding.EncodeToString(k.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.E)).Bytes())}
}

func ecJWK(kid string, k *ecdsa.PublicKey) map[string]string {
	b, _ := k.Bytes() // 0x04 || X || Y
	size := (len(b) - 1) / 2
	return map[string]string{"kty": "EC", "kid": kid, "crv": k.Curve.Params().Name,
		"x": base64.RawURLEncoding.EncodeToString(b[1 : 1+size]),
		"y": base64.RawURLEncoding.EncodeToString(b[1+size:])}
}

func TestJWKSRotation(t *testing.T) {
	testKeys(t)
	srv := newJWKSServer(t)
	srv.set(http.StatusOK, rsaJWK("k1", &rsaKey.PublicKey), ecJWK("e1", &ecKey.PublicKey),
		// A symmetric key in a public set must never verify anything.
		map[string]string{"kty": "oct", "kid": "oct1", "k": base64.RawURLEncoding.EncodeToString([]byte(testSecret))})
	cfg := jwtConfig(func(c *JWTConfig) {
		c.SecretKey = ""
		c.JWKSURL = srv.URL
		c.JWKSRefreshInterval = model.Duration(time.Second)
	})
	id := newTestIdentifier(t, cfg)
	claims := claimsFor("team-a", nil)
	tokK1 := sign(t, jwt.SigningMethodRS256, rsaKey, "k1", claims)
	tokK2 := sign(t, jwt.SigningMethodRS256, rsaKey2, "k2", claims)
	check := func(what, tok string, want bool) {
		t.Helper()
		_, err := id.Identify(requestWith(bearer(tok)))
		if (err == nil) != want {
			t.Errorf("%s: err = %v, want accepted=%v", what, err, want)
		}
	}
	check("k1", tokK1, true)
	check("e1", sign(t, jwt.SigningMethodES256, ecKey, "e1", claims), true)
	check("no kid, key found by trying", sign(t, jwt.SigningMethodRS256, rsaKey, "", claims), true)
	check("k1's kid on a token signed by another key", sign(t, jwt.SigningMethodRS256, rsaKey2, "k1", claims), false)
	check("RS256 token naming the EC key", sign(t, jwt.SigningMethodRS256, rsaKey, "e1", claims), false)
	check("HS256 keyed with the set's oct key", sign(t, jwt.SigningMethodHS256, []byte(testSecret), "oct1", claims), false)
	check("k2 before it is published", tokK2, false)

	// Rotation: the provider publishes k2 next to k1, then signs with k2.
	srv.set(http.StatusOK, rsaJWK("k1", &rsaKey.PublicKey), rsaJWK("k2", &rsaKey2.PublicKey))
	eventually(t, 5*time.Second, "k2 accepted after it is published", func() bool {
		_, err := id.Identify(requestWith(bearer(tokK2)))
		return err == nil
	})
	check("k1 still published", tokK1, true)

	// Then k1 is retired: tokens it signed stop working after a refresh.
	srv.set(http.StatusOK, rsaJWK("k2", &rsaKey2.PublicKey))
	eventually(t, 5*time.Second, "k1 refused after it is retired", func() bool {
		_, err := id.Identify(requestWith(bearer(tokK1)))
		return err != nil
	})
	check("k2 after k1 retired", tokK2, true)

	// A provider outage keeps the last keys.
	srv.set(http.StatusInternalServerError)
	time.Sleep(1100 * time.Millisecond)
	check("k2 during an outage", tokK2, true)
	check("k2 during an outage, once the refresh failed", tokK2, true)

	// Tokens naming unknown keys (no valid signature needed) cannot make
	// the proxy fetch the set more than once per gap.
	before := srv.fetches.Load()
	for i := range 50 {
		check("random kid", sign(t, jwt.SigningMethodRS256, rsaKey, fmt.Sprintf("kid-%d", i), claims), false)
	}
	if n := srv.fetches.Load() - before; n > 2 {
		t.Errorf("50 tokens with unknown kids caused %d fetches of the key set", n)
	}
}

func TestJWKSDownAtStart(t *testing.T) {
	testKeys(t)
	srv := newJWKSServer(t)
	srv.set(http.StatusServiceUnavailable)
	id := newTestIdentifier(t, jwtConfig(func(c *JWTConfig) {
		c.JWKSURL = srv.URL
		c.JWKSRefreshInterval = model.Duration(time.Second)
	}))
	tok := sign(t, jwt.SigningMethodRS256, rsaKey, "k1", claimsFor("team-a", nil))
	if _, err := id.Identify(requestWith(bearer(tok))); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("with the provider down: err = %v", err)
	}
	srv.set(http.StatusOK, rsaJWK("k1", &rsaKey.PublicKey))
	eventually(t, 5*time.Second, "accepted once the provider answers", func() bool {
		_, err := id.Identify(requestWith(bearer(tok)))
		return err == nil
	})
}

func TestParseJWKS(t *testing.T) {
	testKeys(t)
	good := ecJWK("p256", &ecKey.PublicKey)
	offCurve := ecJWK("bad", &ecKey.PublicKey)
	offCurve["y"] = offCurve["x"]
	enc := rsaJWK("enc", &rsaKey.PublicKey)
	enc["use"] = "enc"
	b, _ := json.Marshal(map[string]any{"keys": []map[string]string{good, offCurve, enc, {"kty": "OKP", "kid": "ed"}, {"kty": "RSA", "kid": "empty"}}})
	keys, skipped, err := parseJWKS(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0].kid != "p256" || skipped != 4 {
		t.Fatalf("keys %+v skipped %d", keys, skipped)
	}
	if _, _, err := parseJWKS([]byte(`{"not":"a set"}`)); err == nil {
		t.Fatal("a document without keys was accepted")
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []struct {
		cfg Config
		ok  bool
	}{
		{DefaultConfig(), true},
		{typed("ldap", nil), false},
		{typed("", nil), false},
		{typed(TypeJWT, nil), false},
		{typed(TypeJWT, func(c *Config) { c.JWT.SecretKey = "x" }), true},
		{typed(TypeJWT, func(c *Config) { c.JWT.SecretKey, c.JWT.NamespaceClaim = "x", "" }), false},
		{typed(TypeJWT, func(c *Config) { c.JWT.JWKSURL = "file:///etc/keys" }), false},
		{typed(TypeJWT, func(c *Config) { c.JWT.SecretKey, c.JWT.AdminClaim = "x", "groups=" }), false},
		{typed(TypeJWT, func(c *Config) { c.JWT.SecretKey, c.JWT.AdminClaim = "x", "is_admin" }), true},
		{typed(TypeAPIKey, nil), false},
		{typed(TypeAPIKey, func(c *Config) { c.APIKeys = []string{"abc team-a"} }), false},
		{typed(TypeAPIKey, func(c *Config) { c.APIKeys = []string{strings.Repeat("ab", 32) + " team-a"} }), true},
		{typed(TypeNone, func(c *Config) { c.MaxNamespaces = 0 }), false},
	} {
		err := c.cfg.Validate()
		if (err == nil) != c.ok {
			t.Errorf("%+v: err = %v, want ok=%v", c.cfg, err, c.ok)
		}
	}
}

func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestJWTSecretKeyFile: the HMAC secret read from a file (a mounted
// Secret, line end dropped) verifies as the inline one does; a missing or
// empty file fails the start, and the two keys exclude each other.
func TestJWTSecretKeyFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, []byte(testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	id := newTestIdentifier(t, jwtConfig(func(c *JWTConfig) { c.SecretKey, c.SecretKeyFile = "", file }))
	runIdentifyCases(t, id, []identifyCase{
		{name: "signed with the file's secret", header: bearer(sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", claimsFor("team-a", nil))), wantNS: []string{"team-a"}},
		{name: "signed with the secret and its line end", header: bearer(sign(t, jwt.SigningMethodHS256, []byte(testSecret+"\n"), "", claimsFor("team-a", nil))), wantErr: ErrInvalidCredentials},
	})
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{filepath.Join(t.TempDir(), "missing"): "no such file", empty: "empty"} {
		cfg := jwtConfig(func(c *JWTConfig) { c.SecretKey, c.SecretKeyFile = "", path })
		if _, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler)}); err == nil || !strings.Contains(err.Error(), "auth.jwt.secret_key_file") || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v", path, err)
		}
	}
	if err := jwtConfig(func(c *JWTConfig) { c.SecretKeyFile = file }).Validate(); err == nil || !strings.Contains(err.Error(), "exclude") {
		t.Errorf("secret_key with secret_key_file: %v", err)
	}
}
