package harness

import (
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil/e2ehost"
)

// stopGrace is how long a server is given to stop after SIGTERM.
const stopGrace = 5 * time.Second

// cpuOf adds up the CPU time of procs.
func cpuOf(procs []*e2ehost.Process) time.Duration {
	var d time.Duration
	for _, p := range procs {
		d += p.CPUTime()
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

// procSet remembers every child so that one call ends them all, on any exit
// path of the run (error, Ctrl-C, success).
type procSet struct {
	mu    sync.Mutex
	procs []*e2ehost.Process
}

func (s *procSet) add(p *e2ehost.Process) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.procs = append(s.procs, p)
}

// stopAll stops the children in parallel, so shutdown takes one grace
// period, not one per server.
func (s *procSet) stopAll() {
	s.mu.Lock()
	procs := append([]*e2ehost.Process(nil), s.procs...)
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { p.Stop(syscall.SIGTERM, stopGrace) })
	}
	wg.Wait()
}
