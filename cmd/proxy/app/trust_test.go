package app

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
)

// TestTrustWarnings: settings that widen who is trusted are said at start.
func TestTrustWarnings(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Discovery.Kubernetes = discovery.KubernetesClusters{{}}
	if w := trustWarnings(cfg); len(w) != 1 || !strings.Contains(w[0], "discovery.kubernetes.namespaces") {
		t.Errorf("every namespace searched for backends: warnings %q", w)
	}
	cfg.Discovery.Kubernetes[0].Namespaces = []string{"monitoring"}
	if w := trustWarnings(cfg); len(w) != 0 {
		t.Errorf("namespaces listed: warnings %q", w)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestHeaderAdminWarningRepeats: the warning about a trusted tenant header
// with admin namespaces repeats while the proxy runs.
func TestHeaderAdminWarningRepeats(t *testing.T) {
	var logs lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		warnEvery(ctx, 50*time.Millisecond, slog.New(slog.NewJSONHandler(&logs, nil)), headerAdminWarning)
		close(done)
	}()
	time.Sleep(300 * time.Millisecond)
	cancel()
	<-done
	if n := strings.Count(logs.String(), "anyone who can reach the proxy"); n < 3 {
		t.Errorf("warned %d times in 300ms at a 50ms interval", n)
	}
}
