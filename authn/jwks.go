package authn

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	config_util "github.com/prometheus/common/config"
)

const (
	// jwksTimeout bounds one fetch of the key set.
	jwksTimeout = 10 * time.Second
	// jwksMaxBytes bounds the key set document.
	jwksMaxBytes = 1 << 20
	// jwksMinGap is the least time between two fetches caused by tokens
	// naming unknown keys: such tokens need no valid signature to get here,
	// so they must not be able to make the proxy hammer the identity provider.
	jwksMinGap = 5 * time.Second
)

// jwks is an identity provider's key set, cached. Keys are looked up by kid;
// a kid not in the cache triggers a fetch (at most one per jwksMinGap), which
// is how a rotation to a new signing key is picked up at once. The whole set
// is re-fetched every refresh interval, which is how retired keys go away. A
// failed fetch keeps the previous keys: an outage of the identity provider
// does not log everybody out.
type jwks struct {
	url     string // the key set's; empty until discovered when issuer is set
	issuer  string // an OIDC issuer whose discovery document names the key set
	client  *http.Client
	refresh time.Duration
	minGap  time.Duration
	logger  *slog.Logger

	state      atomic.Pointer[jwksState]
	fetchMu    sync.Mutex // one fetch at a time
	lastTry    atomic.Int64
	refreshing atomic.Bool
}

type jwksState struct {
	keys    []jwk
	fetched time.Time
}

// jwk is one usable verification key of the set.
type jwk struct {
	kid string
	alg string // "" when the set does not say
	key crypto.PublicKey
}

func newJWKS(url, issuer string, hc config_util.HTTPClientConfig, refresh time.Duration, logger *slog.Logger) (*jwks, error) {
	// Fetches are minutes apart: a kept-alive connection would only sit
	// idle, holding goroutines past the proxy's shutdown.
	client, err := config_util.NewClientFromConfig(hc, "jwks", config_util.WithKeepAlivesDisabled(), config_util.WithUserAgent("prometheus-multi-tenant-proxy"))
	if err != nil {
		return nil, fmt.Errorf("auth.jwt.jwks_http_client: %w", err)
	}
	client.Timeout = jwksTimeout
	k := &jwks{url: url, issuer: issuer, client: client, refresh: refresh, minGap: min(jwksMinGap, refresh), logger: logger}
	// The provider may be down while the proxy starts: tokens fail until it
	// answers, and the proxy itself still comes up.
	if err := k.fetch(context.Background()); err != nil {
		logger.Warn("cannot fetch the JWKS key set; will retry when tokens arrive", "url", url, "issuer", issuer, "err", err)
	}
	return k, nil
}

// lookup returns the keys with this kid, or every key when kid is empty.
func (k *jwks) lookup(kid string) []jwk {
	st := k.state.Load()
	if st == nil || (kid != "" && !st.has(kid)) {
		k.fetchThrottled()
		st = k.state.Load()
	} else if time.Since(st.fetched) > k.refresh && k.refreshing.CompareAndSwap(false, true) {
		// Stale but usable: answer now, refresh behind the request.
		go func() {
			defer k.refreshing.Store(false)
			k.fetchThrottled()
		}()
	}
	if st == nil {
		return nil
	}
	if kid == "" {
		return st.keys
	}
	var out []jwk
	for _, key := range st.keys {
		if key.kid == kid {
			out = append(out, key)
		}
	}
	return out
}

func (s *jwksState) has(kid string) bool {
	for _, k := range s.keys {
		if k.kid == kid {
			return true
		}
	}
	return false
}

// fetchThrottled fetches unless another fetch happened within minGap;
// concurrent callers wait for the one fetch in progress.
func (k *jwks) fetchThrottled() {
	k.fetchMu.Lock()
	defer k.fetchMu.Unlock()
	if time.Since(time.Unix(0, k.lastTry.Load())) < k.minGap {
		return
	}
	if err := k.fetchLocked(context.Background()); err != nil {
		k.logger.Warn("cannot refresh the JWKS key set; keeping the previous keys", "url", k.url, "issuer", k.issuer, "err", err)
	}
}

func (k *jwks) fetch(ctx context.Context) error {
	k.fetchMu.Lock()
	defer k.fetchMu.Unlock()
	return k.fetchLocked(ctx)
}

func (k *jwks) fetchLocked(ctx context.Context) error {
	k.lastTry.Store(time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(ctx, jwksTimeout)
	defer cancel()
	if k.issuer != "" {
		// Read at every refresh, so a provider that moves its key set is followed.
		u, err := k.discover(ctx)
		if err != nil {
			return err
		}
		k.url = u
	}
	body, err := k.get(ctx, k.url)
	if err != nil {
		return err
	}
	keys, skipped, err := parseJWKS(body)
	if err != nil {
		return err
	}
	prev := k.state.Swap(&jwksState{keys: keys, fetched: time.Now()})
	if prev == nil || !sameKids(prev.keys, keys) {
		kids := make([]string, len(keys))
		for i, key := range keys {
			kids[i] = key.kid
		}
		k.logger.Info("JWKS key set loaded", "url", k.url, "kids", kids, "skipped", skipped)
	}
	return nil
}

// get fetches a JSON document of at most jwksMaxBytes.
func (k *jwks) get(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, jwksMaxBytes+1))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP %s", u, resp.Status)
	}
	if len(body) > jwksMaxBytes {
		return nil, fmt.Errorf("%s: document larger than %d bytes", u, jwksMaxBytes)
	}
	return body, nil
}

// discover reads the issuer's OpenID Connect discovery document and returns
// its jwks_uri. The document must name the configured issuer itself
// (OpenID Connect Discovery 1.0, section 4.3): anything else could hand out
// another provider's keys.
func (k *jwks) discover(ctx context.Context) (string, error) {
	body, err := k.get(ctx, strings.TrimSuffix(k.issuer, "/")+"/.well-known/openid-configuration")
	if err != nil {
		return "", fmt.Errorf("OIDC discovery: %w", err)
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", fmt.Errorf("OIDC discovery document is not JSON: %w", err)
	}
	if doc.Issuer != k.issuer {
		return "", fmt.Errorf("OIDC discovery document names issuer %q, not %q", clipString(doc.Issuer, 200), k.issuer)
	}
	u, err := url.Parse(doc.JWKSURI)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", fmt.Errorf("OIDC discovery document: jwks_uri %q is not an http(s) URL", clipString(doc.JWKSURI, 200))
	}
	return doc.JWKSURI, nil
}

func sameKids(a, b []jwk) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].kid != b[i].kid {
			return false
		}
	}
	return true
}

// rawJWK is a JSON Web Key (RFC 7517) as far as verification needs it.
type rawJWK struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// parseJWKS returns the set's RSA and EC signature keys. Symmetric ("oct")
// keys are ignored on purpose: a public document cannot hold a secret, and
// accepting one would let anyone who reads it sign tokens.
func parseJWKS(b []byte) (keys []jwk, skipped int, err error) {
	var set struct {
		Keys []rawJWK `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, 0, fmt.Errorf("key set is not JSON: %w", err)
	}
	if set.Keys == nil {
		return nil, 0, errors.New(`key set has no "keys" member`)
	}
	for _, r := range set.Keys {
		if r.Use != "" && r.Use != "sig" {
			skipped++
			continue
		}
		key, err := r.publicKey()
		if err != nil {
			skipped++
			continue
		}
		keys = append(keys, jwk{kid: r.Kid, alg: r.Alg, key: key})
	}
	return keys, skipped, nil
}

func (r rawJWK) publicKey() (crypto.PublicKey, error) {
	switch r.Kty {
	case "RSA":
		n, err := b64Int(r.N)
		if err != nil {
			return nil, err
		}
		e, err := b64Int(r.E)
		if err != nil {
			return nil, err
		}
		if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 {
			return nil, errors.New("bad RSA exponent")
		}
		return &rsa.PublicKey{N: n, E: int(e.Int64())}, nil
	case "EC":
		var curve elliptic.Curve
		switch r.Crv {
		case "P-256":
			curve = elliptic.P256()
		case "P-384":
			curve = elliptic.P384()
		case "P-521":
			curve = elliptic.P521()
		default:
			return nil, fmt.Errorf("unsupported curve %q", r.Crv)
		}
		x, err := b64Bytes(r.X)
		if err != nil {
			return nil, err
		}
		y, err := b64Bytes(r.Y)
		if err != nil {
			return nil, err
		}
		size := (curve.Params().BitSize + 7) / 8
		if len(x) > size || len(y) > size {
			return nil, errors.New("bad EC coordinates")
		}
		point := make([]byte, 1+2*size)
		point[0] = 4 // uncompressed
		copy(point[1+size-len(x):1+size], x)
		copy(point[1+2*size-len(y):], y)
		// Checks that the point is on the curve.
		return ecdsa.ParseUncompressedPublicKey(curve, point)
	}
	return nil, fmt.Errorf("unsupported key type %q", r.Kty)
}

func b64Bytes(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

func b64Int(s string) (*big.Int, error) {
	b, err := b64Bytes(s)
	if err != nil || len(b) == 0 {
		return nil, errors.New("bad base64url integer")
	}
	return new(big.Int).SetBytes(b), nil
}
