package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/authn"
)

// headerWarnInterval is how often a proxy trusting the tenant header with
// admin namespaces says so again.
const headerWarnInterval = time.Minute

const headerAdminWarning = "auth.type is none with tenants.admin_namespaces: anyone who can reach the proxy can send X-Tenant-Namespace with an admin namespace and read everything; use auth.type kubernetes, jwt or api_key"

// headerAdmin reports whether the tenant header is trusted while some
// namespace sees everything.
func headerAdmin(cfg Config) bool {
	return cfg.Auth.Type == authn.TypeNone && cfg.Tenants.Enabled() && len(cfg.Tenants.AdminNamespaces) > 0
}

// checkListener refuses to serve a trusted tenant header with admin
// namespaces beyond loopback, unless auth.none.allow_unauthenticated_admin
// says that is meant.
func checkListener(cfg Config, addr net.Addr) error {
	if !headerAdmin(cfg) || cfg.Auth.None.AllowUnauthenticatedAdmin || isLoopback(addr) {
		return nil
	}
	return fmt.Errorf("auth.type none with tenants.admin_namespaces %v listening on %s: anyone reaching this address could claim an admin namespace; "+
		"use an authenticating auth.type, listen on loopback only, or set auth.none.allow_unauthenticated_admin: true", cfg.Tenants.AdminNamespaces, addr)
}

func isLoopback(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

// trustWarnings are the settings that hand trust to more parties than an
// operator may think, said once at start.
func trustWarnings(cfg Config) []string {
	var out []string
	for _, k := range cfg.Discovery.Kubernetes {
		if len(k.Namespaces) != 0 {
			continue
		}
		where := "discovery.kubernetes.namespaces"
		if k.Name != "" {
			where = "discovery.kubernetes[" + k.Name + "].namespaces"
		}
		out = append(out, where+" is empty, so every namespace is searched for backends: "+
			"anyone who may create a Service or Pod with the selected labels anywhere in the cluster becomes a backend, "+
			"receives the proxy's backend credentials and can answer queries with made-up data; list the namespaces Prometheus runs in")
	}
	return out
}

// warnEvery logs msg now and every interval until ctx ends.
func warnEvery(ctx context.Context, interval time.Duration, logger *slog.Logger, msg string) {
	logger.Warn(msg)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			logger.Warn(msg)
		}
	}
}
