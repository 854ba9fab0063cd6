package authn

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// AllNamespaces, as the whole value of the tenant header or parameter, asks
// for every namespace the caller may read.
const AllNamespaces = "*"

// ErrBadNamespaces: the namespace list of a request is malformed or too
// long (400).
var ErrBadNamespaces = errors.New("bad namespace list")

// ParseNamespaces splits the value of the tenant header or parameter: one
// namespace, a comma-separated list, or AllNamespaces alone. Spaces around
// items are dropped and duplicates counted once; an empty item, `*` next to
// names, or more than max distinct names is an error, never a guess. The
// names come back sorted, so the same set always means the same request.
func ParseNamespaces(value string, max int) (names []string, all bool, err error) {
	value = strings.TrimSpace(value)
	if value == "" {
		return nil, false, nil
	}
	if value == AllNamespaces {
		return nil, true, nil
	}
	for i, item := range strings.Split(value, ",") {
		item = strings.TrimSpace(item)
		switch item {
		case "":
			return nil, false, fmt.Errorf("%w: item %d of %q is empty", ErrBadNamespaces, i+1, clipString(value, 128))
		case AllNamespaces:
			return nil, false, fmt.Errorf("%w: %q stands alone, for every namespace the caller may read", ErrBadNamespaces, AllNamespaces)
		}
		if !slices.Contains(names, item) {
			if len(names) == max {
				return nil, false, fmt.Errorf("%w: more than %d namespaces (auth.max_namespaces)", ErrBadNamespaces, max)
			}
			names = append(names, item)
		}
	}
	slices.Sort(names)
	return names, false, nil
}

// NamespaceLister is a NamespaceAuthorizer that can find every namespace,
// of a list of candidates, an identity may act as (Kubernetes RBAC).
type NamespaceLister interface {
	ReadableNamespaces(ctx context.Context, id Identity, candidates []string) ([]string, error)
}

// ReadableNamespaces implements NamespaceLister: the caller's own namespaces
// and every candidate a SubjectAccessReview allows, each review cached like
// MayActAs's. More than max_namespaces candidates is refused rather than
// cut short (a partial answer would look complete); a review that cannot be
// made fails the whole request.
func (k *KubernetesIdentifier) ReadableNamespaces(ctx context.Context, id Identity, candidates []string) ([]string, error) {
	var todo []string
	for _, ns := range candidates {
		if !slices.Contains(id.Namespaces, ns) {
			todo = append(todo, ns)
		}
	}
	if len(todo) > k.maxNamespaces {
		return nil, fmt.Errorf("%w: %d namespaces hold MetricAccess objects, more than %d (auth.max_namespaces) to check: name the namespaces", ErrBadNamespaces, len(todo), k.maxNamespaces)
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		readable = slices.Clone(id.Namespaces)
		firstErr error
	)
	for _, ns := range todo {
		wg.Go(func() {
			err := k.MayActAs(ctx, id, ns)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				readable = append(readable, ns)
			case !errors.Is(err, ErrForbidden) && firstErr == nil:
				firstErr = err
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	slices.Sort(readable)
	return slices.Compact(readable), nil
}
