package e2eutil

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil/e2ehost"
)

// Redis is a redis-server child process without persistence.
type Redis struct {
	// Addr is host:port on 127.0.0.1.
	Addr string

	t    testing.TB
	proc *e2ehost.Process
	o    redisOptions
}

// RedisOption changes how StartRedis starts the server.
type RedisOption func(*redisOptions)

type redisOptions struct {
	args     []string
	tls      *tls.Config // client side, for the readiness check
	auth     []string    // username, password for the readiness check
	sentinel string      // configuration of a sentinel; empty for a data node
}

// RedisArgs adds command-line settings (e.g. "--user", "proxy on >pw ~* +@all").
func RedisArgs(args ...string) RedisOption {
	return func(o *redisOptions) { o.args = append(o.args, args...) }
}

// RedisTLS serves TLS only, on Addr, with the given server certificate and
// key files; client is what the readiness check connects with.
func RedisTLS(certFile, keyFile, caFile string, client *tls.Config) RedisOption {
	return func(o *redisOptions) {
		o.args = append(o.args, "--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", caFile, "--tls-auth-clients", "no")
		o.tls = client
	}
}

// RedisAuth is the ACL user the readiness check logs in as, for servers
// whose default user is off.
func RedisAuth(user, password string) RedisOption {
	return func(o *redisOptions) { o.auth = []string{user, password} }
}

// StartRedis starts redis-server (from PATH, or the path in REDIS_SERVER) on a
// free port and waits until it answers PING. It is killed when the test ends.
func StartRedis(t testing.TB, opts ...RedisOption) *Redis {
	t.Helper()
	r := newRedis(t, opts...)
	r.start(nil)
	return r
}

func newRedis(t testing.TB, opts ...RedisOption) *Redis {
	bin := lookBinary(t, "REDIS_SERVER", "redis-server", "apt-get install redis-server")
	dir := t.TempDir()
	r := &Redis{t: t, proc: &e2ehost.Process{Name: "redis-server", Path: bin, LogPath: filepath.Join(dir, "redis.log")}}
	for _, o := range opts {
		o(&r.o)
	}
	cleanup(t, r.proc)
	return r
}

// start picks a port and starts the server; extra adds port-dependent args.
func (r *Redis) start(extra func(port int) ([]string, error)) {
	r.t.Helper()
	dir := filepath.Dir(r.proc.LogPath)
	err := r.proc.StartOnFreePort(startAttempts, func(port int) error {
		r.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		r.proc.Name = "redis-server " + r.Addr
		portFlag := "--port"
		if r.o.tls != nil {
			portFlag = "--tls-port"
		}
		var args []string
		if r.o.sentinel != "" {
			// A sentinel rewrites its configuration file: it must have one.
			conf := filepath.Join(dir, "sentinel.conf")
			if err := os.WriteFile(conf, []byte(r.o.sentinel), 0o644); err != nil {
				return err
			}
			args = append(args, conf, "--sentinel")
		}
		args = append(args, "--bind", "127.0.0.1", portFlag, strconv.Itoa(port), "--dir", dir)
		if r.o.tls != nil {
			args = append(args, "--port", "0")
		}
		if r.o.sentinel == "" {
			args = append(args, "--save", "", "--appendonly", "no")
		}
		args = append(args, r.o.args...)
		if extra != nil {
			more, err := extra(port)
			if err != nil {
				return err
			}
			args = append(args, more...)
		}
		r.proc.Args = args
		return nil
	}, redisReadyTimeout, r.ping)
	if err != nil {
		fatalStart(r.t, err)
	}
}

const redisReadyTimeout = 30 * time.Second

// ping speaks just enough RESP to see the server answer.
func (r *Redis) ping() error {
	_, err := r.Do("PING")
	return err
}

// Do sends one command and returns the first line of the answer (bulk
// strings: their content, arrays: the raw lines joined by newlines). It is
// enough to drive and check a test server, not a client.
func (r *Redis) Do(args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", r.Addr, time.Second)
	if err != nil {
		return "", err
	}
	if r.o.tls != nil {
		conn = tls.Client(conn, r.o.tls)
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	br := bufio.NewReader(conn)
	if r.o.auth != nil {
		if _, err := send(conn, br, "AUTH", r.o.auth[0], r.o.auth[1]); err != nil {
			return "", err
		}
	}
	return send(conn, br, args...)
}

func send(conn net.Conn, br *bufio.Reader, args ...string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return "", err
	}
	return readReply(br)
}

func readReply(br *bufio.Reader) (string, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("redis: %s", line[1:])
	case '$':
		n, _ := strconv.Atoi(line[1:])
		if n < 0 {
			return "", nil
		}
		buf := make([]byte, n+2)
		if _, err := ioReadFull(br, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	case '*':
		n, _ := strconv.Atoi(line[1:])
		var parts []string
		for range n {
			p, err := readReply(br)
			if err != nil {
				return "", err
			}
			parts = append(parts, p)
		}
		return strings.Join(parts, "\n"), nil
	}
	return "", fmt.Errorf("reply %q not understood", line)
}

func ioReadFull(br *bufio.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := br.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Kill stops the server with SIGKILL, as a crash would; its data is gone,
// its port held for Restart.
func (r *Redis) Kill() { r.proc.StopHoldingPort(os.Kill, time.Minute) }

// Restart starts a killed server again on the same address (empty, since
// nothing is persisted). A running server is killed first; a port taken
// meanwhile is waited for, up to 15 s.
func (r *Redis) Restart() {
	r.t.Helper()
	r.proc.Kill()
	if err := r.proc.RestartOnPort(redisReadyTimeout, r.ping); err != nil {
		fatalStart(r.t, fmt.Errorf("restart redis: %w", err))
	}
}

// Log is the tail of the server's log.
func (r *Redis) Log() string { return r.proc.LogTail(logTailBytes) }

// RedisCluster is a Redis Cluster of masters without replicas, made with
// redis-cli --cluster create.
type RedisCluster struct {
	Nodes []*Redis
	t     testing.TB
	cli   string
}

// Reshard moves slots slots, with their keys, from node from to node to
// (redis-cli --cluster reshard): clients with the old slot map meet MOVED
// and, for keys in migration, ASK.
func (c *RedisCluster) Reshard(from, to, slots int) {
	c.t.Helper()
	id := func(n *Redis) string {
		s, err := n.Do("CLUSTER", "MYID")
		if err != nil {
			c.t.Fatalf("e2eutil: CLUSTER MYID on %s: %v", n.Addr, err)
		}
		return s
	}
	out, err := exec.Command(c.cli, "--cluster", "reshard", c.Nodes[from].Addr,
		"--cluster-from", id(c.Nodes[from]), "--cluster-to", id(c.Nodes[to]),
		"--cluster-slots", strconv.Itoa(slots), "--cluster-yes").CombinedOutput()
	if err != nil {
		c.t.Fatalf("e2eutil: redis-cli --cluster reshard: %v\n%s", err, out)
	}
}

// Addrs lists the nodes' addresses, the seeds a cluster client takes.
func (c *RedisCluster) Addrs() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.Addr)
	}
	return out
}

// StartRedisCluster starts masters cluster-enabled nodes, joins them into one
// cluster with the slots spread evenly and waits until every node reports
// cluster_state:ok.
func StartRedisCluster(t testing.TB, masters int) *RedisCluster {
	t.Helper()
	cli := lookBinary(t, "REDIS_CLI", "redis-cli", "apt-get install redis-tools (Debian's redis-server depends on it)")
	c := &RedisCluster{t: t, cli: cli}
	for range masters {
		n := newRedis(t, RedisArgs("--cluster-enabled", "yes", "--cluster-node-timeout", "2000"))
		dir := filepath.Dir(n.proc.LogPath)
		n.start(func(int) ([]string, error) {
			// The bus port defaults to port+10000, which may not exist or be
			// taken; the node config file keeps its identity across restarts.
			bus, err := e2ehost.FreePort()
			if err != nil {
				return nil, err
			}
			return []string{"--cluster-port", strconv.Itoa(bus), "--cluster-config-file", filepath.Join(dir, "nodes.conf")}, nil
		})
		c.Nodes = append(c.Nodes, n)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.Command(cli, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("e2eutil: redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitOK()
	return c
}

// WaitOK waits until every running node reports cluster_state:ok.
func (c *RedisCluster) WaitOK() {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, n := range c.Nodes {
		for {
			info, err := n.Do("CLUSTER", "INFO")
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("e2eutil: redis cluster node %s not ok after 30s: %v %q\n%s", n.Addr, err, info, n.Log())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// KeysPerNode counts the keys each node holds (DBSIZE).
func (c *RedisCluster) KeysPerNode() []int {
	var out []int
	for _, n := range c.Nodes {
		s, err := n.Do("DBSIZE")
		v, _ := strconv.Atoi(s)
		if err != nil {
			v = -1
		}
		out = append(out, v)
	}
	return out
}

// RedisSentinel is one master, one replica and three sentinels watching
// them under MasterName.
type RedisSentinel struct {
	MasterName string
	Data       []*Redis // the master first, as started
	Sentinels  []*Redis
	t          testing.TB
}

// SentinelAddrs lists the sentinels' addresses.
func (s *RedisSentinel) SentinelAddrs() []string {
	var out []string
	for _, n := range s.Sentinels {
		out = append(out, n.Addr)
	}
	return out
}

// StartRedisSentinel starts a master, a replica of it and three sentinels
// with a quorum of two and a one-second down-after, and waits until every
// sentinel knows the replica and the other sentinels.
func StartRedisSentinel(t testing.TB) *RedisSentinel {
	t.Helper()
	s := &RedisSentinel{MasterName: "proxy-cache", t: t}
	master := StartRedis(t)
	_, mport, _ := net.SplitHostPort(master.Addr)
	replica := StartRedis(t, RedisArgs("--replicaof", "127.0.0.1", mport))
	s.Data = []*Redis{master, replica}
	for range 3 {
		n := newRedis(t)
		n.o.sentinel = fmt.Sprintf("sentinel monitor %[1]s 127.0.0.1 %[2]s 2\n"+
			"sentinel down-after-milliseconds %[1]s 1000\n"+
			"sentinel failover-timeout %[1]s 5000\n", s.MasterName, mport)
		n.start(nil)
		s.Sentinels = append(s.Sentinels, n)
	}
	Eventually(t, 30*time.Second, "sentinels see the replica and each other", func() error {
		for _, sn := range s.Sentinels {
			info, err := sn.Do("SENTINEL", "MASTER", s.MasterName)
			if err != nil {
				return err
			}
			f := strings.Split(info, "\n")
			fields := map[string]string{}
			for i := 0; i+1 < len(f); i += 2 {
				fields[f[i]] = f[i+1]
			}
			if fields["num-slaves"] != "1" || fields["num-other-sentinels"] != "2" {
				return fmt.Errorf("sentinel %s: %s replicas, %s other sentinels", sn.Addr, fields["num-slaves"], fields["num-other-sentinels"])
			}
		}
		return nil
	})
	return s
}

// MasterAddr is the master's address as the first sentinel that answers
// reports it.
func (s *RedisSentinel) MasterAddr() (string, error) {
	var last error
	for _, sn := range s.Sentinels {
		a, err := sn.Do("SENTINEL", "GET-MASTER-ADDR-BY-NAME", s.MasterName)
		if err == nil {
			return strings.Replace(a, "\n", ":", 1), nil
		}
		last = err
	}
	return "", last
}

// Node returns the data node at addr.
func (s *RedisSentinel) Node(addr string) *Redis {
	for _, n := range s.Data {
		if n.Addr == addr {
			return n
		}
	}
	return nil
}
