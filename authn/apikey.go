package authn

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
)

// apiKey is one line of the key list: the SHA-256 of a key and a namespace
// it may act as. Only hashes are stored, so a leaked config leaks no key.
type apiKey struct {
	sum       [sha256.Size]byte
	namespace string
}

// parseAPIKeys reads lines "<sha256 hex> <namespace>"; blank lines and
// lines starting with # are skipped. A key listed with several namespaces
// may act as each of them.
func parseAPIKeys(text string) ([]apiKey, error) {
	var keys []apiKey
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return nil, fmt.Errorf("line %d: want \"<sha256 hex of key> <namespace>\", found %d fields", n, len(f))
		}
		b, err := hex.DecodeString(f[0])
		if err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("line %d: the first field is not a SHA-256 in hex (64 hex digits)", n)
		}
		k := apiKey{namespace: f[1]}
		copy(k.sum[:], b)
		keys = append(keys, k)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return keys, nil
}

// APIKeyIdentifier authenticates requests by API key (auth.type: api_key).
type APIKeyIdentifier struct {
	inline []apiKey
	file   *watchedFile[[]apiKey]
}

func newAPIKeyIdentifier(cfg Config, logger *slog.Logger) (*APIKeyIdentifier, error) {
	inline, err := parseAPIKeys(strings.Join(cfg.APIKeys, "\n"))
	if err != nil {
		return nil, fmt.Errorf("auth.api_keys: %w", err)
	}
	id := &APIKeyIdentifier{inline: inline}
	if cfg.APIKeysFile != "" {
		id.file, err = newWatchedFile(cfg.APIKeysFile, "auth.api_keys_file", func(b []byte) ([]apiKey, error) { return parseAPIKeys(string(b)) }, logger)
		if err != nil {
			return nil, err
		}
	}
	return id, nil
}

// Identify implements Identifier. The key comes as "Authorization: Bearer"
// or in the X-API-Key header.
func (a *APIKeyIdentifier) Identify(r *http.Request) (Identity, error) {
	key, ok, err := bearerToken(r)
	if err != nil {
		return Identity{}, err
	}
	if !ok {
		if key, err = SingleHeader(r, APIKeyHeader); err != nil {
			return Identity{}, err
		}
	}
	if key == "" {
		return Identity{}, fmt.Errorf("%w: send an API key as \"Authorization: Bearer <key>\" or in the %s header", ErrNoCredentials, APIKeyHeader)
	}
	sum := sha256.Sum256([]byte(key))
	var namespaces []string
	// Every stored hash is compared, in constant time, whether or not an
	// earlier one matched: the time taken says nothing about which key is near.
	for _, list := range [][]apiKey{a.inline, a.keys()} {
		for _, k := range list {
			if subtle.ConstantTimeCompare(sum[:], k.sum[:]) == 1 && !slices.Contains(namespaces, k.namespace) {
				namespaces = append(namespaces, k.namespace)
			}
		}
	}
	if len(namespaces) == 0 {
		return Identity{}, fmt.Errorf("%w: unknown API key", ErrInvalidCredentials)
	}
	// The hash prefix tells keys apart in logs without revealing any.
	return Identity{Namespaces: namespaces, Subject: "api_key:" + hex.EncodeToString(sum[:6])}, nil
}

func (a *APIKeyIdentifier) keys() []apiKey {
	if a.file == nil {
		return nil
	}
	return a.file.get()
}

// Challenge implements Identifier.
func (*APIKeyIdentifier) Challenge() string { return bearerChallenge }
