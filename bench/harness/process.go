package harness

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one child server whose output goes to a log file.
type proc struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed once the child is reaped

	mu      sync.Mutex
	peakRSS int64 // VmHWM read just before the child was stopped
}

// startProc starts bin; the child dies with the harness even when the
// harness is killed outright (Pdeathsig), so no server outlives a run.
func startProc(name, logPath, bin string, args ...string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer func() { _ = logf.Close() }() // the child keeps its own descriptor
	_, _ = fmt.Fprintf(logf, "=== %s %s %s\n", time.Now().Format(time.RFC3339), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop records the peak RSS, then asks the child to stop and kills it after
// grace.
func (p *proc) stop(grace time.Duration) {
	if !p.alive() {
		return
	}
	if rss, err := peakRSS(p.cmd.Process.Pid); err == nil {
		p.mu.Lock()
		p.peakRSS = rss
		p.mu.Unlock()
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// PeakRSS is the child's high-water mark of resident memory, in bytes: read
// live while it runs, remembered after stop.
func (p *proc) PeakRSS() int64 {
	if p.alive() {
		if rss, err := peakRSS(p.cmd.Process.Pid); err == nil {
			return rss
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peakRSS
}

// peakRSS reads VmHWM from /proc/<pid>/status.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "VmHWM:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("VmHWM of %d: %w", pid, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// clockTicks is USER_HZ, the unit of the times in /proc/<pid>/stat: 100
// on every Linux architecture the harness runs on.
const clockTicks = 100

// cpuTime is the CPU time (user and system) the child has used so far; 0
// once it has exited.
func (p *proc) cpuTime() time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name (field 2) is in parentheses and may hold spaces;
	// utime and stime are fields 14 and 15, the 12th and 13th after it.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// cpuOf adds up the CPU time of procs.
func cpuOf(procs []*proc) time.Duration {
	var d time.Duration
	for _, p := range procs {
		d += p.cpuTime()
	}
	return d
}

// cpuReading is the CPU time of an endpoint's servers: all of them, the
// proxy's own share (0 for the reference), and each backend's.
type cpuReading struct {
	total, proxy time.Duration
	backends     []time.Duration
}

func (c cpuReading) sub(o cpuReading) cpuReading {
	return cpuReading{c.total - o.total, c.proxy - o.proxy, zipDurations(c.backends, o.backends, -1)}
}

func (c cpuReading) add(o cpuReading) cpuReading {
	return cpuReading{c.total + o.total, c.proxy + o.proxy, zipDurations(c.backends, o.backends, 1)}
}

// criticalPath is the CPU time on a load's critical path were every
// backend on a machine of its own: the proxy's, plus the busiest
// backend's (a model: it assumes CPU-bound servers that run side by side).
func (c cpuReading) criticalPath() time.Duration {
	if len(c.backends) == 0 {
		return c.total
	}
	return c.proxy + slices.Max(c.backends)
}

// zipDurations is a + sign·b element by element (the longer's length).
func zipDurations(a, b []time.Duration, sign time.Duration) []time.Duration {
	out := make([]time.Duration, max(len(a), len(b)))
	for i := range out {
		if i < len(a) {
			out[i] += a[i]
		}
		if i < len(b) {
			out[i] += sign * b[i]
		}
	}
	return out
}

// logTail returns about the last n bytes of the child's log.
func (p *proc) logTail(n int64) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if int64(len(b)) > n {
		b = b[int64(len(b))-n:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

// waitReady polls check until it passes, the child exits, or timeout.
func (p *proc) waitReady(timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if !p.alive() {
			return &exitedError{name: p.name, log: p.logTail(4 << 10)}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v: %w\n%s", p.name, timeout, err, p.logTail(2<<10))
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// exitedError is a child that died before it was ready; it keeps the log so
// callers can tell a lost port race from a real failure.
type exitedError struct{ name, log string }

func (e *exitedError) Error() string { return e.name + " exited before it was ready:\n" + e.log }

func portTaken(err error) bool {
	var ee *exitedError
	return errors.As(err, &ee) && strings.Contains(strings.ToLower(ee.log), "address already in use")
}

// freeAddr returns a loopback address whose port was free a moment ago.
// Servers that lose the race to another process are restarted by callers.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr, nil
}

// procSet remembers every child so that one call ends them all, on any exit
// path of the run (error, Ctrl-C, success).
type procSet struct {
	mu    sync.Mutex
	procs []*proc
}

func (s *procSet) add(p *proc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.procs = append(s.procs, p)
}

// stopAll stops the children in parallel, so shutdown takes one grace
// period, not one per server.
func (s *procSet) stopAll() {
	s.mu.Lock()
	procs := append([]*proc(nil), s.procs...)
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { p.stop(5 * time.Second) })
	}
	wg.Wait()
}
