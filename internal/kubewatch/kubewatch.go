// Package kubewatch holds what the Kubernetes backend discovery and the
// MetricAccess watcher share: waiting for informer events and naming the
// namespaces they watch.
package kubewatch

import (
	"context"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NextChange waits for a signal on changed, then lets a burst of further
// events settle for debounce (a rollout, a resync, an apply of many objects
// become one update). It returns false when ctx ends first.
func NextChange(ctx context.Context, changed <-chan struct{}, debounce time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-changed:
	}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(debounce):
		return true
	}
}

// NamespacesText names watched namespaces for logs: "*" for all of them.
func NamespacesText(nss []string) string {
	if len(nss) == 1 && nss[0] == metav1.NamespaceAll {
		return "*"
	}
	return strings.Join(nss, ",")
}
