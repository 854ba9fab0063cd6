package tenants

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/cmd/proxy/app"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/e2e/e2eproxy"
)

// TestAuth runs the authentication and TLS scenarios against one fleet:
// JWT and API-key tenants compared with their oracles, every way a
// credential can be wrong, TLS and mTLS handshakes with generated
// certificates, and backends behind TLS with a bearer token.
func TestAuth(t *testing.T) {
	f := e2eproxy.StartFleet(t)
	t.Run("JWT", func(t *testing.T) { testJWTTenants(t, f) })
	t.Run("JWTWithoutTenancy", func(t *testing.T) { testJWTWithoutTenancy(t, f) })
	t.Run("APIKeys", func(t *testing.T) { testAPIKeyTenants(t, f) })
	t.Run("ServerTLS", func(t *testing.T) { testServerTLS(t, f) })
	t.Run("BackendTLS", func(t *testing.T) { testBackendTLS(t, f) })
}

// startLoggedProxy is StartProxy with request logging on and every log
// level kept, so tests can read what the proxy writes.
func startLoggedProxy(t testing.TB, cfg app.Config) (*e2eproxy.Proxy, *e2eproxy.SyncBuffer) {
	t.Helper()
	cfg.Proxy.EnableRequestLogging = true
	return e2eproxy.StartProxyLogging(t, cfg, slog.LevelDebug)
}

// testIDP is an identity provider: RSA signing keys published as a JWKS
// document, which the test can rotate.
type testIDP struct {
	srv    *httptest.Server
	mu     sync.Mutex
	keys   map[string]*rsa.PrivateKey // published, by kid
	signer string                     // kid that signs new tokens
	issued []string                   // every token handed out, to look for in logs
}

const (
	testIssuer   = "https://idp.example.test"
	testAudience = "prometheus-multi-tenant-proxy"
)

func newTestIDP(t testing.TB) *testIDP {
	idp := &testIDP{keys: map[string]*rsa.PrivateKey{}}
	idp.addKey(t, "k1")
	idp.signer = "k1"
	idp.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		idp.mu.Lock()
		defer idp.mu.Unlock()
		var keys []map[string]string
		for kid, k := range idp.keys {
			keys = append(keys, map[string]string{
				"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
				"n": base64.RawURLEncoding.EncodeToString(k.N.Bytes()),
				"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.E)).Bytes()),
			})
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": keys})
	}))
	t.Cleanup(idp.srv.Close)
	return idp
}

func (idp *testIDP) addKey(t testing.TB, kid string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	idp.mu.Lock()
	defer idp.mu.Unlock()
	idp.keys[kid] = k
}

// token signs claims for namespaces (a string or a list; nil for none);
// mod changes the claims before signing.
func (idp *testIDP) token(t testing.TB, namespaces any, mod func(jwt.MapClaims)) string {
	t.Helper()
	now := time.Now()
	claims := jwt.MapClaims{
		"iss": testIssuer, "aud": testAudience, "sub": "alice@example.test",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}
	if namespaces != nil {
		claims["namespaces"] = namespaces
	}
	if mod != nil {
		mod(claims)
	}
	idp.mu.Lock()
	kid, key := idp.signer, idp.keys[idp.signer]
	idp.mu.Unlock()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	idp.remember(s)
	return s
}

func (idp *testIDP) remember(tok string) {
	idp.mu.Lock()
	defer idp.mu.Unlock()
	idp.issued = append(idp.issued, tok)
}

func (idp *testIDP) authYAML() string {
	return fmt.Sprintf(`auth:
  type: jwt
  jwt:
    jwks_url: %s
    jwks_refresh_interval: 1s
    issuer: %s
    audience: %s
    namespace_claim: namespaces
    admin_claim: groups=platform-admins
`, idp.srv.URL, testIssuer, testAudience)
}

func bearerHeader(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

func withHeader(h http.Header, k, v string) http.Header {
	h = h.Clone()
	h.Set(k, v)
	return h
}

// refusal is a request the proxy must refuse with code, in Prometheus JSON.
type refusal struct {
	name      string
	header    http.Header
	code      int
	challenge string // expected in WWW-Authenticate for 401
}

func checkRefusals(t *testing.T, base string, path string, cases []refusal) {
	t.Helper()
	for _, c := range cases {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		for k, v := range c.header {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		var e struct{ Status, ErrorType, Error string }
		_ = json.Unmarshal(body, &e)
		switch {
		case resp.StatusCode != c.code:
			t.Errorf("%s: HTTP %d, want %d: %s", c.name, resp.StatusCode, c.code, body)
		case e.Status != "error" || e.ErrorType == "" || e.Error == "":
			t.Errorf("%s: not a Prometheus JSON error: %s", c.name, body)
		case c.code == http.StatusUnauthorized && !strings.Contains(resp.Header.Get("WWW-Authenticate"), c.challenge):
			t.Errorf("%s: WWW-Authenticate %q, want it to hold %q", c.name, resp.Header.Get("WWW-Authenticate"), c.challenge)
		}
	}
}

func testJWTTenants(t *testing.T, f *e2eproxy.Fleet) {
	idp := newTestIDP(t)
	cfg := e2eproxy.ConfigFromYAML(t, idp.authYAML())
	dir := e2eproxy.TenantFiles(t)
	tc := e2eproxy.TenantConfig(f, dir)
	cfg.Discovery, cfg.Tenants = tc.Discovery, tc.Tenants
	p, logs := startLoggedProxy(t, cfg)

	teamA := idp.token(t, "team-a", nil)
	oracleA := e2eproxy.OracleFor(t, f, "team-a", e2eproxy.PolicyOf(t, p, "team-a"))

	t.Run("tenant-equals-oracle", func(t *testing.T) {
		e2eproxy.RunSuiteMinData(t, oracleA.URL, p.URL, e2eproxy.SuiteRequests(f.Data), bearerHeader(teamA), 40)
		for _, r := range e2eproxy.AttackRequests(f) {
			want := e2eproxy.DoRequest(t, oracleA.URL, r)
			r.Header = bearerHeader(teamA)
			e2eproxy.CompareAnswers(t, "attack "+r.String(), want, e2eproxy.DoRequest(t, p.URL, r))
		}
	})

	t.Run("refusals", func(t *testing.T) {
		other, _ := rsa.GenerateKey(rand.Reader, 2048)
		forged := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
			"iss": testIssuer, "aud": testAudience, "namespaces": "team-a", "exp": time.Now().Add(time.Hour).Unix(),
		})
		forged.Header["kid"] = "k1"
		wrongKey, _ := forged.SignedString(other)
		idp.remember(wrongKey)
		noneTok := noneToken(jwt.MapClaims{"iss": testIssuer, "aud": testAudience, "namespaces": "team-a", "groups": "platform-admins", "exp": time.Now().Add(time.Hour).Unix()})
		idp.remember(noneTok)
		// HS256 keyed with what anyone can fetch from the JWKS URL.
		resp, err := http.Get(idp.srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		jwksDoc, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		confused, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"iss": testIssuer, "aud": testAudience, "namespaces": "team-a", "exp": time.Now().Add(time.Hour).Unix(),
		}).SignedString(jwksDoc)
		idp.remember(confused)

		const challenge = `Bearer realm="prometheus-multi-tenant-proxy"`
		const invalid = `error="invalid_token"`
		checkRefusals(t, p.URL, "/api/v1/query?query=up", []refusal{
			{name: "no token", header: nil, code: 401, challenge: challenge},
			{name: "tenant header alone (spoofing)", header: e2eproxy.TenantHeader("team-a"), code: 401, challenge: challenge},
			{name: "admin namespace header alone (spoofing)", header: e2eproxy.TenantHeader("monitoring"), code: 401, challenge: challenge},
			{name: "expired", header: bearerHeader(idp.token(t, "team-a", func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-5 * time.Minute).Unix() })), code: 401, challenge: invalid},
			{name: "not yet valid", header: bearerHeader(idp.token(t, "team-a", func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(5 * time.Minute).Unix() })), code: 401, challenge: invalid},
			{name: "wrong issuer", header: bearerHeader(idp.token(t, "team-a", func(c jwt.MapClaims) { c["iss"] = "https://evil.example.test" })), code: 401, challenge: invalid},
			{name: "wrong audience", header: bearerHeader(idp.token(t, "team-a", func(c jwt.MapClaims) { c["aud"] = "grafana" })), code: 401, challenge: invalid},
			{name: "wrong signature", header: bearerHeader(wrongKey), code: 401, challenge: invalid},
			{name: "alg none", header: bearerHeader(noneTok), code: 401, challenge: invalid},
			{name: "alg confusion", header: bearerHeader(confused), code: 401, challenge: invalid},
			{name: "truncated", header: bearerHeader(teamA[:len(teamA)-10]), code: 401, challenge: invalid},
			{name: "namespace outside the token", header: withHeader(bearerHeader(teamA), "X-Tenant-Namespace", "team-b"), code: 403},
			{name: "admin namespace outside the token", header: withHeader(bearerHeader(teamA), "X-Tenant-Namespace", "monitoring"), code: 403},
			{name: "several namespaces, none chosen", header: bearerHeader(idp.token(t, []string{"team-a", "team-b"}, nil)), code: 403},
			{name: "namespace without a policy", header: bearerHeader(idp.token(t, "nobody", nil)), code: 403},
			{name: "no namespace", header: bearerHeader(idp.token(t, nil, nil)), code: 403},
		})
	})

	t.Run("choosing-among-own-namespaces", func(t *testing.T) {
		both := idp.token(t, []string{"team-a", "team-b"}, nil)
		teamB := idp.token(t, "team-b", nil)
		q := e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {`count by (__name__, namespace) ({__name__=~".+"})`}, "time": {e2eproxy.FormatTime(f.Data.Start.Add(time.Hour))}}}
		asB := q
		asB.Header = withHeader(bearerHeader(both), "X-Tenant-Namespace", "team-b")
		onlyB := q
		onlyB.Header = bearerHeader(teamB)
		asA := q
		asA.Header = bearerHeader(teamA)
		got, want, a := e2eproxy.DoRequest(t, p.URL, asB), e2eproxy.DoRequest(t, p.URL, onlyB), e2eproxy.DoRequest(t, p.URL, asA)
		e2eproxy.CompareAnswers(t, "team-b chosen from a two-namespace token", want, got)
		if !e2eproxy.HasData(t, got) || e2eproxy.DiffAnswers(t, a, got) == "" {
			t.Errorf("choosing team-b did not change what the token reads: %s", e2eproxy.Clip(got.Body))
		}
		assertNoForeignNamespace(t, "team-b chosen", got, "team-b")
	})

	t.Run("admin", func(t *testing.T) {
		admin := idp.token(t, nil, func(c jwt.MapClaims) { c["groups"] = []string{"dev", "platform-admins"} })
		for _, r := range e2eproxy.AttackRequests(f) {
			want := e2eproxy.DoRequest(t, f.Reference.URL, r)
			r.Header = bearerHeader(admin)
			e2eproxy.CompareAnswers(t, "admin "+r.String(), want, e2eproxy.DoRequest(t, p.URL, r))
		}
		monitoring := idp.token(t, "monitoring", nil)
		for _, path := range []string{"/debug/tenants", "/debug/targets", "/metrics"} {
			for _, c := range []struct {
				who  string
				h    http.Header
				code int
			}{
				{"admin claim", bearerHeader(admin), 200},
				{"admin namespace", bearerHeader(monitoring), 200},
				{"team-a", bearerHeader(teamA), 403},
				{"team-a naming monitoring", withHeader(bearerHeader(teamA), "X-Tenant-Namespace", "monitoring"), 403},
				{"header alone", e2eproxy.TenantHeader("monitoring"), 401},
				{"nobody", nil, 401},
			} {
				if a := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: path, Header: c.h}); a.Code != c.code {
					t.Errorf("%s as %s: HTTP %d, want %d: %s", path, c.who, a.Code, c.code, e2eproxy.Clip(a.Body))
				}
			}
		}
		// Browsers get HTML tables.
		for path, want := range map[string]string{"/debug/targets": "cluster-a", "/debug/tenants": "team-a"} {
			req, _ := http.NewRequest(http.MethodGet, p.URL+path, nil)
			req.Header = withHeader(bearerHeader(admin), "Accept", "text/html,application/xhtml+xml,*/*;q=0.8")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") || !strings.Contains(string(body), "<table>") || !strings.Contains(string(body), want) {
				t.Errorf("%s as HTML: %s\n%s", path, ct, e2eproxy.Clip(body))
			}
		}
	})

	t.Run("key-rotation", func(t *testing.T) {
		old := idp.token(t, "team-a", nil)
		idp.addKey(t, "k2")
		idp.mu.Lock()
		idp.signer = "k2"
		idp.mu.Unlock()
		fresh := idp.token(t, "team-a", nil)
		q := e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {"up"}}}
		status := func(tok string) int {
			r := q
			r.Header = bearerHeader(tok)
			return e2eproxy.DoRequest(t, p.URL, r).Code
		}
		e2eproxy.WaitFor(t, 10*time.Second, "token of the new key accepted", func() bool { return status(fresh) == 200 })
		if c := status(old); c != 200 {
			t.Errorf("token of the old key, still published: HTTP %d", c)
		}
		idp.mu.Lock()
		delete(idp.keys, "k1")
		idp.mu.Unlock()
		e2eproxy.WaitFor(t, 10*time.Second, "token of the retired key refused", func() bool { return status(old) == 401 })
		if c := status(fresh); c != 200 {
			t.Errorf("token of the new key after the old one retired: HTTP %d", c)
		}
	})

	t.Run("logs", func(t *testing.T) {
		idp.mu.Lock()
		secrets := append([]string(nil), idp.issued...)
		idp.mu.Unlock()
		checkLogs(t, logs.String(), secrets, "jwt:alice@example.test")
	})
}

// testJWTWithoutTenancy: with no tenant source every request sees
// everything, but a configured authenticator still has to accept it.
func testJWTWithoutTenancy(t *testing.T, f *e2eproxy.Fleet) {
	idp := newTestIDP(t)
	cfg := e2eproxy.ConfigFromYAML(t, idp.authYAML())
	cfg.Discovery = e2eproxy.BaseConfig(f).Discovery
	p, _ := startLoggedProxy(t, cfg)
	checkRefusals(t, p.URL, "/api/v1/query?query=up", []refusal{
		{name: "no token", code: 401, challenge: "Bearer"},
		{name: "tenant header alone", header: e2eproxy.TenantHeader("team-a"), code: 401, challenge: "Bearer"},
		{name: "expired", header: bearerHeader(idp.token(t, "team-a", func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Hour).Unix() })), code: 401, challenge: "invalid_token"},
	})
	checkRefusals(t, p.URL, "/metrics", []refusal{{name: "metrics without token", code: 401, challenge: "Bearer"}})
	tok := idp.token(t, "team-a", nil)
	for _, r := range e2eproxy.AttackRequests(f) {
		want := e2eproxy.DoRequest(t, f.Reference.URL, r)
		r.Header = bearerHeader(tok)
		e2eproxy.CompareAnswers(t, "any valid token sees everything: "+r.String(), want, e2eproxy.DoRequest(t, p.URL, r))
	}
	for _, path := range []string{"/health", "/ready"} {
		if a := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: path}); a.Code != 200 {
			t.Errorf("%s without a token: HTTP %d, want 200 (probes carry no credentials)", path, a.Code)
		}
	}
}

// noneToken builds an unsigned token by hand: the library refuses to.
func noneToken(claims jwt.MapClaims) string {
	h, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT"})
	b, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(b) + "."
}

// checkLogs fails if any log line holds a credential, or if request lines
// lack the fields operators rely on (the subject starting with subject).
func checkLogs(t *testing.T, logs string, secrets []string, subject string) {
	t.Helper()
	for _, s := range secrets {
		// The signature part alone is as good as the token for finding it.
		needle := s
		if parts := strings.Split(s, "."); len(parts) == 3 && len(parts[2]) > 16 {
			needle = parts[2]
		}
		if strings.Contains(logs, needle) {
			t.Errorf("a credential appears in the log: %.12s…", s)
		}
	}
	seen, withTargets := 0, 0
	for line := range strings.SplitSeq(logs, "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != "request" || rec["path"] != "/api/v1/query" || rec["status"] != 200.0 {
			continue
		}
		seen++
		for _, k := range []string{"tenant", "subject", "method", "path", "target", "remote_ip", "duration", "status", "series", "samples", "query"} {
			if _, ok := rec[k]; !ok {
				t.Errorf("request log line lacks %q: %s", k, line)
			}
		}
		if targets, _ := rec["target"].([]any); len(targets) > 0 {
			withTargets++
		}
		if sub, _ := rec["subject"].(string); !strings.HasPrefix(sub, subject) {
			t.Errorf("request log subject %q, want %s…", sub, subject)
		}
	}
	if seen == 0 {
		t.Errorf("no request log line for a successful /api/v1/query")
	}
	if seen > 0 && withTargets == 0 {
		t.Errorf("no request log line names the backends it read (target)")
	}
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func testAPIKeyTenants(t *testing.T, f *e2eproxy.Fleet) {
	keyA, keyAdmin, keyNext := randomKey(t), randomKey(t), randomKey(t)
	keysFile := filepath.Join(t.TempDir(), "api-keys")
	writeKeys := func(lines ...string) {
		if err := os.WriteFile(keysFile, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeKeys("# keys are stored as SHA-256, never in the clear", sha256Hex(keyA)+" team-a", sha256Hex(keyAdmin)+" monitoring")
	cfg := e2eproxy.ConfigFromYAML(t, "auth:\n  type: api_key\n  api_keys_file: "+keysFile+"\n")
	tc := e2eproxy.TenantConfig(f, e2eproxy.TenantFiles(t))
	cfg.Discovery, cfg.Tenants = tc.Discovery, tc.Tenants
	p, logs := startLoggedProxy(t, cfg)
	oracleA := e2eproxy.OracleFor(t, f, "team-a", e2eproxy.PolicyOf(t, p, "team-a"))

	apiKey := func(k string) http.Header { return http.Header{"X-Api-Key": {k}} }
	for i, r := range e2eproxy.AttackRequests(f) {
		want := e2eproxy.DoRequest(t, oracleA.URL, r)
		// Both ways of sending a key.
		if r.Header = apiKey(keyA); i%2 == 1 {
			r.Header = bearerHeader(keyA)
		}
		e2eproxy.CompareAnswers(t, "team-a key "+r.String(), want, e2eproxy.DoRequest(t, p.URL, r))
	}
	checkRefusals(t, p.URL, "/api/v1/query?query=up", []refusal{
		{name: "no key", code: 401, challenge: "Bearer"},
		{name: "unknown key", header: apiKey(keyNext), code: 401, challenge: `error="invalid_token"`},
		{name: "the stored hash instead of the key", header: apiKey(sha256Hex(keyA)), code: 401, challenge: "Bearer"},
		{name: "tenant header alone", header: e2eproxy.TenantHeader("team-a"), code: 401, challenge: "Bearer"},
		{name: "namespace outside the key", header: withHeader(apiKey(keyA), "X-Tenant-Namespace", "team-b"), code: 403},
	})
	checkRefusals(t, p.URL, "/metrics", []refusal{{name: "team key on /metrics", header: apiKey(keyA), code: 403}})
	if a := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: "/metrics", Header: apiKey(keyAdmin)}); a.Code != 200 {
		t.Errorf("admin key on /metrics: HTTP %d", a.Code)
	}

	// Rotation through the file: the new key works, the old one stops.
	writeKeys(sha256Hex(keyNext) + " team-a")
	q := e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {"up"}}}
	status := func(k string) int {
		r := q
		r.Header = apiKey(k)
		return e2eproxy.DoRequest(t, p.URL, r).Code
	}
	e2eproxy.WaitFor(t, 10*time.Second, "new key accepted", func() bool { return status(keyNext) == 200 })
	if c := status(keyA); c != 401 {
		t.Errorf("removed key: HTTP %d, want 401", c)
	}
	checkLogs(t, logs.String(), []string{keyA, keyAdmin, keyNext}, "api_key:")
}

func randomKey(t testing.TB) string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// testCA issues certificates for tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // the CA certificate, PEM
	dir  string
	next atomic.Int64
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, dir: t.TempDir()}
	ca.next.Store(1)
	ca.file = filepath.Join(ca.dir, "ca.pem")
	writeFile(t, ca.file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return ca
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	// Write then rename, as a Secret update does, so a reader never sees
	// half a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

type certOpts struct {
	client   bool          // client certificate, else server (127.0.0.1, localhost)
	validFor time.Duration // negative: already expired
}

// issue returns a certificate and key named cn.
func (ca *testCA) issue(t testing.TB, cn string, o certOpts) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if o.validFor == 0 {
		o.validFor = time.Hour
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.next.Add(1)),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-2 * time.Hour),
		NotAfter:     time.Now().Add(o.validFor),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	if o.client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// writePair writes a certificate and its key as PEM files.
func writePair(t testing.TB, c tls.Certificate, certFile, keyFile string) {
	t.Helper()
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	// Key first: a reader that sees the new certificate must find its key.
	writeFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	writeFile(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}))
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// tlsGet makes one request on a fresh connection and returns the status and
// the server's certificate.
func tlsGet(base string, cfg *tls.Config) (int, *x509.Certificate, error) {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
	resp, err := client.Get(base + "/api/v1/query?query=vector(1)")
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	_, _ = io.Copy(io.Discard, resp.Body)
	var peer *x509.Certificate
	if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
		peer = resp.TLS.PeerCertificates[0]
	}
	return resp.StatusCode, peer, nil
}

func testServerTLS(t *testing.T, f *e2eproxy.Fleet) {
	serverCA, clientCA, otherCA := newTestCA(t, "server CA"), newTestCA(t, "client CA"), newTestCA(t, "other CA")
	dir := t.TempDir()
	certFile, keyFile, clientCAFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "client-ca.pem")
	writePair(t, serverCA.issue(t, "proxy-1", certOpts{}), certFile, keyFile)
	trusting := func(certs ...tls.Certificate) *tls.Config {
		return &tls.Config{RootCAs: serverCA.pool(), Certificates: certs}
	}

	t.Run("TLS", func(t *testing.T) {
		cfg := e2eproxy.ConfigFromYAML(t, fmt.Sprintf("server:\n  tls:\n    cert_file: %s\n    key_file: %s\n", certFile, keyFile))
		cfg.Discovery = e2eproxy.BaseConfig(f).Discovery
		p, _ := startLoggedProxy(t, cfg)
		code, peer, err := tlsGet(p.URL, trusting())
		if err != nil || code != 200 || peer.Subject.CommonName != "proxy-1" {
			t.Fatalf("handshake with the CA trusted: code %d, peer %v, err %v", code, peer, err)
		}
		if _, _, err := tlsGet(p.URL, &tls.Config{}); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("a client not trusting the CA connected: %v", err)
		}
		if _, _, err := tlsGet(p.URL, &tls.Config{RootCAs: serverCA.pool(), MaxVersion: tls.VersionTLS11}); err == nil {
			t.Error("TLS 1.1 was accepted")
		}
		if resp, err := http.Get("http" + strings.TrimPrefix(p.URL, "https") + "/health"); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == 200 {
				t.Error("plain HTTP answered on the TLS port")
			}
		}
		// A renewed certificate is served without a restart.
		writePair(t, serverCA.issue(t, "proxy-2", certOpts{}), certFile, keyFile)
		e2eproxy.WaitFor(t, 10*time.Second, "renewed certificate served", func() bool {
			_, peer, err := tlsGet(p.URL, trusting())
			return err == nil && peer.Subject.CommonName == "proxy-2"
		})
		// A broken update keeps the last good certificate serving.
		writeFile(t, certFile, []byte("not a certificate"))
		time.Sleep(100 * time.Millisecond)
		if _, peer, err := tlsGet(p.URL, trusting()); err != nil || peer.Subject.CommonName != "proxy-2" {
			t.Errorf("after a broken certificate file: peer %v, err %v", peer, err)
		}
		writePair(t, serverCA.issue(t, "proxy-1", certOpts{}), certFile, keyFile)
	})

	t.Run("mTLS", func(t *testing.T) {
		writeFile(t, clientCAFile, readFile(t, clientCA.file))
		cfg := e2eproxy.ConfigFromYAML(t, fmt.Sprintf("server:\n  tls:\n    cert_file: %s\n    key_file: %s\n    client_ca_file: %s\n", certFile, keyFile, clientCAFile))
		cfg.Discovery = e2eproxy.BaseConfig(f).Discovery
		p, _ := startLoggedProxy(t, cfg)
		good := clientCA.issue(t, "grafana", certOpts{client: true})
		for _, c := range []struct {
			name string
			cfg  *tls.Config
			ok   bool
		}{
			{"client certificate of the client CA", trusting(good), true},
			{"no client certificate", trusting(), false},
			{"client certificate of another CA", trusting(otherCA.issue(t, "mallory", certOpts{client: true})), false},
			{"expired client certificate", trusting(clientCA.issue(t, "old", certOpts{client: true, validFor: -time.Minute})), false},
			{"server certificate used as client certificate", trusting(clientCA.issue(t, "server", certOpts{})), false},
		} {
			code, _, err := tlsGet(p.URL, c.cfg)
			if ok := err == nil && code == 200; ok != c.ok {
				t.Errorf("%s: code %d err %v, want success=%v", c.name, code, err, c.ok)
			}
		}
		// The client CA is reloaded too: switching it admits the other CA's clients.
		writeFile(t, clientCAFile, readFile(t, otherCA.file))
		e2eproxy.WaitFor(t, 10*time.Second, "new client CA in force", func() bool {
			code, _, err := tlsGet(p.URL, trusting(otherCA.issue(t, "new-client", certOpts{client: true})))
			return err == nil && code == 200
		})
		if code, _, err := tlsGet(p.URL, trusting(good)); err == nil && code == 200 {
			t.Error("a client of the replaced CA still connects")
		}
	})
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tlsFront is a TLS-terminating reverse proxy in front of one backend that
// demands a client certificate of clientCA and a bearer token, as an
// ingress in front of a remote cluster's Prometheus would.
type tlsFront struct {
	URL        string
	authorized atomic.Int64
	refused    atomic.Int64
}

func startTLSFront(t testing.TB, backend string, ca, clientCA *testCA, token string) *tlsFront {
	t.Helper()
	target, err := url.Parse(backend)
	if err != nil {
		t.Fatal(err)
	}
	fr := &tlsFront{}
	rp := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			fr.refused.Add(1)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		fr.authorized.Add(1)
		e2eproxy.ForwardBuffered(w, r, rp)
	}))
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{ca.issue(t, "backend", certOpts{})},
		ClientCAs:    clientCA.pool(),
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}
	srv.Config.ErrorLog = slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	fr.URL = srv.URL
	return fr
}

func testBackendTLS(t *testing.T, f *e2eproxy.Fleet) {
	backendCA, clientCA, otherCA := newTestCA(t, "backend CA"), newTestCA(t, "proxy client CA"), newTestCA(t, "other CA")
	dir := t.TempDir()
	token := randomKey(t)
	tokenFile := filepath.Join(dir, "token")
	writeFile(t, tokenFile, []byte(token+"\n"))
	clientCert, clientKey := filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	writePair(t, clientCA.issue(t, "prometheus-multi-tenant-proxy", certOpts{client: true}), clientCert, clientKey)

	var fronts []*tlsFront
	var static strings.Builder
	for i, sh := range f.Shards {
		fr := startTLSFront(t, sh.URL, backendCA, clientCA, token)
		fronts = append(fronts, fr)
		fmt.Fprintf(&static, "    - name: %s\n      urls: [%q]\n", f.Data.Clusters[i], fr.URL)
	}
	config := func(caFile, tokenFile string) app.Config {
		return e2eproxy.ConfigFromYAML(t, fmt.Sprintf(`discovery:
  static:
%s
backend:
  http_client:
    tls_config:
      ca_file: %s
      cert_file: %s
      key_file: %s
    bearer_token_file: %s
proxy:
  enable_caching: false
`, static.String(), caFile, clientCert, clientKey, tokenFile))
	}

	p, logs := startLoggedProxy(t, config(backendCA.file, tokenFile))
	reqs := e2eproxy.SuiteRequests(f.Data)
	var sample []e2eproxy.APIRequest
	for i, r := range reqs {
		if i%3 == 0 {
			sample = append(sample, r)
		}
	}
	e2eproxy.RunSuite(t, f.Reference.URL, p.URL, sample, nil)
	for i, fr := range fronts {
		if fr.authorized.Load() == 0 || fr.refused.Load() != 0 {
			t.Errorf("backend %d behind TLS: %d authorized and %d refused calls", i, fr.authorized.Load(), fr.refused.Load())
		}
	}
	if strings.Contains(logs.String(), token) {
		t.Error("the backend token appears in the proxy log")
	}

	// Negative controls: each missing piece makes the backends unreachable.
	wrongToken := filepath.Join(dir, "wrong-token")
	writeFile(t, wrongToken, []byte("not-the-token"))
	for name, cfg := range map[string]app.Config{
		"CA not trusted": config(otherCA.file, tokenFile),
		"wrong token":    config(backendCA.file, wrongToken),
	} {
		p := e2eproxy.StartProxy(t, cfg)
		a := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {"up"}, "time": {e2eproxy.FormatTime(f.Data.Start.Add(time.Hour))}}})
		if a.Code != http.StatusServiceUnavailable {
			t.Errorf("%s: HTTP %d, want 503: %s", name, a.Code, e2eproxy.Clip(a.Body))
		}
	}
}
