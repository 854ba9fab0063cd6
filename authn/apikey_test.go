package authn

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func keyLine(key, ns string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:]) + " " + ns + "\n"
}

func TestAPIKeys(t *testing.T) {
	file := filepath.Join(t.TempDir(), "keys")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("# team keys\n\n" + keyLine("key-a", "team-a") + keyLine("key-ab", "team-a") + keyLine("key-ab", "team-b"))
	id := newTestIdentifier(t, typed(TypeAPIKey, func(c *Config) { c.APIKeysFile, c.APIKeys = file, []string{keyLine("inline-key", "monitoring")} }))

	runIdentifyCases(t, id, []identifyCase{
		{name: "bearer", header: bearer("key-a"), wantNS: []string{"team-a"}},
		{name: "X-API-Key", header: http.Header{"X-Api-Key": {"key-a"}}, wantNS: []string{"team-a"}},
		{name: "two namespaces", header: bearer("key-ab"), wantNS: []string{"team-a", "team-b"}},
		{name: "inline key", header: bearer("inline-key"), wantNS: []string{"monitoring"}},
		{name: "unknown key", header: bearer("key-b"), wantErr: ErrInvalidCredentials},
		{name: "hash instead of key", header: bearer(keyLine("key-a", "")[:64]), wantErr: ErrInvalidCredentials},
		{name: "prefix of a key", header: bearer("key-"), wantErr: ErrInvalidCredentials},
		{name: "none", header: nil, wantErr: ErrNoCredentials},
	})

	// Rotation: the file changes, the new key works and the old one stops.
	write(keyLine("key-a2", "team-a"))
	eventually(t, 5*time.Second, "new key accepted", func() bool {
		_, err := id.Identify(requestWith(bearer("key-a2")))
		return err == nil
	})
	if _, err := id.Identify(requestWith(bearer("key-a"))); err == nil {
		t.Error("the removed key still works")
	}
	// A broken update revokes: no key of the file works until it is valid
	// again; inline keys are not the file's and keep working.
	write("not a key file at all\n")
	eventually(t, 5*time.Second, "broken file revokes its keys", func() bool {
		_, err := id.Identify(requestWith(bearer("key-a2")))
		return errors.Is(err, ErrInvalidCredentials)
	})
	if _, err := id.Identify(requestWith(bearer("inline-key"))); err != nil {
		t.Errorf("inline key refused while the file is broken: %v", err)
	}
	write(keyLine("key-a2", "team-a"))
	eventually(t, 5*time.Second, "repaired file accepted", func() bool {
		_, err := id.Identify(requestWith(bearer("key-a2")))
		return err == nil
	})
	// A deleted file revokes too.
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "deleted file revokes its keys", func() bool {
		_, err := id.Identify(requestWith(bearer("key-a2")))
		return errors.Is(err, ErrInvalidCredentials)
	})
	write("not a key file at all\n")
	// A file broken from the start is an error.
	if _, err := New(typed(TypeAPIKey, func(c *Config) { c.APIKeysFile = file }), Options{}); err == nil {
		t.Error("a broken key file was accepted at start")
	}
}

func TestParseAPIKeys(t *testing.T) {
	for _, c := range []struct {
		text string
		n    int
		ok   bool
	}{
		{"", 0, true},
		{keyLine("a", "ns") + "  # comment\n", 1, true},
		{keyLine("a", "ns")[:65] + "ns # trailing comment\n", 0, false},
		{"# only a comment\n" + keyLine("a", "ns"), 1, true},
		{keyLine("a", "ns")[:60] + " ns\n", 0, false},
		{keyLine("a", "ns")[:64] + "\n", 0, false},
		{keyLine("a", "ns one"), 0, false},
	} {
		keys, err := parseAPIKeys(c.text)
		if (err == nil) != c.ok || (err == nil && len(keys) != c.n) {
			t.Errorf("%q: %d keys, err %v", c.text, len(keys), err)
		}
	}
}
