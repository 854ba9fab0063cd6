package testenv

import (
	"bufio"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Redis is a redis-server child process without persistence.
type Redis struct {
	// Addr is host:port on 127.0.0.1.
	Addr string

	t    testing.TB
	proc *process
}

// StartRedis starts redis-server (from PATH, or the path in REDIS_SERVER) on a
// free port and waits until it answers PING. It is killed when the test ends.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	bin := lookBinary(t, "REDIS_SERVER", "redis-server", "apt-get install redis-server")
	dir := t.TempDir()
	r := &Redis{t: t, proc: &process{path: bin, logPath: filepath.Join(dir, "redis.log")}}
	r.proc.cleanup(t)
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("testenv: start redis: %v", err)
		}
		r.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		r.proc.name = "redis-server " + r.Addr
		r.proc.args = []string{
			"--bind", "127.0.0.1", "--port", strconv.Itoa(port),
			"--save", "", "--appendonly", "no", "--dir", dir,
		}
		err = r.startProc()
		if err == nil {
			return r
		}
		if !portTaken(err) || attempt == startAttempts {
			t.Fatalf("testenv: %v", err)
		}
		r.proc.kill()
	}
}

func (r *Redis) startProc() error {
	if err := r.proc.start(); err != nil {
		return err
	}
	return r.proc.waitReady(30*time.Second, r.ping)
}

// ping speaks just enough RESP to see the server answer.
func (r *Redis) ping() error {
	conn, err := net.DialTimeout("tcp", r.Addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// Kill stops the server with SIGKILL, as a crash would; its data is gone.
func (r *Redis) Kill() { r.proc.kill() }

// Restart starts a killed server again on the same address (empty, since
// nothing is persisted). A running server is killed first.
func (r *Redis) Restart() {
	r.t.Helper()
	r.proc.kill()
	if err := r.startProc(); err != nil {
		r.t.Fatalf("testenv: restart redis: %v", err)
	}
}
