package authn

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	config_util "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"k8s.io/client-go/rest"
)

// Authentication types.
const (
	TypeNone       = "none"
	TypeJWT        = "jwt"
	TypeAPIKey     = "api_key"
	TypeKubernetes = "kubernetes"
)

// APIKeyHeader is the header an API key may come in, besides Authorization: Bearer.
const APIKeyHeader = "X-API-Key"

// realm names the proxy in WWW-Authenticate challenges.
const realm = "prometheus-multi-tenant-proxy"

// Config is the `auth` section.
type Config struct {
	// Type is none (trust the X-Tenant-Namespace header), jwt, api_key or
	// kubernetes.
	Type string     `yaml:"type"`
	None NoneConfig `yaml:"none"`
	JWT  JWTConfig  `yaml:"jwt"`
	// APIKeysFile holds lines "<sha256 hex of key> <namespace>", re-read
	// when it changes (a mounted Secret).
	APIKeysFile string `yaml:"api_keys_file"`
	// APIKeys holds lines of the same form, for keys kept in the config itself.
	APIKeys    []string         `yaml:"api_keys"`
	Kubernetes KubernetesConfig `yaml:"kubernetes"`
	// MaxNamespaces bounds how many namespaces one request may name (a
	// comma-separated list) and how many namespaces "every namespace I may
	// read" (`*`) may check: each costs an authorisation and widens the
	// request's policy.
	MaxNamespaces int `yaml:"max_namespaces"`
}

// NoneConfig is the `auth.none` section.
type NoneConfig struct {
	// AllowUnauthenticatedAdmin lets auth.type none run with admin
	// namespaces on a non-loopback address, where anyone who can reach the
	// port can claim an admin namespace in a header.
	AllowUnauthenticatedAdmin bool `yaml:"allow_unauthenticated_admin"`
}

// JWTConfig configures bearer-token authentication.
type JWTConfig struct {
	// SecretKey verifies HS256/384/512 tokens.
	SecretKey string `yaml:"secret_key"`
	// SecretKeyFile holds the secret instead (a mounted Secret), read at
	// start; a trailing line end is not part of it.
	SecretKeyFile string `yaml:"secret_key_file"`
	// PublicKeyFile holds PEM public keys or certificates (RSA or ECDSA) for
	// RS*/PS*/ES* tokens; re-read when it changes.
	PublicKeyFile string `yaml:"public_key_file"`
	// JWKSURL is an identity provider's key set, fetched at start, every
	// JWKSRefreshInterval, and when a token names a key it does not hold.
	JWKSURL string `yaml:"jwks_url"`
	// OIDCIssuerURL finds the key set through the issuer's discovery
	// document (<issuer>/.well-known/openid-configuration), read again at
	// every refresh; it is also the required issuer unless Issuer is set.
	OIDCIssuerURL       string                       `yaml:"oidc_issuer_url"`
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

// KubernetesConfig is the `auth.kubernetes` section: bearer tokens checked
// by the API server (TokenReview), namespaces granted by RBAC
// (SubjectAccessReview).
type KubernetesConfig struct {
	// Kubeconfig reaches the API server; empty: in-cluster, or $KUBECONFIG
	// outside a cluster.
	Kubeconfig string `yaml:"kubeconfig"`
	// Audiences the token must be meant for; empty: the API server's own.
	Audiences []string `yaml:"audiences"`
	// CacheTTL is how long a review's answer is reused (at most 5m):
	// the longest a revoked token or RoleBinding still works.
	CacheTTL model.Duration `yaml:"cache_ttl"`
	// CacheSize bounds the number of cached answers.
	CacheSize int `yaml:"cache_size"`
	// Timeout bounds each review; an API server slower than this fails the
	// request with 503, never lets it through.
	Timeout model.Duration `yaml:"timeout"`
	// NamespaceAccess is what a caller must be allowed in namespace N to act
	// as N (besides a ServiceAccount's own namespace).
	NamespaceAccess AccessCheck `yaml:"namespace_access"`
	// AdminAccess is the cluster-scoped check (all namespaces) that makes a
	// caller admin. Its default is a verb no built-in role carries, so admin
	// is granted only on purpose (a binding of the shipped admin ClusterRole),
	// never by a cluster-wide view binding.
	AdminAccess AccessCheck `yaml:"admin_access"`
}

// AccessCheck is the resource attributes of a SubjectAccessReview.
type AccessCheck struct {
	Verb        string `yaml:"verb"`
	Group       string `yaml:"group"`
	Resource    string `yaml:"resource"`
	Subresource string `yaml:"subresource"`
}

func (a AccessCheck) String() string {
	r := a.Resource
	if a.Group != "" {
		r += "." + a.Group
	}
	if a.Subresource != "" {
		r += "/" + a.Subresource
	}
	return a.Verb + " " + r
}

// MetricAccessCheck is the default namespace check: get on MetricAccess
// objects, the resource whose namespace a tenant is.
var MetricAccessCheck = AccessCheck{Verb: "get", Group: "observability.ethos.io", Resource: "metricaccesses"}

// AdminCheck is the default admin check: the custom verb "admin" on
// MetricAccess objects in all namespaces. No built-in role (view, edit,
// admin) lists it, so only a binding made for it grants it; wildcard rules
// (cluster-admin's "*") do, as they grant everything else too.
var AdminCheck = AccessCheck{Verb: "admin", Group: "observability.ethos.io", Resource: "metricaccesses"}

// DefaultMaxNamespaces is auth.max_namespaces unless set.
const DefaultMaxNamespaces = 64

const maxKubeCacheTTL = 5 * time.Minute

// DefaultConfig is what no `auth` section means: the tenant header is
// trusted (auth.type none), with the settings each other type then gets.
func DefaultConfig() Config {
	return Config{
		Type:          TypeNone,
		JWT:           JWTConfig{JWKSRefreshInterval: model.Duration(5 * time.Minute), NamespaceClaim: "namespace"},
		MaxNamespaces: DefaultMaxNamespaces,
		Kubernetes: KubernetesConfig{
			CacheTTL:        model.Duration(10 * time.Second),
			CacheSize:       10000,
			Timeout:         model.Duration(5 * time.Second),
			NamespaceAccess: MetricAccessCheck,
			AdminAccess:     AdminCheck,
		},
	}
}

// UnmarshalYAML starts from DefaultConfig, so keys left out keep their
// defaults.
func (c *Config) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultConfig()
	type plain Config
	return unmarshal((*plain)(c))
}

// UnmarshalYAML starts from an empty check: a check written in the file is
// whole (verb and resource required), never mixed with the default's
// group or resource.
func (a *AccessCheck) UnmarshalYAML(unmarshal func(any) error) error {
	*a = AccessCheck{}
	type plain AccessCheck
	return unmarshal((*plain)(a))
}

// Validate reports the first setting that cannot work, naming its key
// within the section; it changes nothing.
func (c Config) Validate() error {
	switch c.Type {
	case TypeNone, TypeJWT, TypeAPIKey, TypeKubernetes:
	default:
		return fmt.Errorf("type: %q is none of %s, %s, %s, %s", c.Type, TypeNone, TypeJWT, TypeAPIKey, TypeKubernetes)
	}
	if c.JWT.NamespaceClaim == "" {
		return errors.New("jwt.namespace_claim: empty")
	}
	if c.JWT.JWKSRefreshInterval <= 0 {
		return fmt.Errorf("jwt.jwks_refresh_interval: %s is not positive", c.JWT.JWKSRefreshInterval)
	}
	if _, _, err := parseAdminClaim(c.JWT.AdminClaim); err != nil {
		return fmt.Errorf("jwt.admin_claim: %w", err)
	}
	if c.MaxNamespaces <= 0 {
		return fmt.Errorf("max_namespaces: %d is not positive", c.MaxNamespaces)
	}
	k := c.Kubernetes
	if k.CacheTTL <= 0 {
		return fmt.Errorf("kubernetes.cache_ttl: %s is not positive", k.CacheTTL)
	}
	if time.Duration(k.CacheTTL) > maxKubeCacheTTL {
		return fmt.Errorf("kubernetes.cache_ttl: %s is longer than %s: revoked access would keep working that long", k.CacheTTL, model.Duration(maxKubeCacheTTL))
	}
	if k.CacheSize <= 0 {
		return fmt.Errorf("kubernetes.cache_size: %d is not positive", k.CacheSize)
	}
	if k.Timeout <= 0 {
		return fmt.Errorf("kubernetes.timeout: %s is not positive", k.Timeout)
	}
	for _, a := range []struct {
		key   string
		check AccessCheck
	}{{"namespace_access", k.NamespaceAccess}, {"admin_access", k.AdminAccess}} {
		if a.check.Verb == "" || a.check.Resource == "" {
			return fmt.Errorf("kubernetes.%s: verb and resource are required", a.key)
		}
	}
	switch c.Type {
	case TypeJWT:
		j := c.JWT
		if j.SecretKey == "" && j.SecretKeyFile == "" && j.PublicKeyFile == "" && j.JWKSURL == "" && j.OIDCIssuerURL == "" {
			return errors.New("jwt: one of secret_key, secret_key_file, public_key_file, jwks_url or oidc_issuer_url is required")
		}
		if j.SecretKey != "" && j.SecretKeyFile != "" {
			return errors.New("jwt: secret_key and secret_key_file exclude each other")
		}
		if j.JWKSURL != "" && j.OIDCIssuerURL != "" {
			return errors.New("jwt: jwks_url and oidc_issuer_url exclude each other (the issuer's discovery document names its key set)")
		}
		for key, v := range map[string]string{"jwks_url": j.JWKSURL, "oidc_issuer_url": j.OIDCIssuerURL} {
			if v == "" {
				continue
			}
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("jwt.%s: %q is not an http(s) URL", key, v)
			}
			if err := c.JWT.JWKSHTTPClient.Validate(); err != nil {
				return fmt.Errorf("jwt.jwks_http_client: %w", err)
			}
		}
	case TypeAPIKey:
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

// Options are what New needs besides the configuration.
type Options struct {
	Logger *slog.Logger
	// KubeConfig reaches the API server for auth.type kubernetes.
	KubeConfig *rest.Config
}

// New returns the Identifier for the configured authentication. cfg must
// have passed Validate.
func New(cfg Config, opts Options) (Identifier, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	switch cfg.Type {
	case TypeNone, "":
		logger.Warn("auth.type is none: the X-Tenant-Namespace header is trusted as is; run the proxy only behind a proxy that authenticates callers and sets that header")
		return HeaderIdentifier{MaxNamespaces: cfg.MaxNamespaces}, nil
	case TypeJWT:
		return newJWTIdentifier(cfg.JWT, logger.With("component", "auth-jwt"))
	case TypeAPIKey:
		return newAPIKeyIdentifier(cfg, logger.With("component", "auth-api-key"))
	case TypeKubernetes:
		if opts.KubeConfig == nil {
			return nil, errors.New("auth.type kubernetes: no API server configuration")
		}
		return NewKubernetesIdentifier(cfg.Kubernetes, cfg.MaxNamespaces, opts.KubeConfig, logger.With("component", "auth-kubernetes"))
	default:
		return nil, fmt.Errorf("auth.type %q is not supported", cfg.Type)
	}
}

// bearerChallenge is the WWW-Authenticate value of token-based identifiers.
const bearerChallenge = `Bearer realm="` + realm + `"`
