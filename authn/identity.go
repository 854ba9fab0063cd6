// Package authn finds who is asking: the X-Tenant-Namespace header, JWT and
// OIDC tokens, API keys, or Kubernetes tokens checked with the API server.
// It says who the caller is and which namespaces they may act as; choosing
// the namespace and the policy is the HTTP middleware's job.
package authn

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// TenantHeader names the namespace a request acts as.
const TenantHeader = "X-Tenant-Namespace"

// Identity is who is asking: the namespaces they may act as, or admin.
type Identity struct {
	Namespaces []string
	Admin      bool
	// Subject names the caller in logs (never a credential).
	Subject string
	// User is the caller as the Kubernetes API server knows them (for
	// SubjectAccessReviews); empty for other kinds of credentials.
	User UserInfo
	// key tells cached decisions about this identity apart (a hash of the
	// credential); empty when nothing is cached.
	key string
}

// UserInfo is a Kubernetes user: what a TokenReview returns and what a
// SubjectAccessReview asks about.
type UserInfo struct {
	Name   string
	UID    string
	Groups []string
	Extra  map[string][]string
}

// Sentinel errors an Identifier's errors wrap; the middleware answers each
// with its own status.
var (
	// ErrNoCredentials: the request carries none (401).
	ErrNoCredentials = errors.New("no credentials")
	// ErrInvalidCredentials: the credentials authenticate no one (401).
	ErrInvalidCredentials = errors.New("invalid credentials")
	// ErrAmbiguous: a credential or tenant header is given more than once
	// (400): picking one would let a front proxy and the proxy disagree on
	// who is asking.
	ErrAmbiguous = errors.New("ambiguous request")
	// ErrUnavailable: whoever checks the credentials cannot be asked right
	// now (503). Nothing is let through on it.
	ErrUnavailable = errors.New("authentication unavailable")
)

// Identifier authenticates a request.
type Identifier interface {
	Identify(r *http.Request) (Identity, error)
	// Challenge is the WWW-Authenticate value sent with 401 answers.
	Challenge() string
}

// NamespaceAuthorizer is an Identifier that can grant namespaces beyond the
// identity's own (Kubernetes RBAC). MayActAs returns nil when it may, an
// error wrapping ErrForbidden when it may not, ErrUnavailable when it cannot tell.
type NamespaceAuthorizer interface {
	MayActAs(ctx context.Context, id Identity, namespace string) error
}

// ErrForbidden: the identity may not act as the namespace it asked for (403).
var ErrForbidden = errors.New("forbidden")

// HeaderIdentifier trusts the X-Tenant-Namespace header (auth.type: none).
// It is only safe behind a proxy that authenticates and sets the header.
// A comma-separated list in the one header names several namespaces; `*`
// is refused, since no one has checked what the caller may read.
type HeaderIdentifier struct {
	// MaxNamespaces bounds the list (auth.max_namespaces).
	MaxNamespaces int
}

// Identify implements Identifier.
func (h HeaderIdentifier) Identify(r *http.Request) (Identity, error) {
	v, err := SingleHeader(r, TenantHeader)
	if err != nil {
		return Identity{}, err
	}
	if v == "" {
		return Identity{}, fmt.Errorf("%w: header %s is required", ErrNoCredentials, TenantHeader)
	}
	names, all, err := ParseNamespaces(v, cmp.Or(h.MaxNamespaces, DefaultMaxNamespaces))
	if err != nil {
		return Identity{}, err
	}
	if all {
		return Identity{}, fmt.Errorf("%w: %q (every namespace the caller may read) needs an auth.type that knows the caller", ErrBadNamespaces, AllNamespaces)
	}
	return Identity{Namespaces: names, Subject: "header:" + clipString(strings.Join(names, ","), 128)}, nil
}

// Challenge implements Identifier.
func (HeaderIdentifier) Challenge() string { return `Tenant header="` + TenantHeader + `"` }

// SingleHeader returns the value of a header that may appear at most once.
func SingleHeader(r *http.Request, name string) (string, error) {
	vs := r.Header.Values(name)
	switch len(vs) {
	case 0:
		return "", nil
	case 1:
		return strings.TrimSpace(vs[0]), nil
	}
	return "", fmt.Errorf("%w: header %s given %d times", ErrAmbiguous, name, len(vs))
}

// bearerToken returns the token of an "Authorization: Bearer" header; ok is
// false when there is none, err set when there are several.
func bearerToken(r *http.Request) (token string, ok bool, err error) {
	h, err := SingleHeader(r, "Authorization")
	if err != nil || h == "" {
		return "", false, err
	}
	scheme, token, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false, nil
	}
	token = strings.TrimSpace(token)
	return token, token != "", nil
}

func clipString(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
