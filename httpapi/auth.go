package httpapi

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	config_util "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
)

// Authentication types.
const (
	AuthNone   = "none"
	AuthJWT    = "jwt"
	AuthAPIKey = "api_key"
)

// APIKeyHeader is the header an API key may come in, besides Authorization: Bearer.
const APIKeyHeader = "X-API-Key"

// realm names the proxy in WWW-Authenticate challenges.
const realm = "prometheus-multi-tenant-proxy"

// AuthConfig is the `auth` section.
type AuthConfig struct {
	// Type is none (trust the X-Tenant-Namespace header), jwt or api_key.
	Type string    `yaml:"type"`
	JWT  JWTConfig `yaml:"jwt"`
	// APIKeysFile holds lines "<sha256 hex of key> <namespace>", re-read
	// when it changes (a mounted Secret).
	APIKeysFile string `yaml:"api_keys_file"`
	// APIKeys holds lines of the same form, for keys kept in the config itself.
	APIKeys []string `yaml:"api_keys"`
}

// JWTConfig configures bearer-token authentication.
type JWTConfig struct {
	// SecretKey verifies HS256/384/512 tokens.
	SecretKey string `yaml:"secret_key"`
	// PublicKeyFile holds PEM public keys or certificates (RSA or ECDSA) for
	// RS*/PS*/ES* tokens; re-read when it changes.
	PublicKeyFile string `yaml:"public_key_file"`
	// JWKSURL is an identity provider's key set, fetched at start, every
	// JWKSRefreshInterval, and when a token names a key it does not hold.
	JWKSURL             string                       `yaml:"jwks_url"`
	JWKSRefreshInterval model.Duration               `yaml:"jwks_refresh_interval"`
	JWKSHTTPClient      config_util.HTTPClientConfig `yaml:"jwks_http_client"`
	Issuer              string                       `yaml:"issuer"`
	Audience            string                       `yaml:"audience"`
	// NamespaceClaim holds the namespace (a string) or namespaces (a list).
	NamespaceClaim string `yaml:"namespace_claim"`
	// AdminClaim makes a token admin: "claim=value" (a string claim equal to
	// value, or a list claim holding it) or "claim" (a boolean claim, true).
	AdminClaim string `yaml:"admin_claim"`
}

// Validate fills defaults and checks the configuration.
func (c *AuthConfig) Validate() error {
	switch c.Type {
	case "":
		c.Type = AuthNone
	case AuthNone, AuthJWT, AuthAPIKey:
	default:
		return fmt.Errorf("type %q is none of %s, %s, %s", c.Type, AuthNone, AuthJWT, AuthAPIKey)
	}
	if c.JWT.NamespaceClaim == "" {
		c.JWT.NamespaceClaim = "namespace"
	}
	if c.JWT.JWKSRefreshInterval <= 0 {
		c.JWT.JWKSRefreshInterval = model.Duration(5 * time.Minute)
	}
	if _, _, err := parseAdminClaim(c.JWT.AdminClaim); err != nil {
		return fmt.Errorf("jwt.admin_claim: %w", err)
	}
	switch c.Type {
	case AuthJWT:
		j := c.JWT
		if j.SecretKey == "" && j.PublicKeyFile == "" && j.JWKSURL == "" {
			return errors.New("jwt: one of secret_key, public_key_file or jwks_url is required")
		}
		if j.JWKSURL != "" {
			u, err := url.Parse(j.JWKSURL)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("jwt.jwks_url: %q is not an http(s) URL", j.JWKSURL)
			}
			if err := c.JWT.JWKSHTTPClient.Validate(); err != nil {
				return fmt.Errorf("jwt.jwks_http_client: %w", err)
			}
		}
	case AuthAPIKey:
		if c.APIKeysFile == "" && len(c.APIKeys) == 0 {
			return errors.New("api_key: api_keys_file or api_keys is required")
		}
		if _, err := parseAPIKeys(strings.Join(c.APIKeys, "\n")); err != nil {
			return fmt.Errorf("api_keys: %w", err)
		}
	}
	return nil
}

// parseAdminClaim splits "claim=value"; an empty value asks for a boolean claim.
func parseAdminClaim(s string) (name, value string, err error) {
	if s == "" {
		return "", "", nil
	}
	name, value, hasValue := strings.Cut(s, "=")
	name = strings.TrimSpace(name)
	value = strings.TrimSpace(value)
	if name == "" || (hasValue && value == "") {
		return "", "", fmt.Errorf("%q is neither \"claim=value\" nor \"claim\"", s)
	}
	return name, value, nil
}

// NewIdentifier returns the Identifier for the configured authentication.
// cfg must have passed Validate.
func NewIdentifier(cfg AuthConfig, logger *slog.Logger) (Identifier, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	switch cfg.Type {
	case AuthNone, "":
		logger.Warn("auth.type is none: the X-Tenant-Namespace header is trusted as is; run the proxy only behind a proxy that authenticates callers and sets that header")
		return HeaderIdentifier{}, nil
	case AuthJWT:
		return newJWTIdentifier(cfg.JWT, logger.With("component", "auth-jwt"))
	case AuthAPIKey:
		return newAPIKeyIdentifier(cfg, logger.With("component", "auth-api-key"))
	default:
		return nil, fmt.Errorf("auth.type %q is not supported", cfg.Type)
	}
}

// ErrInvalidCredentials is returned by an Identifier when the request
// carries credentials that do not authenticate anyone.
var ErrInvalidCredentials = errors.New("invalid credentials")

// bearerChallenge is the WWW-Authenticate value of token-based identifiers.
const bearerChallenge = `Bearer realm="` + realm + `"`

// bearerToken returns the token of an "Authorization: Bearer" header.
func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}
