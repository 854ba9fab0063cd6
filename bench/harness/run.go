package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil/e2ehost"
)

// Phases and targets as named in the report.
const (
	PhaseUncached = "uncached"
	PhaseCold     = "cold"
	PhaseWarm     = "warm"
	PhaseSliding  = "sliding"
	// PhaseFloor (--floors) times, at concurrency 1, the reference, the
	// default configuration and the two floors below in a rotation of
	// their own: interleaved with the uncached phase's, they changed its
	// reference's p50s by 9-15 %.
	PhaseFloor = "floor"

	// phaseLoad is the first load of the sliding-window dashboard: its
	// backend reads are what a refresh is compared with.
	phaseLoad = "load"

	TargetReference = "reference"
	// TargetProxy is the proxy with push-down off, TargetPushDown with it
	// on, TargetReassociate with it on and `float_sums: reassociate`.
	TargetProxy       = "proxy"
	TargetPushDown    = "proxy-pushdown"
	TargetReassociate = "proxy-reassociate"
	TargetCompare     = "compare"
	// TargetBackendsAlone is no proxy at all: each panel's request sent to
	// every backend at once, timed until the last has answered. It is what
	// the backends take to evaluate the panel over their parts of the data
	// on this machine, the floor of a proxy that only passes it on.
	TargetBackendsAlone = "backends-alone"
	// TargetOverReference is the proxy with push-down off over one group,
	// the reference itself: evaluating in the proxy over remote read, as
	// it does whatever it cannot push, with no fan-out.
	TargetOverReference = "proxy-over-reference"
)

// endpoint is where a measurement goes.
type endpoint struct {
	name string // a Target* constant
	url  string
	// each, instead of url, is where every request goes at once
	// (TargetBackendsAlone).
	each []string
	// proxy endpoints have their backend reads counted around each request.
	proxy bool
	// servers are the processes whose CPU time answers the endpoint's
	// queries: the reference, or a proxy (first) and the backends (none
	// for --compare).
	servers []*e2ehost.Process
}

// cpu reads the CPU time of the endpoint's servers.
func (e endpoint) cpu() cpuReading {
	r := cpuReading{total: cpuOf(e.servers)}
	switch {
	case e.proxy && len(e.servers) > 0:
		r.proxy = e.servers[0].CPUTime()
		for _, b := range e.servers[1:] {
			r.backends = append(r.backends, b.CPUTime())
		}
	case len(e.each) > 0:
		for _, b := range e.servers {
			r.backends = append(r.backends, b.CPUTime())
		}
	}
	return r
}

type cellKey struct {
	phase, target string
	conc, panel   int
}

// cell holds what one query measured on one target in one phase.
type cell struct {
	lat    []time.Duration
	errors int
	// Counter deltas per execution at concurrency 1, where reads can be
	// told apart.
	deltas []counters
}

type passKey struct {
	phase, target string
	conc          int
}

// passStats adds up whole passes over the dashboard.
type passStats struct {
	passes, execs int
	// busy is the time spent answering: the sum of latencies at
	// concurrency 1 (counter scrapes in between are left out), the wall
	// time of the concurrent passes otherwise.
	busy    time.Duration
	total   counters
	counted bool
	// cpu is the CPU time the endpoint's servers used answering, when
	// it has servers (cpuCounted).
	cpu        cpuReading
	cpuCounted bool
}

type runner struct {
	opts  Options
	log   *progress
	hc    *http.Client
	procs *procSet

	workDir  string
	ds       *Dataset
	backends []*server
	ref      *server
	proxyBin string
	servers  []*server // everything started, for the memory table

	now    time.Time
	panels []Panel
	reqs   []request

	mu     sync.Mutex
	cells  map[cellKey]*cell
	passes map[passKey]*passStats
	// refShapes are the reference's answers at now, what every other
	// answer at now must equal.
	refShapes []answerShape
	// refValues are the same answers parsed, for the re-associating
	// proxy, whose floats may differ from them in the last bits.
	refValues []*answerValues
	checks    map[cellKey]*check
	// proxyBytesMetric is a counter of bytes the proxy read from backends,
	// when its build exports one.
	proxyBytesMetric string
	proxyNotes       []string
	spans            []panelSpans
	warnings         []string
	phaseSeconds     map[string]float64
	loadStart        string
}

// check counts answers that equalled the reference's bit for bit, were
// within floatTolerance of it without being bit-equal (only the
// re-associating proxy is allowed that), or differed.
type check struct{ same, close, differ int }

// Run executes the whole benchmark and returns its report. Every child
// process is stopped before it returns, on success, error or cancellation.
func Run(ctx context.Context, opts Options, stderr io.Writer) (*Report, error) {
	r, err := newRunner(opts, stderr)
	if err != nil {
		return nil, err
	}
	defer r.close()
	started := time.Now()
	if err := r.setup(ctx); err != nil {
		return nil, err
	}
	if err := r.measure(ctx); err != nil {
		return nil, err
	}
	// Stopping records every server's peak RSS.
	r.procs.stopAll()
	return r.report(started), nil
}

// newRunner is a runner for opts; close stops what it started.
func newRunner(opts Options, stderr io.Writer) (*runner, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	r := &runner{
		opts: opts, log: newProgress(stderr), procs: &procSet{},
		cells: map[cellKey]*cell{}, passes: map[passKey]*passStats{}, checks: map[cellKey]*check{},
		phaseSeconds: map[string]float64{}, loadStart: loadAvg(),
	}
	maxConc := 1
	for _, c := range opts.Concurrency {
		maxConc = max(maxConc, c)
	}
	r.hc = newHTTPClient(maxConc + 4)
	return r, nil
}

// close stops every server, then removes their directories (unless kept).
func (r *runner) close() {
	r.hc.CloseIdleConnections()
	r.procs.stopAll()
	if r.workDir != "" && !r.opts.KeepWorkDir {
		_ = os.RemoveAll(r.workDir)
	}
}

func (r *runner) setup(ctx context.Context) error {
	o := r.opts
	if o.RepoRoot == "" {
		root, err := e2ehost.RepoRootFromWorkDir()
		if err != nil {
			return err
		}
		o.RepoRoot = root
	}
	if o.CacheDir == "" {
		o.CacheDir = filepath.Join(o.RepoRoot, ".cache", "bench")
	}
	if o.Prometheus == "" {
		dir, err := e2ehost.PrometheusDir(o.RepoRoot)
		if err != nil {
			return err
		}
		o.Prometheus = filepath.Join(dir, "prometheus")
	}
	bin, err := e2ehost.LookBinary("", o.Prometheus, "run `make tools`, or pass --prometheus")
	if err != nil {
		return err
	}
	o.Prometheus = bin
	r.opts = o

	data := o.DataConfig()
	ds, err := prepareDataset(ctx, o.CacheDir, data, r.log)
	if err != nil {
		return err
	}
	r.ds = ds
	r.now = data.Start.Add(data.Duration)
	r.panels = Dashboard()
	for i, p := range r.panels {
		r.reqs = append(r.reqs, resolve(p, i, r.now, data.Interval, data.Duration))
	}

	if r.proxyBin = o.ProxyBinary; r.proxyBin == "" {
		r.log.printf("building the proxy (go build ./cmd/proxy)")
		r.proxyBin = filepath.Join(o.CacheDir, "prometheus-multi-tenant-proxy")
		if err := e2ehost.BuildProxy(ctx, o.RepoRoot, r.proxyBin); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	if r.workDir, err = os.MkdirTemp("", "proxy-bench-"); err != nil {
		return fmt.Errorf("work directory: %w", err)
	}
	r.log.printf("starting %d backends and the reference (work directory %s)", data.Shards(), r.workDir)
	r.backends = make([]*server, data.Shards())
	errs := make([]error, data.Shards()+1)
	var wg sync.WaitGroup
	for i := range r.backends {
		wg.Go(func() {
			s, err := startPrometheus(o.Prometheus, data.Clusters[i], ds.ShardDir(i), r.workDir, r.procs)
			if err == nil {
				s.Role = "backend"
			}
			r.backends[i], errs[i] = s, err
		})
	}
	wg.Go(func() {
		s, err := startPrometheus(o.Prometheus, "reference", ds.UnionDir(), r.workDir, r.procs)
		if err == nil {
			s.Role = "reference"
		}
		r.ref, errs[len(errs)-1] = s, err
	})
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	r.servers = append(append(r.servers, r.backends...), r.ref)
	return ctx.Err()
}

// startProxy starts a proxy instance and remembers it for the memory table.
func (r *runner) startProxy(name string, kind proxyKind) (*server, error) {
	var urls []string
	for _, s := range r.backends {
		urls = append(urls, s.URL)
	}
	return r.startProxyOver(name, kind, urls)
}

// startProxyOver starts a proxy whose group i is reached at urls[i]. Each
// group is labelled with its shard's cluster, which every series of a
// disjoint shard stores: the proof of disjointness push-down asks for. In
// the layout with shared series the label is still set, and the proxy's
// probe finds those series and refuses push-down.
func (r *runner) startProxyOver(name string, kind proxyKind, urls []string) (*server, error) {
	groups := make([]group, len(urls))
	for i, u := range urls {
		groups[i] = group{name: r.backends[i].Name, url: u, cluster: r.ds.Config.Clusters[i]}
	}
	s, err := startProxy(r.proxyBin, name, r.workDir, groups, kind, r.procs)
	if err != nil {
		return nil, err
	}
	if kind.caching && !s.cacheSection {
		r.note("This proxy build does not accept a `cache` section: the caching proxy ran with `proxy.enable_caching: true` alone.")
	}
	r.mu.Lock()
	r.servers = append(r.servers, s)
	r.mu.Unlock()
	return s, nil
}

func (r *runner) note(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.proxyNotes {
		if n == s {
			return
		}
	}
	r.proxyNotes = append(r.proxyNotes, s)
}

func (r *runner) warn(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.log.printf("WARNING: %s", msg)
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.warnings) < 50 {
		r.warnings = append(r.warnings, msg)
	}
}

func (r *runner) measure(ctx context.Context) error {
	steps := []struct {
		phase string
		run   func(context.Context) error
	}{
		{PhaseUncached, r.uncachedPhase},
		{PhaseFloor, r.floorPhase},
		{PhaseCold + "+" + PhaseWarm, r.coldWarmPhase},
		{PhaseSliding, r.slidingPhase},
	}
	for _, s := range steps {
		if s.phase == PhaseFloor && !r.opts.Floors {
			continue
		}
		t0 := time.Now()
		if err := s.run(ctx); err != nil {
			return fmt.Errorf("%s phase: %w", s.phase, err)
		}
		r.phaseSeconds[s.phase] = time.Since(t0).Seconds()
	}
	return nil
}

func (r *runner) refEndpoint() endpoint {
	return endpoint{name: TargetReference, url: r.ref.URL, servers: []*e2ehost.Process{r.ref.proc}}
}

// floorPhase times, at concurrency 1 and in a rotation of their own, the
// reference, the default configuration (push-down on, re-associated sums),
// the backends alone and the proxy over the reference: what the default
// configuration adds to what this machine needs anyway. The answers of the
// proxies are checked once against the reference's; the backends' answers
// are each one's part.
func (r *runner) floorPhase(ctx context.Context) error {
	def, err := r.startProxy("proxy-floor-default", proxyKind{pushDown: true, reassociate: true})
	if err != nil {
		return err
	}
	defer def.stop(5 * time.Second)
	over, err := r.startProxyOverReference()
	if err != nil {
		return err
	}
	defer over.stop(5 * time.Second)
	targets := []endpoint{r.refEndpoint(), r.proxyEndpoint(TargetReassociate, def), r.backendsAloneEndpoint(),
		{name: TargetOverReference, url: over.URL, servers: []*e2ehost.Process{over.proc, r.ref.proc}}}
	r.log.printf("floor: checking answers (%d queries)", len(r.reqs))
	for i, rq := range r.reqs {
		for _, t := range targets[1:] {
			if len(t.each) > 0 {
				if _, err := queryEach(ctx, r.hc, t.each, rq); err != nil {
					return err
				}
				continue
			}
			if err := r.checkOnce(ctx, PhaseFloor, t, i, rq); err != nil {
				return err
			}
		}
	}
	return r.interleaved(ctx, PhaseFloor, targets, false)
}

// interleaved times every target on every panel at concurrency 1, round
// after round, the targets' order rotating with the round and the panel
// so that drift of the machine hits all alike; with check, every answer
// is kept and checked against the reference's (decoding it is not timed).
func (r *runner) interleaved(ctx context.Context, phase string, targets []endpoint, check bool) error {
	b := newBudget(uncachedBudget(r.opts.PhaseBudget, len(targets)))
	for round := range r.opts.UncachedRounds {
		if round > 0 && b.spent() {
			r.log.printf("%s: phase budget spent after %d rounds", phase, round)
			break
		}
		r.log.printf("%s: round %d/%d, concurrency 1", phase, round+1, r.opts.UncachedRounds)
		for i, rq := range r.reqs {
			for _, t := range rotate(targets, round+i) {
				s, body, err := r.one(ctx, phase, t, rq, check)
				if err != nil {
					return err
				}
				if s != nil && t.name != TargetReference {
					r.checkAnswer(cellKey{phase, t.name, 1, i}, body, *s)
				}
			}
		}
		r.countPass(phase, targets)
	}
	return nil
}

// checkOnce asks t for panel i untimed and checks the answer against the
// reference's, or, t being the reference, records it as the one to match.
// Only the end of ctx is an error; a failed query is a warning.
func (r *runner) checkOnce(ctx context.Context, phase string, t endpoint, i int, rq request) error {
	_, body, err := query(ctx, r.hc, t.url, rq, true)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.warn("%s %s %s: %v", phase, t.name, r.panels[i].ID, err)
		return nil
	}
	shape, err := shapeOf(body)
	if err != nil {
		r.warn("%s %s %s: %v", phase, t.name, r.panels[i].ID, err)
		return nil
	}
	if t.name == TargetReference {
		r.refShapes[i] = shape
		if r.refValues[i], err = valuesOf(body); err != nil {
			r.warn("%s %s %s: %v", phase, t.name, r.panels[i].ID, err)
		}
		return nil
	}
	r.checkAnswer(cellKey{phase, t.name, 1, i}, body, shape)
	return nil
}

// startProxyOverReference starts a proxy, push-down off, whose one group is
// the reference, with no group labels: its series as the reference stores
// them.
func (r *runner) startProxyOverReference() (*server, error) {
	s, err := startProxy(r.proxyBin, "proxy-over-reference", r.workDir, []group{{name: "reference", url: r.ref.URL}}, proxyKind{}, r.procs)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.servers = append(r.servers, s)
	r.mu.Unlock()
	return s, nil
}

// backendsAloneEndpoint sends every request to all the backends at once.
func (r *runner) backendsAloneEndpoint() endpoint {
	e := endpoint{name: TargetBackendsAlone}
	for _, b := range r.backends {
		e.each = append(e.each, b.URL)
		e.servers = append(e.servers, b.proc)
	}
	return e
}

// proxyEndpoint is the endpoint of proxy s under target, answering with
// the backends.
func (r *runner) proxyEndpoint(target string, s *server) endpoint {
	servers := []*e2ehost.Process{s.proc}
	for _, b := range r.backends {
		servers = append(servers, b.proc)
	}
	return endpoint{name: target, url: s.URL, proxy: true, servers: servers}
}

// cachedKind is the configuration of the caching proxies.
func (r *runner) cachedKind() proxyKind {
	return proxyKind{caching: true, pushDown: r.opts.CachedPushDown}
}

// cachedEndpoint is a caching proxy, named for its push-down setting.
func (r *runner) cachedEndpoint(s *server) endpoint {
	return r.proxyEndpoint(cachedTarget(r.opts.CachedPushDown), s)
}

func cachedTarget(pushDown bool) string {
	if pushDown {
		return TargetPushDown
	}
	return TargetProxy
}

// uncachedPhase compares the proxy without cache, with push-down off, on,
// and on with re-associated float sums, to the reference, per query in
// rotating order so that drift of the machine hits all alike. Each
// concurrency level gets fresh proxies, so their peak memory is that
// level's. Every answer at concurrency 1, and one untimed pass at each
// higher level, is checked against the reference's: bit for bit, or for
// re-associated sums within floatTolerance.
func (r *runner) uncachedPhase(ctx context.Context) error {
	for _, c := range r.opts.Concurrency {
		if err := r.uncached(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

func (r *runner) uncached(ctx context.Context, conc int) error {
	off, err := r.startProxy(fmt.Sprintf("proxy-uncached-c%d", conc), proxyKind{})
	if err != nil {
		return err
	}
	defer off.stop(5 * time.Second)
	on, err := r.startProxy(fmt.Sprintf("proxy-pushdown-c%d", conc), proxyKind{pushDown: true})
	if err != nil {
		return err
	}
	defer on.stop(5 * time.Second)
	reassoc, err := r.startProxy(fmt.Sprintf("proxy-reassociate-c%d", conc), proxyKind{pushDown: true, reassociate: true})
	if err != nil {
		return err
	}
	defer reassoc.stop(5 * time.Second)
	r.measured(off, TargetProxy, conc)
	r.measured(on, TargetPushDown, conc)
	r.measured(reassoc, TargetReassociate, conc)
	targets := []endpoint{r.refEndpoint(), r.proxyEndpoint(TargetProxy, off), r.proxyEndpoint(TargetPushDown, on),
		r.proxyEndpoint(TargetReassociate, reassoc)}
	if r.opts.Compare != "" {
		targets = append(targets, endpoint{name: TargetCompare, url: r.opts.Compare})
	}

	if conc == 1 {
		// One pass to warm page caches and connections, and to record the
		// reference answers the other targets must match.
		r.log.printf("uncached: checking answers against the reference (%d queries)", len(r.reqs))
		r.refShapes = make([]answerShape, len(r.reqs))
		r.refValues = make([]*answerValues, len(r.reqs))
		for i, rq := range r.reqs {
			for _, t := range targets {
				if err := r.checkOnce(ctx, PhaseUncached, t, i, rq); err != nil {
					return err
				}
			}
		}
		return r.interleaved(ctx, PhaseUncached, targets, true)
	}

	// An untimed pass at this concurrency, every answer checked; it also
	// opens the connections the timed passes use.
	r.log.printf("uncached: checking answers at concurrency %d", conc)
	for _, t := range targets {
		if t.name == TargetReference {
			continue
		}
		if err := r.verifyPass(ctx, PhaseUncached, t, conc, r.reqs); err != nil {
			return err
		}
	}
	b := newBudget(uncachedBudget(r.opts.PhaseBudget, len(targets)))
	for round := range r.opts.ConcRounds {
		if round > 0 && b.spent() {
			break
		}
		r.log.printf("uncached: round %d/%d, concurrency %d", round+1, r.opts.ConcRounds, conc)
		for _, t := range rotate(targets, round) {
			if err := r.pass(ctx, PhaseUncached, t, conc, r.reqs); err != nil {
				return err
			}
		}
	}
	return nil
}

// uncachedBudget scales the phase budget, meant for the three uncached
// targets of before (reference, push-down off and on), to the number of
// targets, so a round of each still fits as often as it did: fewer rounds
// would leave p50 to fewer samples.
func uncachedBudget(budget time.Duration, targets int) time.Duration {
	return budget * time.Duration(max(targets, 3)) / 3
}

// measured names the configuration and concurrency a proxy instance ran
// for, in the memory table.
func (r *runner) measured(s *server, target string, conc int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s.Target, s.Concurrency = target, conc
}

// coldWarmPhase restarts a caching proxy for every cold sample: a fresh
// process has an empty in-memory cache. Warm passes follow on the same
// process.
func (r *runner) coldWarmPhase(ctx context.Context) error {
	for _, c := range r.opts.Concurrency {
		if err := r.coldWarm(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

func (r *runner) coldWarm(ctx context.Context, conc int) error {
	warmPasses := r.opts.WarmRounds
	if conc > 1 {
		warmPasses = r.opts.ConcRounds
	}
	b := newBudget(r.opts.PhaseBudget)
	for round := range r.opts.ColdRounds {
		if round > 0 && b.spent() {
			r.log.printf("cold: phase budget spent after %d rounds", round)
			break
		}
		p, err := r.startProxy(fmt.Sprintf("proxy-cold-c%d-%d", conc, round+1), r.cachedKind())
		if err != nil {
			return err
		}
		r.log.printf("cold: round %d/%d at concurrency %d (fresh caching proxy), then up to %d warm passes", round+1, r.opts.ColdRounds, conc, warmPasses)
		// The first round's answers are checked against the reference.
		verify := round == 0
		for w := -1; w < warmPasses; w++ {
			phase := PhaseWarm
			if w < 0 {
				phase = PhaseCold
			}
			// Every round has its cold pass and at least one warm pass;
			// more while the budget lasts.
			if w > 0 && b.spent() {
				break
			}
			if conc == 1 {
				err = r.sequential(ctx, phase, r.cachedEndpoint(p), r.reqs, verify && w <= 0)
			} else {
				err = r.pass(ctx, phase, r.cachedEndpoint(p), conc, r.reqs)
			}
			if err != nil {
				return err
			}
		}
		p.stop(5 * time.Second)
	}
	return nil
}

// budget tells a phase when to stop starting new rounds. Each loop runs its
// first round regardless, so every measurement has at least one sample.
type budget struct {
	start time.Time
	limit time.Duration
}

func newBudget(limit time.Duration) budget { return budget{time.Now(), limit} }

func (b budget) spent() bool { return time.Since(b.start) > b.limit }

// slidingPhase loads the dashboard once on a fresh caching proxy, then
// refreshes it with every end advanced by one step, as a dashboard with
// auto-refresh does. The reference answers each refresh too, interleaved,
// both to time it and to check the stitched answers.
func (r *runner) slidingPhase(ctx context.Context) error {
	n := r.opts.SlidingRounds
	base := make([]request, len(r.reqs))
	for i, rq := range r.reqs {
		base[i] = rq.shifted(-n)
	}
	p, err := r.startProxy("proxy-sliding", r.cachedKind())
	if err != nil {
		return err
	}
	r.log.printf("sliding: loading the dashboard %d steps back", n)
	if err := r.sequential(ctx, phaseLoad, r.cachedEndpoint(p), base, false); err != nil {
		return err
	}
	b := newBudget(r.opts.PhaseBudget)
	for k := 1; k <= n; k++ {
		if k > 1 && b.spent() {
			r.log.printf("sliding: phase budget spent after %d refreshes", k-1)
			break
		}
		r.log.printf("sliding: refresh %d/%d, concurrency 1", k, n)
		for i, first := range base {
			rq := first.shifted(k)
			shapes := map[string]*answerShape{}
			for _, t := range rotate([]endpoint{r.refEndpoint(), r.cachedEndpoint(p)}, k+i) {
				s, _, err := r.one(ctx, PhaseSliding, t, rq, true)
				if err != nil {
					return err
				}
				shapes[t.name] = s
			}
			if tn := cachedTarget(r.opts.CachedPushDown); shapes[TargetReference] != nil && shapes[tn] != nil {
				r.compareShape(cellKey{PhaseSliding, tn, 1, i}, *shapes[TargetReference], *shapes[tn])
			}
		}
		r.countPass(PhaseSliding, []endpoint{r.refEndpoint(), r.cachedEndpoint(p)})
	}
	p.stop(5 * time.Second)
	if err := r.spanPass(ctx, base, n); err != nil {
		return err
	}

	for _, c := range r.opts.Concurrency {
		if c == 1 {
			continue
		}
		p, err := r.startProxy("proxy-sliding-c"+strconv.Itoa(c), r.cachedKind())
		if err != nil {
			return err
		}
		r.log.printf("sliding: concurrency %d, up to %d refreshes", c, min(n, r.opts.ConcRounds))
		b := newBudget(r.opts.PhaseBudget)
		if err := r.pass(ctx, phaseLoad, r.cachedEndpoint(p), c, base); err != nil {
			return err
		}
		for k := 1; k <= min(n, r.opts.ConcRounds); k++ {
			if k > 1 && b.spent() {
				break
			}
			shifted := make([]request, len(base))
			for i, first := range base {
				shifted[i] = first.shifted(k)
			}
			if err := r.pass(ctx, PhaseSliding, r.cachedEndpoint(p), c, shifted); err != nil {
				return err
			}
		}
		p.stop(5 * time.Second)
	}
	return nil
}

func (r *runner) countPass(phase string, targets []endpoint) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, t := range targets {
		r.passStats(passKey{phase, t.name, 1}).passes++
	}
}

// panelSpans is what one panel asked the backends for, seen by taps.
type panelSpans struct {
	load, refresh tapStats // refresh: summed over refreshes
	refreshes     int
}

// maxSpanRefreshes bounds the untimed span pass.
const maxSpanRefreshes = 2

// spanPass repeats the load and a few refreshes, untimed, on a fresh caching
// proxy that reaches the backends through taps, to see which time span each
// refresh asks the backends for.
func (r *runner) spanPass(ctx context.Context, base []request, n int) error {
	var taps []*tap
	defer func() {
		for _, t := range taps {
			t.close()
		}
	}()
	var urls []string
	for _, s := range r.backends {
		t, err := startTap(s.URL)
		if err != nil {
			return err
		}
		taps = append(taps, t)
		urls = append(urls, t.URL)
	}
	p, err := r.startProxyOver("proxy-tapped", r.cachedKind(), urls)
	if err != nil {
		return err
	}
	defer p.stop(5 * time.Second)
	total := func() tapStats {
		var s tapStats
		for _, t := range taps {
			s = s.add(t.snapshot())
		}
		return s
	}
	refreshes := min(n, maxSpanRefreshes)
	r.log.printf("sliding: backend time spans of a load and %d refreshes (untimed, through taps)", refreshes)
	r.spans = make([]panelSpans, len(base))
	for k := 0; k <= refreshes; k++ {
		for i, first := range base {
			before := total()
			if _, _, err := query(ctx, r.hc, p.URL, first.shifted(k), false); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				r.warn("span pass %s: %v", r.panels[i].ID, err)
				continue
			}
			d := total().sub(before)
			if k == 0 {
				r.spans[i].load = d
			} else {
				r.spans[i].refresh = r.spans[i].refresh.add(d)
				r.spans[i].refreshes++
			}
		}
	}
	return nil
}

func rotate(ts []endpoint, k int) []endpoint {
	out := make([]endpoint, 0, len(ts))
	for i := range ts {
		out = append(out, ts[(i+k)%len(ts)])
	}
	return out
}
