package engine

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/remote"
)

// pushProvider hands the groups the test sends to the manager, one update
// at a time, and acknowledges each.
type pushProvider struct {
	updates chan []*discovery.Group
	applied chan struct{}
}

func (p *pushProvider) Run(ctx context.Context, update func([]*discovery.Group)) {
	for {
		select {
		case <-ctx.Done():
			return
		case gs := <-p.updates:
			update(gs)
			p.applied <- struct{}{}
		}
	}
}

// establishedTo counts this network namespace's established TCP connections
// whose remote end is port on 127.0.0.1: the client sides of connections
// to the test Prometheus.
func establishedTo(t *testing.T, port int) int {
	t.Helper()
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Fatalf("counting connections needs Linux /proc/net/tcp: %v", err)
	}
	defer func() { _ = f.Close() }()
	want := fmt.Sprintf("0100007F:%04X", port)
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 3 && fields[2] == want && fields[3] == "01" {
			n++
		}
	}
	return n
}

// TestChurnReturnsToBaseline: 200 replica URLs pass through discovery, ten
// at a time, each probed and queried; afterwards the goroutines and the
// connections to the backend are what they were with the first ten, and
// the fan-out holds ten clients. The same churn without Retain keeps a pool
// per URL ever seen (the control: the measurement can see a leak).
func TestChurnReturnsToBaseline(t *testing.T) {
	prom := e2eutil.StartPrometheus(t, e2eutil.V2, strings.NewReader("# TYPE up unknown\nup{job=\"churn\"} 1 1700000000\n# EOF\n"), e2eutil.WithName("churn"))
	port, _ := strconv.Atoi(prom.URL[strings.LastIndexByte(prom.URL, ':')+1:])
	// Every URL names the same server with its own user part: each is a
	// replica of its own to the proxy, with its own client and pool.
	batch := func(i int) []string {
		var urls []string
		for j := range 10 {
			urls = append(urls, fmt.Sprintf("http://r%d@127.0.0.1:%d", i*10+j, port))
		}
		return urls
	}

	run := func(t *testing.T, retain bool) (baseGoroutines, baseConns, endGoroutines, endConns, clients int) {
		cfg := discovery.DefaultConfig()
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		mgr, err := discovery.NewManager(cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		f, err := NewFanout(mgr, FanoutOptions{Remote: remote.DefaultConfig()})
		if err != nil {
			t.Fatal(err)
		}
		if retain {
			mgr.OnUpdate(f.Retain)
		}
		ctx, cancel := context.WithCancel(context.Background())
		p := &pushProvider{updates: make(chan []*discovery.Group), applied: make(chan struct{})}
		done := make(chan struct{})
		go func() { mgr.RunProvider(ctx, "churn", p); close(done) }()
		defer func() { cancel(); <-done; f.Close() }()

		round := func(urls []string) {
			p.updates <- discovery.StaticGroups([]discovery.StaticGroup{{Name: "g", URLs: urls}})
			<-p.applied
			mgr.CheckNow(ctx, f.Probe) // a probe, and so a kept-alive connection, per replica
			q, _ := f.Querier(0, 1<<62)
			ss := q.Select(ctx, false, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "up"))
			for ss.Next() {
			}
			if err := ss.Err(); err != nil {
				t.Fatalf("query: %v", err)
			}
		}
		settled := func() (int, int) {
			// Closed connections take their two goroutines with them a
			// moment later; wait until the count stops falling.
			g, c := runtime.NumGoroutine(), establishedTo(t, port)
			for range 50 {
				time.Sleep(40 * time.Millisecond)
				g2, c2 := runtime.NumGoroutine(), establishedTo(t, port)
				if g2 == g && c2 == c {
					break
				}
				g, c = g2, c2
			}
			return g, c
		}
		round(batch(0))
		baseGoroutines, baseConns = settled()
		for i := 1; i < 20; i++ {
			round(batch(i))
		}
		endGoroutines, endConns = settled()
		return baseGoroutines, baseConns, endGoroutines, endConns, f.Clients()
	}

	bg, bc, eg, ec, clients := run(t, true)
	t.Logf("with Retain: baseline %d goroutines, %d connections; after 200 URLs %d goroutines, %d connections, %d clients", bg, bc, eg, ec, clients)
	if clients != 10 {
		t.Errorf("%d clients held, want the 10 in discovery", clients)
	}
	if ec > bc {
		t.Errorf("connections to the backend: %d after the churn, %d before", ec, bc)
	}
	if eg > bg+4 {
		t.Errorf("goroutines: %d after the churn, %d before", eg, bg)
	}

	cbg, cbc, ceg, cec, cclients := run(t, false)
	t.Logf("without Retain: baseline %d goroutines, %d connections; after 200 URLs %d goroutines, %d connections, %d clients", cbg, cbc, ceg, cec, cclients)
	if cec < cbc+100 || ceg < cbg+100 {
		t.Errorf("the control did not leak (%d→%d connections, %d→%d goroutines): the measurement cannot see a leak", cbc, cec, cbg, ceg)
	}
}

// TestRetainWhileInUse: a client dropped from discovery while a call uses
// it stays usable for that call and is closed (forgotten) after; a call
// racing with the removal gets a client of its own that is not kept.
func TestRetainWhileInUse(t *testing.T) {
	f, _ := newTestFanout(t, discovery.PartialWarn)
	groups := discovery.StaticGroups([]discovery.StaticGroup{{Name: "g", URLs: []string{"http://a", "http://b"}}})
	f.Retain(groups)
	ca, releaseA, err := f.acquire(groups[0], "http://a")
	if err != nil {
		t.Fatal(err)
	}
	if _, releaseB, _ := f.acquire(groups[0], "http://b"); releaseB != nil {
		releaseB()
	}
	if f.Clients() != 2 {
		t.Fatalf("%d clients, want 2", f.Clients())
	}
	f.Retain(discovery.StaticGroups([]discovery.StaticGroup{{Name: "g", URLs: []string{"http://b"}}}))
	if f.Clients() != 1 {
		t.Fatalf("%d clients after a left, want 1", f.Clients())
	}
	if ca.URL() != "http://a" {
		t.Fatal("the client in use changed")
	}
	f.mu.Lock()
	if len(f.clients) != 1 || f.clients["http://a"] != nil {
		t.Error("a is still held")
	}
	f.mu.Unlock()
	releaseA()
	// A probe of a after it left: served, not kept.
	if _, release, err := f.acquire(groups[0], "http://a"); err != nil {
		t.Fatal(err)
	} else {
		release()
	}
	if f.Clients() != 1 {
		t.Fatalf("%d clients after a late call to a, want 1", f.Clients())
	}
}
