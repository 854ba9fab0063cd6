package httpapi

import (
	"fmt"
	"log/slog"
)

// Authentication types.
const (
	AuthNone   = "none"
	AuthJWT    = "jwt"
	AuthAPIKey = "api_key"
)

// AuthConfig is the `auth` section.
type AuthConfig struct {
	// Type is none (trust the X-Tenant-Namespace header), jwt or api_key.
	Type string    `yaml:"type"`
	JWT  JWTConfig `yaml:"jwt"`
	// APIKeysFile holds lines "<sha256 hex of key> <namespace>".
	APIKeysFile string `yaml:"api_keys_file"`
}

// JWTConfig configures bearer-token authentication.
type JWTConfig struct {
	SecretKey      string `yaml:"secret_key"`
	PublicKeyFile  string `yaml:"public_key_file"`
	JWKSURL        string `yaml:"jwks_url"`
	Issuer         string `yaml:"issuer"`
	Audience       string `yaml:"audience"`
	NamespaceClaim string `yaml:"namespace_claim"`
	AdminClaim     string `yaml:"admin_claim"`
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
	return nil
}

// NewIdentifier returns the Identifier for the configured authentication.
func NewIdentifier(cfg AuthConfig, logger *slog.Logger) (Identifier, error) {
	switch cfg.Type {
	case AuthNone, "":
		logger.Warn("auth.type is none: the X-Tenant-Namespace header is trusted as is; run the proxy only behind a proxy that authenticates callers and sets that header")
		return HeaderIdentifier{}, nil
	default:
		return nil, fmt.Errorf("auth.type %q is not supported yet", cfg.Type)
	}
}
