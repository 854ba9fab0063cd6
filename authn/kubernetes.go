package authn

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"golang.org/x/sync/singleflight"
)

// maxConcurrentReviews bounds the reviews in flight: every unknown token
// costs the API server a TokenReview, and made-up tokens need no key, so a
// flood of them must queue here (and fail after the timeout) rather than
// pile onto the API server.
const maxConcurrentReviews = 32

// serviceAccountPrefix starts the user name of every ServiceAccount:
// system:serviceaccount:<namespace>:<name>.
const serviceAccountPrefix = "system:serviceaccount:"

// KubernetesIdentifier authenticates bearer tokens with a TokenReview
// (auth.type: kubernetes). A ServiceAccount acts as its own namespace; any
// namespace N, and admin, are what SubjectAccessReviews allow. Answers are
// cached for a short, bounded time, keyed by a hash of the token; an API
// server that cannot be asked lets nothing through.
type KubernetesIdentifier struct {
	cfg    KubernetesConfig
	client kubernetes.Interface
	logger *slog.Logger
	cache  *ttlCache
	flight singleflight.Group
	slots  chan struct{}
	// maxNamespaces bounds the reviews of one ReadableNamespaces.
	maxNamespaces int
}

// NewKubernetesIdentifier returns the identifier; cfg must have passed Validate.
func NewKubernetesIdentifier(cfg KubernetesConfig, maxNamespaces int, rc *rest.Config, logger *slog.Logger) (*KubernetesIdentifier, error) {
	rc = rest.CopyConfig(rc)
	// Reviews are small and each has its own deadline; the client-side rate
	// limiter would only queue them behind each other.
	rc.QPS, rc.Burst = 200, 400
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("auth.kubernetes: %w", err)
	}
	return newKubernetesIdentifier(cfg, maxNamespaces, client, logger), nil
}

func newKubernetesIdentifier(cfg KubernetesConfig, maxNamespaces int, client kubernetes.Interface, logger *slog.Logger) *KubernetesIdentifier {
	if maxNamespaces <= 0 {
		maxNamespaces = DefaultMaxNamespaces
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &KubernetesIdentifier{cfg: cfg, client: client, logger: logger, cache: newTTLCache(cfg.CacheSize, time.Duration(cfg.CacheTTL)),
		slots: make(chan struct{}, maxConcurrentReviews), maxNamespaces: maxNamespaces}
}

// Challenge implements Identifier.
func (*KubernetesIdentifier) Challenge() string { return bearerChallenge }

// tokenResult is a cached TokenReview (and admin check) outcome.
type tokenResult struct {
	id  Identity
	err error // wraps ErrInvalidCredentials; unavailability is never cached
}

// Identify implements Identifier.
func (k *KubernetesIdentifier) Identify(r *http.Request) (Identity, error) {
	tok, ok, err := bearerToken(r)
	if err != nil {
		return Identity{}, err
	}
	if !ok {
		return Identity{}, fmt.Errorf("%w: send a Kubernetes token (a ServiceAccount's, or your own) as \"Authorization: Bearer <token>\"", ErrNoCredentials)
	}
	sum := sha256.Sum256([]byte(tok))
	key := hex.EncodeToString(sum[:])
	v, err := k.lookup(r.Context(), "token\x00"+key, func(ctx context.Context) (any, error) {
		id, err := k.review(ctx, tok)
		if err != nil && !errors.Is(err, ErrInvalidCredentials) {
			return nil, err
		}
		id.key = key
		return tokenResult{id: id, err: err}, nil
	})
	if err != nil {
		return Identity{}, err
	}
	res := v.(tokenResult)
	return res.id, res.err
}

// MayActAs implements NamespaceAuthorizer: a SubjectAccessReview of the
// configured namespace_access check in namespace.
func (k *KubernetesIdentifier) MayActAs(ctx context.Context, id Identity, namespace string) error {
	if slices.Contains(id.Namespaces, namespace) || id.Admin {
		return nil
	}
	if id.User.Name == "" || id.key == "" {
		return fmt.Errorf("%w: namespace %q is not one of the caller's", ErrForbidden, namespace)
	}
	v, err := k.lookup(ctx, "namespace\x00"+id.key+"\x00"+namespace, func(ctx context.Context) (any, error) {
		return k.allowed(ctx, id.User, namespace, k.cfg.NamespaceAccess)
	})
	if err != nil {
		return err
	}
	if !v.(bool) {
		return fmt.Errorf("%w: %s may not %s in namespace %q", ErrForbidden, clipString(id.User.Name, 128), k.cfg.NamespaceAccess, namespace)
	}
	return nil
}

// lookup answers from the cache or runs fn once for all concurrent callers
// of the same key. fn runs detached from the caller (a client that hangs up
// does not fail the others) but within the configured timeout. Errors are
// not cached: the next request asks again.
func (k *KubernetesIdentifier) lookup(ctx context.Context, key string, fn func(context.Context) (any, error)) (any, error) {
	if v, ok := k.cache.get(key); ok {
		return v, nil
	}
	ch := k.flight.DoChan(key, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Duration(k.cfg.Timeout))
		defer cancel()
		select {
		case k.slots <- struct{}{}:
			defer func() { <-k.slots }()
		case <-fctx.Done():
			return nil, fmt.Errorf("%w: too many reviews waiting for the Kubernetes API server", ErrUnavailable)
		}
		v, err := fn(fctx)
		if err == nil {
			k.cache.put(key, v)
		}
		return v, err
	})
	select {
	case res := <-ch:
		return res.Val, res.Err
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	}
}

// review asks the API server who the token belongs to, and whether that
// identity passes the admin check.
func (k *KubernetesIdentifier) review(ctx context.Context, tok string) (Identity, error) {
	tr, err := k.client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: tok, Audiences: k.cfg.Audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		k.logger.Warn("TokenReview failed; refusing the request", "err", err)
		return Identity{}, fmt.Errorf("%w: the Kubernetes API server could not review the token", ErrUnavailable)
	}
	st := tr.Status
	if !st.Authenticated {
		msg := "the Kubernetes API server does not accept the token"
		if st.Error != "" {
			// The server's reason names the failed check (expired, audience,
			// signature), never the token.
			msg += ": " + clipString(st.Error, 200)
		}
		return Identity{}, fmt.Errorf("%w: %s", ErrInvalidCredentials, msg)
	}
	if len(k.cfg.Audiences) > 0 && !slices.ContainsFunc(st.Audiences, func(a string) bool { return slices.Contains(k.cfg.Audiences, a) }) {
		return Identity{}, fmt.Errorf("%w: the token is not meant for audiences %v", ErrInvalidCredentials, k.cfg.Audiences)
	}
	u := UserInfo{Name: st.User.Username, UID: st.User.UID, Groups: st.User.Groups}
	if len(st.User.Extra) > 0 {
		u.Extra = make(map[string][]string, len(st.User.Extra))
		for name, vals := range st.User.Extra {
			u.Extra[name] = vals
		}
	}
	id := Identity{User: u, Subject: "kubernetes:" + clipString(u.Name, 200)}
	if rest, ok := strings.CutPrefix(u.Name, serviceAccountPrefix); ok {
		if ns, _, ok := strings.Cut(rest, ":"); ok && ns != "" {
			id.Namespaces = []string{ns}
		}
	}
	admin, err := k.allowed(ctx, u, "", k.cfg.AdminAccess)
	if err != nil {
		return Identity{}, err
	}
	id.Admin = admin
	return id, nil
}

// allowed asks a SubjectAccessReview whether u may do check in namespace
// ("" for all namespaces).
func (k *KubernetesIdentifier) allowed(ctx context.Context, u UserInfo, namespace string, check AccessCheck) (bool, error) {
	spec := authorizationv1.SubjectAccessReviewSpec{
		User: u.Name, UID: u.UID, Groups: u.Groups,
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: namespace, Verb: check.Verb, Group: check.Group, Resource: check.Resource, Subresource: check.Subresource,
		},
	}
	if len(u.Extra) > 0 {
		spec.Extra = make(map[string]authorizationv1.ExtraValue, len(u.Extra))
		for name, vals := range u.Extra {
			spec.Extra[name] = vals
		}
	}
	sar, err := k.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		k.logger.Warn("SubjectAccessReview failed; refusing the request", "err", err, "user", u.Name, "namespace", namespace)
		return false, fmt.Errorf("%w: the Kubernetes API server could not review access", ErrUnavailable)
	}
	return sar.Status.Allowed && !sar.Status.Denied, nil
}

// ttlCache is a map of answers that expire, bounded in size: when full, the
// expired entries go, then arbitrary ones.
type ttlCache struct {
	size int
	ttl  time.Duration

	mu sync.Mutex
	m  map[string]ttlEntry
}

type ttlEntry struct {
	v       any
	expires time.Time
}

func newTTLCache(size int, ttl time.Duration) *ttlCache {
	return &ttlCache{size: size, ttl: ttl, m: map[string]ttlEntry{}}
}

func (c *ttlCache) get(key string) (any, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok {
		return nil, false
	}
	if time.Now().After(e.expires) {
		delete(c.m, key)
		return nil, false
	}
	return e.v, true
}

func (c *ttlCache) put(key string, v any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if len(c.m) >= c.size {
		for k, e := range c.m {
			if now.After(e.expires) {
				delete(c.m, k)
			}
		}
		for k := range c.m {
			if len(c.m) < c.size {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[key] = ttlEntry{v: v, expires: now.Add(c.ttl)}
}
