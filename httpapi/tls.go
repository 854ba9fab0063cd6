package httpapi

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
)

// tlsConfig returns nil when TLS is off. Certificate, key and client CA are
// re-read when their files change, so rotated certificates (cert-manager,
// mounted Secrets) take effect without a restart.
func (s *Server) tlsConfig() (*tls.Config, error) {
	c := s.opts.Server.TLS
	if c.CertFile == "" {
		return nil, nil
	}
	r := &certReloader{cfg: c}
	if _, err := r.load(); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return r.load()
		},
	}, nil
}

type certReloader struct {
	cfg TLSConfig

	mu      sync.Mutex
	stamp   string
	current *tls.Config
}

func fileStamp(paths ...string) string {
	var b []byte
	for _, p := range paths {
		if p == "" {
			continue
		}
		if fi, err := os.Stat(p); err == nil {
			b = fmt.Appendf(b, "%s:%d:%d;", p, fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return string(b)
}

// load returns the config for the current files, reloading when they changed.
// A broken new file keeps the last good configuration serving.
func (r *certReloader) load() (*tls.Config, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	stamp := fileStamp(r.cfg.CertFile, r.cfg.KeyFile, r.cfg.ClientCAFile)
	if r.current != nil && stamp == r.stamp {
		return r.current, nil
	}
	cert, err := tls.LoadX509KeyPair(r.cfg.CertFile, r.cfg.KeyFile)
	if err != nil {
		if r.current != nil {
			return r.current, nil
		}
		return nil, fmt.Errorf("server.tls: %w", err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if r.cfg.ClientCAFile != "" {
		pem, err := os.ReadFile(r.cfg.ClientCAFile)
		if err != nil {
			if r.current != nil {
				return r.current, nil
			}
			return nil, fmt.Errorf("server.tls.client_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			if r.current != nil {
				return r.current, nil
			}
			return nil, fmt.Errorf("server.tls.client_ca_file: no certificate found in %s", r.cfg.ClientCAFile)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	r.current, r.stamp = tc, stamp
	return tc, nil
}
