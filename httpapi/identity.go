package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// TenantHeader names the namespace a request acts as.
const TenantHeader = "X-Tenant-Namespace"

// Identity is who is asking: the namespaces they may act as, or admin.
type Identity struct {
	Namespaces []string
	Admin      bool
	// Subject names the caller in logs (never a credential).
	Subject string
}

// ErrNoCredentials is returned by an Identifier when the request carries none.
var ErrNoCredentials = errors.New("no credentials")

// Identifier authenticates a request.
type Identifier interface {
	Identify(r *http.Request) (Identity, error)
	// Challenge is the WWW-Authenticate value sent with 401 answers.
	Challenge() string
}

// HeaderIdentifier trusts the X-Tenant-Namespace header (auth.type: none).
// It is only safe behind a proxy that authenticates and sets the header.
type HeaderIdentifier struct{}

// Identify implements Identifier.
func (HeaderIdentifier) Identify(r *http.Request) (Identity, error) {
	ns := r.Header.Get(TenantHeader)
	if ns == "" {
		return Identity{}, fmt.Errorf("%w: header %s is required", ErrNoCredentials, TenantHeader)
	}
	return Identity{Namespaces: []string{ns}, Subject: "header:" + ns}, nil
}

// Challenge implements Identifier.
func (HeaderIdentifier) Challenge() string { return `Tenant header="` + TenantHeader + `"` }

// identify resolves the request's tenant and puts its policy in the context.
// With no tenant source configured, requests are let through unrestricted;
// a configured authenticator (jwt, api_key) still has to accept them.
func (s *Server) identify(next echo.HandlerFunc) echo.HandlerFunc {
	_, trustsHeader := s.opts.Identify.(HeaderIdentifier)
	return func(c echo.Context) error {
		if s.opts.Policies == nil && trustsHeader {
			return next(c)
		}
		r := c.Request()
		id, err := s.opts.Identify.Identify(r)
		if err != nil {
			return s.unauthorized(c, err)
		}
		c.Set(subjectKey, id.Subject)
		if s.opts.Policies == nil {
			return next(c)
		}
		ns, err := chooseNamespace(id, r.Header.Get(TenantHeader))
		if err != nil {
			s.metrics.authFailures.WithLabelValues("forbidden").Inc()
			return apiError(http.StatusForbidden, "forbidden", err.Error())
		}
		var policy *tenancy.Policy
		if id.Admin {
			policy = &tenancy.Policy{Namespace: ns, Admin: true, Fingerprint: "admin"}
		} else if policy, err = s.opts.Policies.Policy(ns); err != nil {
			s.metrics.authFailures.WithLabelValues("forbidden").Inc()
			return apiError(http.StatusForbidden, "forbidden", err.Error())
		}
		c.SetRequest(r.WithContext(tenancy.NewContext(r.Context(), policy)))
		return next(c)
	}
}

// unauthorized answers 401 with a challenge; a rejected credential adds
// error="invalid_token" (RFC 6750) so clients know not to retry it.
func (s *Server) unauthorized(c echo.Context, err error) error {
	msg := clipString(err.Error(), 300)
	c.Set(authErrorKey, msg)
	challenge := s.opts.Identify.Challenge()
	if errors.Is(err, ErrNoCredentials) {
		s.metrics.authFailures.WithLabelValues("missing").Inc()
		return &promError{Code: http.StatusUnauthorized, Type: "unauthorized", Msg: "authentication required: " + msg, Challenge: challenge}
	}
	s.metrics.authFailures.WithLabelValues("invalid").Inc()
	if strings.HasPrefix(challenge, "Bearer ") {
		challenge += `, error="invalid_token"`
	}
	return &promError{Code: http.StatusUnauthorized, Type: "unauthorized", Msg: "authentication failed: " + msg, Challenge: challenge}
}

// chooseNamespace picks the namespace a request acts as: the header's, which
// must be one of the identity's, or the identity's only one.
func chooseNamespace(id Identity, header string) (string, error) {
	switch {
	case header != "" && (slices.Contains(id.Namespaces, header) || id.Admin):
		return header, nil
	case header != "":
		return "", fmt.Errorf("namespace %q is not one of the caller's", header)
	case len(id.Namespaces) == 1:
		return id.Namespaces[0], nil
	case id.Admin:
		return "", nil
	case len(id.Namespaces) == 0:
		return "", errors.New("the credentials name no namespace")
	default:
		return "", fmt.Errorf("the caller may act as several namespaces: choose one with the %s header", TenantHeader)
	}
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
			return apiError(http.StatusForbidden, "forbidden", "only admin namespaces may read this endpoint")
		}
		return next(c)
	}
}
