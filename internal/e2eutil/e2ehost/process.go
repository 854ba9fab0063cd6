package e2ehost

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

var (
	portsMu     sync.Mutex
	portsHanded = map[int]bool{}
)

// FreePort returns a TCP port that was free on 127.0.0.1 a moment ago. The
// kernel may hand the same port out again once it is closed, so ports already
// returned in this process are skipped; a server that still loses the race
// is started again on another port by StartOnFreePort.
func FreePort() (int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("find a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if !portsHanded[port] {
			portsHanded[port] = true
			return port, nil
		}
	}
	return 0, errors.New("find a free port: every port offered was already handed out")
}

// Process is one child server whose output goes to a log file. Set the
// exported fields, then Start it; it may be started again once it has
// stopped. The child dies with its parent even when the parent is killed
// outright (on Linux), so no server outlives a test or a benchmark run.
type Process struct {
	Name    string // in errors
	Path    string
	Args    []string
	LogPath string // appended to, one header line per start

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed once the child has exited and been reaped
	peakRSS int64         // the last VmHWM read before a stop
	logFrom int64         // where the current start's output begins in the log
	// port is the one StartOnFreePort started the child on, which its
	// clients know it by; releasePort lets go of it once StopHoldingPort
	// held it.
	port        int
	releasePort func()
}

// Start starts the child.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running() {
		return fmt.Errorf("start %s: already running", p.Name)
	}
	logf, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("start %s: open log: %w", p.Name, err)
	}
	defer func() { _ = logf.Close() }() // the child holds its own descriptor
	if st, err := logf.Stat(); err == nil {
		p.logFrom = st.Size()
	}
	_, _ = fmt.Fprintf(logf, "=== %s %s %s\n", time.Now().Format(time.RFC3339Nano), p.Path, strings.Join(p.Args, " "))
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	return nil
}

// StartReady starts the child and waits until ready passes (see WaitReady).
func (p *Process) StartReady(timeout time.Duration, ready func() error) error {
	if err := p.Start(); err != nil {
		return err
	}
	return p.WaitReady(timeout, ready)
}

// StartOnFreePort starts the child on a port from FreePort: configure sets
// its Args (and whatever else names the port) for that port, ready tells
// when it serves (see WaitReady). When another process took the port before
// the child bound it, the child is started again on another port, attempts
// times in all; a child that failed is not left running.
func (p *Process) StartOnFreePort(attempts int, configure func(port int) error, timeout time.Duration, ready func() error) error {
	for attempt := 1; ; attempt++ {
		port, err := FreePort()
		if err != nil {
			return fmt.Errorf("start %s: %w", p.Name, err)
		}
		if err := configure(port); err != nil {
			return err
		}
		err = p.StartReady(timeout, ready)
		if err == nil {
			p.mu.Lock()
			p.port = port
			p.mu.Unlock()
			return nil
		}
		p.Kill()
		if !PortTaken(err) || attempt >= attempts {
			return err
		}
	}
}

// samePortWait is how long a restart on the child's own port keeps trying
// while another socket holds the port.
const samePortWait = 15 * time.Second

// StopHoldingPort stops the child (see Stop) and keeps the port
// StartOnFreePort started it on from being lent to another socket until
// RestartOnPort: a connect() anywhere on the machine picks its local port
// from the range a freed listening port returns to. A child started
// otherwise has no port to hold.
func (p *Process) StopHoldingPort(sig os.Signal, grace time.Duration) {
	p.Stop(sig, grace)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.releasePort == nil && p.port > 0 {
		p.releasePort = holdPort(p.port)
	}
}

// LetGoOfPort releases the port StopHoldingPort holds, for a child stopped
// for good (a test's cleanup): the hold is a socket of the test binary,
// kept otherwise until it exits.
func (p *Process) LetGoOfPort() {
	p.mu.Lock()
	release := p.releasePort
	p.releasePort = nil
	p.mu.Unlock()
	if release != nil {
		release()
	}
}

// RestartOnPort starts the child again with its Args, on the port its
// clients know (see StopHoldingPort), and waits until ready passes. A start
// that finds the port taken (the hold let go for the child to bind it, or
// never held) is tried again for up to samePortWait: whatever took it is
// most likely a connection that ends.
func (p *Process) RestartOnPort(timeout time.Duration, ready func() error) error {
	p.LetGoOfPort()
	deadline := time.Now().Add(samePortWait)
	for {
		err := p.StartReady(timeout, ready)
		if err == nil || !PortTaken(err) || time.Now().After(deadline) {
			return err
		}
		p.Kill()
		time.Sleep(100 * time.Millisecond)
	}
}

// running reports whether the child is alive; callers hold mu.
func (p *Process) running() bool {
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Running reports whether the child is alive.
func (p *Process) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.running()
}

// Exited returns a channel closed when the current child exits.
func (p *Process) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return p.done
}

// PID is the current child's process id (0 before the first Start).
func (p *Process) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Stop remembers the child's peak RSS, sends sig and waits for it to exit;
// after grace it is killed outright.
func (p *Process) Stop(sig os.Signal, grace time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running() {
		return
	}
	if rss, err := PeakRSS(p.cmd.Process.Pid); err == nil {
		p.peakRSS = rss
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Kill ends the child at once with SIGKILL, as a crash would.
func (p *Process) Kill() { p.Stop(os.Kill, time.Minute) }

// PeakRSS is the child's high-water mark of resident memory in bytes: read
// live while it runs, the last reading before Stop once it has stopped.
func (p *Process) PeakRSS() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running() {
		if rss, err := PeakRSS(p.cmd.Process.Pid); err == nil {
			return rss
		}
	}
	return p.peakRSS
}

// CPUTime is the CPU time (user and system) the running child has used so
// far; 0 once it has exited.
func (p *Process) CPUTime() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running() {
		return 0
	}
	d, err := CPUTime(p.cmd.Process.Pid)
	if err != nil {
		return 0
	}
	return d
}

// LogTail returns at most the last maxBytes of the log, cut at a line
// start.
func (p *Process) LogTail(maxBytes int64) string { return p.logTail(0, maxBytes) }

// logTail is LogTail of the log from offset from on.
func (p *Process) logTail(from, maxBytes int64) string {
	f, err := os.Open(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(log unreadable: %v)", err)
	}
	var b strings.Builder
	r := bufio.NewReader(f)
	if off := max(st.Size()-maxBytes, from); off > 0 {
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return fmt.Sprintf("(log unreadable: %v)", err)
		}
		if off > from {
			// Drop the partial first line.
			_, _ = r.ReadString('\n')
			b.WriteString("[...]\n")
		}
	}
	_, _ = r.WriteTo(&b)
	return b.String()
}

// readyTailBytes is how much of the log a NotReadyError keeps.
const readyTailBytes = 4 << 10

// WaitReady polls check until it passes, the child exits, or timeout
// passes; a failure is a *NotReadyError.
func (p *Process) WaitReady(timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	exited := p.Exited()
	p.mu.Lock()
	from := p.logFrom
	p.mu.Unlock()
	for {
		last := check()
		if last == nil {
			return nil
		}
		select {
		case <-exited:
			return &NotReadyError{Name: p.Name, Exited: true, Last: last, Tail: p.logTail(from, readyTailBytes)}
		default:
		}
		if time.Now().After(deadline) {
			return &NotReadyError{Name: p.Name, Timeout: timeout, Last: last, Tail: p.logTail(from, readyTailBytes)}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// NotReadyError is a child that did not come up: it exited first, or its
// check did not pass in time. The message leaves the log out, so each
// caller shows it once, where it suits (a test at its end, the benchmark
// with the error).
type NotReadyError struct {
	Name    string
	Exited  bool
	Timeout time.Duration
	Last    error  // the last check's failure
	Tail    string // the end of the child's log, of this start only
}

func (e *NotReadyError) Error() string {
	if e.Exited {
		return e.Name + " exited before it was ready"
	}
	return fmt.Sprintf("%s not ready after %v (last check: %v)", e.Name, e.Timeout, e.Last)
}

// WithLog is err followed by the log tail of the child it concerns, when it
// is a NotReadyError.
func WithLog(err error) error {
	var ne *NotReadyError
	if errors.As(err, &ne) {
		return fmt.Errorf("%w; its log ends:\n%s", err, ne.Tail)
	}
	return err
}

// PortTaken tells whether a start failed because another process took the
// port between FreePort and the server's bind.
func PortTaken(err error) bool {
	var ne *NotReadyError
	return errors.As(err, &ne) && ne.Exited && strings.Contains(strings.ToLower(ne.Tail), "address already in use")
}

// HTTPReady is a readiness check: GET url (with a bearer token unless empty)
// answers 200.
func HTTPReady(client *http.Client, url, token string) func() error {
	return func() error {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
		}
		return nil
	}
}
