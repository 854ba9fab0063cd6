package cache

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/config"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

// haFixture is a cache on the Redis described by rc, with a clock for the
// store's hold-off that the test moves.
func haFixture(t *testing.T, edit func(*RedisConfig)) (*fixture, *RedisStore, func(time.Duration)) {
	t.Helper()
	cfg := redisConfig("unused")
	cfg.Redis.Addresses = nil
	edit(&cfg.Redis)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	rs, err := NewRedisStore(cfg.Redis)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	clock := time.Now()
	rs.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	return newFixture(t, cfg, rs), rs, advance
}

var haWindow = struct {
	start, end time.Time
	step       time.Duration
}{dataEnd.Add(-12 * time.Hour), dataEnd.Add(-5 * time.Minute), time.Minute}

// warmAll runs the suite twice and fails unless the second pass needed no
// engine run for queries the cache can keep.
func warmAll(t *testing.T, f *fixture, what string) {
	t.Helper()
	ctx := context.Background()
	cacheable := 0
	for _, qs := range suite {
		cold := f.rangeQuery(ctx, qs, haWindow.start, haWindow.end, haWindow.step)
		f.counter.take()
		f.rangeQuery(ctx, qs, haWindow.start, haWindow.end, haWindow.step)
		runs := f.counter.take()
		if len(cold.Warnings) == 0 && queryShape(t, qs).lead == 0 {
			cacheable++
			if len(runs) != 0 {
				t.Fatalf("%s: %s warm: runs %v", what, qs, runs)
			}
		}
	}
	if cacheable == 0 {
		t.Fatal("no cacheable query in the suite")
	}
}

// answerAll runs the suite (each answer checked against the engine) and
// returns how many engine runs the queries the cache keeps took.
func answerAll(t *testing.T, f *fixture) int {
	t.Helper()
	n := 0
	for _, qs := range suite {
		res := f.rangeQuery(context.Background(), qs, haWindow.start, haWindow.end, haWindow.step)
		runs := f.counter.take()
		if len(res.Warnings) == 0 && queryShape(t, qs).lead == 0 {
			n += len(runs)
		}
	}
	return n
}

// TestRedisCluster: on a real three-master Redis Cluster the entries of the
// suite spread over every master; warm answers need no engine run; with a
// master killed every answer is still exact and lookups are bypasses, not
// errors to the caller; once the master is back the cache hits again.
func TestRedisCluster(t *testing.T) {
	cl := e2eutil.StartRedisCluster(t, 3)
	f, _, advance := haFixture(t, func(rc *RedisConfig) { rc.Addresses = cl.Addrs() })
	warmAll(t, f, "cluster")
	per := cl.KeysPerNode()
	t.Logf("keys per master: %v", per)
	for i, n := range per {
		if n <= 0 {
			t.Fatalf("master %d holds %d keys: keys do not spread over the cluster (%v)", i, n, per)
		}
	}

	// Resharding under load: the client's slot map goes stale, MOVED and
	// ASK are followed, answers stay exact, and the moved entries are
	// still found.
	errs0 := f.counterValue("prometheus_proxy_cache_errors_total", "store", "redis")
	bypassR := f.counterValue("prometheus_proxy_cache_requests_total", "store", "redis", "result", "bypass")
	stop := make(chan struct{})
	resharded := make(chan struct{})
	go func() {
		defer close(resharded)
		cl.Reshard(0, 2, 2000)
		close(stop)
	}()
	for passes := 0; ; passes++ {
		select {
		case <-stop:
			t.Logf("%d suite passes during the reshard", passes)
		default:
			answerAll(t, f)
			continue
		}
		break
	}
	<-resharded
	errs := f.counterValue("prometheus_proxy_cache_errors_total", "store", "redis") - errs0
	bypassed := f.counterValue("prometheus_proxy_cache_requests_total", "store", "redis", "result", "bypass") - bypassR
	t.Logf("during the reshard: %.0f store errors, %.0f lookups bypassed", errs, bypassed)
	if errs != 0 {
		t.Errorf("%.0f store errors while slots moved: MOVED/ASK must be followed, not fail", errs)
	}
	advance(2 * redisHoldOff)
	e2eutil.Eventually(t, 10*time.Second, "hits after the reshard", func() error {
		advance(2 * redisHoldOff)
		if runs := answerAll(t, f); runs != 0 {
			return fmt.Errorf("%d engine runs on a warm pass", runs)
		}
		return nil
	})
	t.Logf("keys per master after moving 2000 slots from 0 to 2: %v", cl.KeysPerNode())

	cl.Nodes[1].Kill()
	bypass0 := f.counterValue("prometheus_proxy_cache_requests_total", "store", "redis", "result", "bypass")
	answerAll(t, f) // any wrong answer or error fails the test
	advance(2 * redisHoldOff)
	answerAll(t, f)
	if b := f.counterValue("prometheus_proxy_cache_requests_total", "store", "redis", "result", "bypass"); b == bypass0 {
		t.Fatal("a master was down but no bypass was counted")
	}

	cl.Nodes[1].Restart() // same node id and slots from its nodes.conf, no data
	cl.WaitOK()
	advance(2 * redisHoldOff)
	hits0 := f.counterValue("prometheus_proxy_cache_requests_total", "store", "redis", "result", "hit")
	e2eutil.Eventually(t, 30*time.Second, "hits again after the master came back", func() error {
		advance(2 * redisHoldOff)
		answerAll(t, f)
		if runs := answerAll(t, f); runs != 0 {
			return fmt.Errorf("%d engine runs on a warm pass", runs)
		}
		return nil
	})
	if f.counterValue("prometheus_proxy_cache_requests_total", "store", "redis", "result", "hit") == hits0 {
		t.Fatal("no hits after the cluster was restored")
	}
}

// TestRedisSentinel: through three sentinels, entries written to the master
// are found after the master is killed and the replica promoted; during the
// failover every answer is still exact.
func TestRedisSentinel(t *testing.T) {
	s := e2eutil.StartRedisSentinel(t)
	f, _, advance := haFixture(t, func(rc *RedisConfig) {
		rc.MasterName = s.MasterName
		rc.Addresses = s.SentinelAddrs()
	})
	warmAll(t, f, "sentinel")
	first, err := s.MasterAddr()
	if err != nil {
		t.Fatal(err)
	}
	// Let the replica catch up before the master dies, so the entries survive.
	e2eutil.Eventually(t, 10*time.Second, "replica has the entries", func() error {
		m, _ := s.Node(first).Do("DBSIZE")
		for _, n := range s.Data {
			if n.Addr != first {
				if r, _ := n.Do("DBSIZE"); r != m || m == "0" {
					return fmt.Errorf("master %s keys, replica %s", m, r)
				}
			}
		}
		return nil
	})
	s.Node(first).Kill()
	answerAll(t, f) // exact, from the engine where Redis cannot answer
	e2eutil.Eventually(t, 60*time.Second, "failover to the replica", func() error {
		a, err := s.MasterAddr()
		if err != nil {
			return fmt.Errorf("master: %w", err)
		}
		if a == first {
			return fmt.Errorf("master still %q", a)
		}
		return nil
	})
	e2eutil.Eventually(t, 30*time.Second, "hits from the promoted replica", func() error {
		advance(2 * redisHoldOff)
		if runs := answerAll(t, f); runs != 0 {
			return fmt.Errorf("%d engine runs on a warm pass", runs)
		}
		return nil
	})
}

// TestRedisACLAndTLS: a server that allows only a named ACL user over TLS
// serves the cache with cache.redis.username, password and tls_config; with
// the wrong password every lookup is a bypass and every answer still exact.
func TestRedisACLAndTLS(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile, pool := writeTestCA(t, dir)
	srv := e2eutil.StartRedis(t,
		e2eutil.RedisTLS(certFile, keyFile, caFile, &tls.Config{RootCAs: pool, ServerName: "localhost"}),
		e2eutil.RedisArgs("--user", "default", "off", "--user", "proxy", "on", ">s3cret", "~*", "+@all"),
		e2eutil.RedisAuth("proxy", "s3cret"))
	tlsCfg := config.TLSConfig{CAFile: caFile, ServerName: "localhost"}

	f, _, _ := haFixture(t, func(rc *RedisConfig) {
		rc.Addresses = []string{srv.Addr}
		rc.Username, rc.Password = "proxy", "s3cret"
		rc.TLSEnabled, rc.TLSConfig = true, tlsCfg
	})
	warmAll(t, f, "acl+tls")
	if f.counterValue("prometheus_proxy_cache_errors_total", "store", "redis") != 0 {
		t.Fatal("store errors with the right user")
	}

	for name, edit := range map[string]func(*RedisConfig){
		"wrong password": func(rc *RedisConfig) { rc.Password = "nope" },
		"no TLS":         func(rc *RedisConfig) { rc.TLSEnabled = false },
		"default user":   func(rc *RedisConfig) { rc.Username = "" },
	} {
		bad, _, _ := haFixture(t, func(rc *RedisConfig) {
			rc.Addresses = []string{srv.Addr}
			rc.Username, rc.Password = "proxy", "s3cret"
			rc.TLSEnabled, rc.TLSConfig = true, tlsCfg
			edit(rc)
		})
		if runs := answerAll(t, bad); runs == 0 {
			t.Errorf("%s: answered from the cache", name)
		}
		if bad.counterValue("prometheus_proxy_cache_requests_total", "store", "redis", "result", "bypass") == 0 {
			t.Errorf("%s: no bypass counted", name)
		}
	}
}

// writeTestCA writes a CA and a server certificate for localhost/127.0.0.1.
func writeTestCA(t *testing.T, dir string) (caFile, certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pool = x509.NewCertPool()
	pool.AddCert(ca)
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", der), write("server-key.pem", "EC PRIVATE KEY", keyDER), pool
}
