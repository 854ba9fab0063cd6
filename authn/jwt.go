package authn

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// jwtLeeway absorbs clock skew between the token issuer and the proxy when
// checking exp, nbf and iat.
const jwtLeeway = 30 * time.Second

var (
	hmacAlgs       = []string{"HS256", "HS384", "HS512"}
	asymmetricAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)

// JWTIdentifier authenticates requests by bearer token (auth.type: jwt).
type JWTIdentifier struct {
	cfg        JWTConfig
	parser     *jwt.Parser
	secret     []byte
	pubKeys    *watchedFile[[]crypto.PublicKey]
	jwks       *jwks
	adminName  string
	adminValue string
}

func newJWTIdentifier(cfg JWTConfig, logger *slog.Logger) (*JWTIdentifier, error) {
	j := &JWTIdentifier{cfg: cfg}
	j.adminName, j.adminValue, _ = parseAdminClaim(cfg.AdminClaim)
	// Each family of algorithms is accepted only when its kind of key is
	// configured, and each is verified only with its own kind of key: a
	// token claiming HS256 is never checked against a public key, which is
	// the classic algorithm-confusion forgery. "none" is never accepted.
	var methods []string
	if cfg.SecretKeyFile != "" {
		b, err := os.ReadFile(cfg.SecretKeyFile)
		if err != nil {
			return nil, fmt.Errorf("auth.jwt.secret_key_file: %w", err)
		}
		if cfg.SecretKey = strings.TrimRight(string(b), "\r\n"); cfg.SecretKey == "" {
			return nil, errors.New("auth.jwt.secret_key_file: the file is empty")
		}
	}
	if cfg.SecretKey != "" {
		j.secret = []byte(cfg.SecretKey)
		methods = append(methods, hmacAlgs...)
		if len(j.secret) < 32 {
			logger.Warn("auth.jwt.secret_key is shorter than 32 bytes: HMAC tokens are easier to forge by guessing it")
		}
	}
	if cfg.Issuer == "" {
		// The discovery document vouches for this issuer only.
		cfg.Issuer = cfg.OIDCIssuerURL
	}
	j.cfg = cfg
	if cfg.PublicKeyFile != "" || cfg.JWKSURL != "" || cfg.OIDCIssuerURL != "" {
		methods = append(methods, asymmetricAlgs...)
	}
	if cfg.PublicKeyFile != "" {
		var err error
		if j.pubKeys, err = newWatchedFile(cfg.PublicKeyFile, "auth.jwt.public_key_file", parsePublicKeys, logger); err != nil {
			return nil, err
		}
	}
	if cfg.JWKSURL != "" || cfg.OIDCIssuerURL != "" {
		var err error
		if j.jwks, err = newJWKS(cfg.JWKSURL, cfg.OIDCIssuerURL, cfg.JWKSHTTPClient, time.Duration(cfg.JWKSRefreshInterval), logger); err != nil {
			return nil, err
		}
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(methods),
		jwt.WithLeeway(jwtLeeway),
		jwt.WithExpirationRequired(), // a token that never expires cannot be revoked
		jwt.WithIssuedAt(),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	if cfg.Issuer == "" || cfg.Audience == "" {
		logger.Warn("auth.jwt.issuer or auth.jwt.audience is empty: tokens the key signed for any issuer or audience are accepted")
	}
	j.parser = jwt.NewParser(opts...)
	return j, nil
}

// Identify implements Identifier.
func (j *JWTIdentifier) Identify(r *http.Request) (Identity, error) {
	raw, ok, err := bearerToken(r)
	if err != nil {
		return Identity{}, err
	}
	if !ok {
		return Identity{}, fmt.Errorf("%w: send a token as \"Authorization: Bearer <token>\"", ErrNoCredentials)
	}
	claims := jwt.MapClaims{}
	if _, err := j.parser.ParseWithClaims(raw, claims, j.key); err != nil {
		// The library's messages name the failed check, never the token.
		return Identity{}, fmt.Errorf("%w: %w", ErrInvalidCredentials, err)
	}
	namespaces, err := stringList(claims, j.cfg.NamespaceClaim)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrInvalidCredentials, err)
	}
	sub, _ := claims.GetSubject()
	return Identity{Namespaces: namespaces, Admin: j.isAdmin(claims), Subject: "jwt:" + clipString(sub, 128)}, nil
}

// Challenge implements Identifier.
func (*JWTIdentifier) Challenge() string { return bearerChallenge }

// key finds the verification keys for a token: the secret for HMAC, the
// configured public keys of the matching type for the others.
func (j *JWTIdentifier) key(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	if slices.Contains(hmacAlgs, alg) {
		if j.secret == nil {
			return nil, fmt.Errorf("%s tokens are not accepted: no secret_key is configured", alg)
		}
		return j.secret, nil
	}
	kid, _ := t.Header["kid"].(string)
	var keys []jwt.VerificationKey
	if j.pubKeys != nil {
		for _, k := range j.pubKeys.get() {
			if keyFitsAlg(k, alg) {
				keys = append(keys, k)
			}
		}
	}
	if j.jwks != nil {
		for _, k := range j.jwks.lookup(kid) {
			if (k.alg == "" || k.alg == alg) && keyFitsAlg(k.key, alg) {
				keys = append(keys, k.key)
			}
		}
	}
	if len(keys) == 0 {
		if kid != "" {
			return nil, fmt.Errorf("no %s key with kid %q", alg, clipString(kid, 64))
		}
		return nil, fmt.Errorf("no %s key", alg)
	}
	return jwt.VerificationKeySet{Keys: keys}, nil
}

// keyFitsAlg reports whether key is the kind of key alg verifies with, down
// to the curve for ECDSA.
func keyFitsAlg(key crypto.PublicKey, alg string) bool {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return alg[:2] == "RS" || alg[:2] == "PS"
	case *ecdsa.PublicKey:
		switch alg {
		case "ES256":
			return k.Curve == elliptic.P256()
		case "ES384":
			return k.Curve == elliptic.P384()
		case "ES512":
			return k.Curve == elliptic.P521()
		}
	}
	return false
}

func (j *JWTIdentifier) isAdmin(claims jwt.MapClaims) bool {
	if j.adminName == "" {
		return false
	}
	v, ok := claims[j.adminName]
	if !ok {
		return false
	}
	if j.adminValue == "" {
		b, _ := v.(bool)
		return b
	}
	switch v := v.(type) {
	case string:
		return v == j.adminValue
	case []any:
		for _, x := range v {
			if s, _ := x.(string); s == j.adminValue {
				return true
			}
		}
	}
	return false
}

// stringList reads a claim holding a string or a list of strings. A missing
// claim is an empty list (an admin token may carry no namespace).
func stringList(claims jwt.MapClaims, name string) ([]string, error) {
	v, ok := claims[name]
	if !ok || v == nil {
		return nil, nil
	}
	switch v := v.(type) {
	case string:
		if v == "" {
			return nil, nil
		}
		return []string{v}, nil
	case []any:
		out := make([]string, 0, len(v))
		for _, x := range v {
			s, ok := x.(string)
			if !ok {
				return nil, fmt.Errorf("claim %q holds a list with a non-string element", name)
			}
			if s != "" && !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("claim %q is neither a string nor a list of strings", name)
}

// parsePublicKeys reads every PEM block of a file: public keys (PKIX or
// PKCS#1) and certificates, RSA or ECDSA. Several keys let a key rotation
// overlap.
func parsePublicKeys(b []byte) ([]crypto.PublicKey, error) {
	var keys []crypto.PublicKey
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		var (
			key any
			err error
		)
		switch block.Type {
		case "PUBLIC KEY":
			key, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			key, err = x509.ParsePKCS1PublicKey(block.Bytes)
		case "CERTIFICATE":
			var cert *x509.Certificate
			if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
				key = cert.PublicKey
			}
		default:
			// Private keys and anything else do not belong here.
			return nil, fmt.Errorf("PEM block %q is not a public key or certificate", block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("PEM block %q: %w", block.Type, err)
		}
		switch key.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey:
			keys = append(keys, key)
		default:
			return nil, fmt.Errorf("PEM block %q: %T keys are not supported (RSA and ECDSA are)", block.Type, key)
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("no PEM public key or certificate found")
	}
	return keys, nil
}
