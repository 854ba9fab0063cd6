package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/authn"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// Identifier authenticates a request (see package authn).
type Identifier interface {
	Identify(r *http.Request) (authn.Identity, error)
	// Challenge is the WWW-Authenticate value sent with 401 answers.
	Challenge() string
}

// NamespaceAuthorizer is an Identifier that may grant namespaces beyond an
// identity's own (Kubernetes RBAC); see authn.NamespaceAuthorizer.
type NamespaceAuthorizer interface {
	MayActAs(ctx context.Context, id authn.Identity, namespace string) error
}

// NamespaceParam chooses the namespace, like the X-Tenant-Namespace header
// (the parameter the OpenShift tenancy port reads).
const NamespaceParam = "namespace"

// identityKey keeps the authenticated identity in the echo context between
// authenticate and chooseTenant.
const identityKey = "proxy.identity"

// authenticate finds who is asking before anything of the request body is
// read: an unauthenticated client cannot make the proxy buffer a body.
// With no tenant source configured and the header trusted, requests are let
// through unrestricted; a configured authenticator still has to accept them.
func (s *Server) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	_, trustsHeader := s.opts.Identify.(authn.HeaderIdentifier)
	return func(c echo.Context) error {
		if s.opts.Policies == nil && trustsHeader {
			return next(c)
		}
		id, err := s.opts.Identify.Identify(c.Request())
		if err != nil {
			return s.authError(c, err)
		}
		c.Set(subjectKey, id.Subject)
		c.Set(identityKey, id)
		return next(c)
	}
}

// chooseTenant picks the namespaces the request acts as and puts their
// policy in the context. It runs after the form is parsed (the namespace
// parameter may come in a POST body). Several namespaces are each
// authorised on their own; one the caller may not read refuses the whole
// request (403 naming it), never a silent drop from the union.
func (s *Server) chooseTenant(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if s.opts.Policies == nil {
			return next(c)
		}
		r := c.Request()
		id, _ := c.Get(identityKey).(authn.Identity)
		asked, err := requestedNamespace(r)
		if err != nil {
			return s.authError(c, err)
		}
		names, all, err := authn.ParseNamespaces(asked, s.opts.MaxNamespaces)
		if err != nil {
			return s.authError(c, err)
		}
		var policy *tenancy.Policy
		switch {
		case all:
			policy, err = s.readablePolicy(r.Context(), id)
		case len(names) > 1:
			policy, err = s.unionPolicy(r.Context(), id, names)
		default:
			var ns string
			if len(names) == 1 {
				ns = names[0]
			}
			if ns, err = s.chooseNamespace(r.Context(), id, ns); err == nil {
				policy, err = s.policyOf(id, ns)
			}
		}
		if err != nil {
			return s.authError(c, err)
		}
		c.SetRequest(r.WithContext(tenancy.NewContext(r.Context(), policy)))
		return next(c)
	}
}

// policyOf is the policy of one namespace the identity may act as; an
// error wrapping authn.ErrForbidden when it grants nothing.
func (s *Server) policyOf(id authn.Identity, ns string) (*tenancy.Policy, error) {
	if id.Admin {
		return &tenancy.Policy{Namespace: ns, Admin: true, Fingerprint: "admin"}, nil
	}
	p, err := s.opts.Policies.Policy(ns)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", authn.ErrForbidden, err)
	}
	return p, nil
}

// unionPolicy authorises every named namespace, then ORs their policies.
func (s *Server) unionPolicy(ctx context.Context, id authn.Identity, names []string) (*tenancy.Policy, error) {
	parts := make([]*tenancy.Policy, 0, len(names))
	for _, ns := range names {
		if _, err := s.chooseNamespace(ctx, id, ns); err != nil {
			return nil, err
		}
		p, err := s.policyOf(id, ns)
		if err != nil {
			return nil, err
		}
		parts = append(parts, p)
	}
	return tenancy.Union(parts...), nil
}

// namespaceLister is what knows the namespaces that have a policy (the
// candidates of "every namespace I may read").
type namespaceLister interface {
	Namespaces() []string
}

// readablePolicy is the union of every namespace the identity may read
// that has a policy (authn.AllNamespaces). With Kubernetes RBAC that means
// reviewing each namespace holding MetricAccess objects; otherwise it is
// the namespaces the credentials name. Namespaces without rules add
// nothing and are left out; none at all is 403.
func (s *Server) readablePolicy(ctx context.Context, id authn.Identity) (*tenancy.Policy, error) {
	if id.Admin {
		return &tenancy.Policy{Admin: true, Fingerprint: "admin"}, nil
	}
	readable := id.Namespaces
	if nl, ok := s.opts.Identify.(authn.NamespaceLister); ok {
		lister, ok := s.opts.Policies.(namespaceLister)
		if !ok {
			return nil, fmt.Errorf("%w: the tenant source cannot list its namespaces", authn.ErrUnavailable)
		}
		var err error
		if readable, err = nl.ReadableNamespaces(ctx, id, lister.Namespaces()); err != nil {
			return nil, err
		}
	} else if len(readable) > s.opts.MaxNamespaces {
		return nil, fmt.Errorf("%w: the credentials name %d namespaces, more than %d (auth.max_namespaces)", authn.ErrBadNamespaces, len(readable), s.opts.MaxNamespaces)
	}
	var parts []*tenancy.Policy
	for _, ns := range readable {
		if p, err := s.opts.Policies.Policy(ns); err == nil {
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		return nil, fmt.Errorf("%w: no namespace the caller may read has MetricAccess rules", authn.ErrForbidden)
	}
	return tenancy.Union(parts...), nil
}

// requestedNamespace is the value of the header or the namespace parameter
// ("" for none): one namespace, a comma-separated list or `*`. Each may be
// given once; both must agree.
func requestedNamespace(r *http.Request) (string, error) {
	header, err := authn.SingleHeader(r, authn.TenantHeader)
	if err != nil {
		return "", err
	}
	params := r.Form[NamespaceParam]
	if len(params) > 1 {
		return "", fmt.Errorf("%w: parameter %q given %d times", authn.ErrAmbiguous, NamespaceParam, len(params))
	}
	if len(params) == 1 {
		p := strings.TrimSpace(params[0])
		if header != "" && p != header {
			return "", fmt.Errorf("%w: header %s (%q) and parameter %q (%q) differ", authn.ErrAmbiguous, authn.TenantHeader, header, NamespaceParam, p)
		}
		return p, nil
	}
	return header, nil
}

// chooseNamespace picks the namespace a request acts as: the asked one,
// which must be one of the identity's (or granted by the authorizer), or the
// identity's only one.
func (s *Server) chooseNamespace(ctx context.Context, id authn.Identity, asked string) (string, error) {
	switch {
	case asked != "" && (slices.Contains(id.Namespaces, asked) || id.Admin):
		return asked, nil
	case asked != "":
		if az, ok := s.opts.Identify.(NamespaceAuthorizer); ok {
			if err := az.MayActAs(ctx, id, asked); err != nil {
				return "", err
			}
			return asked, nil
		}
		return "", fmt.Errorf("%w: namespace %q is not one of the caller's", authn.ErrForbidden, asked)
	case len(id.Namespaces) == 1:
		return id.Namespaces[0], nil
	case id.Admin:
		return "", nil
	case len(id.Namespaces) == 0:
		return "", fmt.Errorf("%w: the credentials name no namespace: choose one with the %s header or the %q parameter", authn.ErrForbidden, authn.TenantHeader, NamespaceParam)
	default:
		return "", fmt.Errorf("%w: the caller may act as several namespaces: choose one with the %s header or the %q parameter", authn.ErrForbidden, authn.TenantHeader, NamespaceParam)
	}
}

// authError answers an authentication or tenant-choice failure: 400 for an
// ambiguous request, 503 when the credentials cannot be checked (nothing is
// let through), 403 for a namespace the caller may not act as, else 401.
func (s *Server) authError(c echo.Context, err error) error {
	msg := clipString(err.Error(), 300)
	c.Set(authErrorKey, msg)
	switch {
	case errors.Is(err, authn.ErrAmbiguous), errors.Is(err, authn.ErrBadNamespaces):
		s.metrics.authFailures.WithLabelValues("ambiguous").Inc()
		return apiError(http.StatusBadRequest, errorBadData, msg)
	case errors.Is(err, authn.ErrUnavailable):
		s.metrics.authFailures.WithLabelValues("unavailable").Inc()
		return apiError(http.StatusServiceUnavailable, errorUnavailable, msg)
	case errors.Is(err, authn.ErrForbidden):
		s.metrics.authFailures.WithLabelValues("forbidden").Inc()
		return apiError(http.StatusForbidden, errorForbidden, strings.TrimPrefix(msg, authn.ErrForbidden.Error()+": "))
	}
	return s.unauthorized(c, err, msg)
}

// unauthorized answers 401 with a challenge; a rejected credential adds
// error="invalid_token" (RFC 6750) so clients know not to retry it.
func (s *Server) unauthorized(c echo.Context, err error, msg string) error {
	challenge := s.opts.Identify.Challenge()
	if errors.Is(err, authn.ErrNoCredentials) {
		s.metrics.authFailures.WithLabelValues("missing").Inc()
		return &promError{Code: http.StatusUnauthorized, Type: errorUnauthorized, Msg: "authentication required: " + msg, Challenge: challenge}
	}
	s.metrics.authFailures.WithLabelValues("invalid").Inc()
	if strings.HasPrefix(challenge, "Bearer ") {
		challenge += `, error="invalid_token"`
	}
	return &promError{Code: http.StatusUnauthorized, Type: errorUnauthorized, Msg: "authentication failed: " + msg, Challenge: challenge}
}

// requireAdmin lets only admin namespaces reach management endpoints when a
// tenant source is configured: one tenant must not learn another's rules or
// backends.
func (s *Server) requireAdmin(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if s.opts.Policies == nil {
			return next(c)
		}
		if p := tenancy.FromContext(c.Request().Context()); p == nil || !p.Admin {
			return apiError(http.StatusForbidden, errorForbidden, "only admin namespaces may read this endpoint")
		}
		return next(c)
	}
}

func clipString(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
