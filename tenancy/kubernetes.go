package tenancy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/kubewatch"
)

// ErrDegraded: the Kubernetes API cannot be read; the MetricAccess objects
// last read stay in force until it can be again.
var ErrDegraded = errors.New("degraded: Kubernetes API unreachable, the last known MetricAccess objects stay in force")

// The condition the watcher writes to status, and its reasons.
const (
	ConditionReady = "Ready"

	// ReasonValid: every entry is in force.
	ReasonValid = "Valid"
	// ReasonInvalidEntries: some spec.metrics entries are unusable; the
	// others are in force (status.validatedMetrics counts them).
	ReasonInvalidEntries = "InvalidEntries"
	// ReasonCrossNamespaceSource: spec.source names another namespace and
	// tenants.allow_cross_namespace_source is off; nothing is granted.
	ReasonCrossNamespaceSource = "CrossNamespaceSource"
	// ReasonMissingSource: spec.source is empty; nothing is granted.
	ReasonMissingSource = "MissingSource"
	// ReasonInvalidLabelSelector: a spec.labelSelectors entry is unusable;
	// nothing is granted.
	ReasonInvalidLabelSelector = "InvalidLabelSelector"
	// ReasonInvalidObject: the object as a whole is unusable; nothing is granted.
	ReasonInvalidObject = "InvalidObject"
)

// FieldManager names the proxy in the objects' managedFields.
const FieldManager = "prometheus-multi-tenant-proxy"

const (
	defaultKubeResync         = 5 * time.Minute
	defaultKubeHealthInterval = 5 * time.Second
	// kubeDebounce folds a burst of events (an apply of many objects, a
	// resync) into one registry update.
	kubeDebounce = 50 * time.Millisecond
	// maxConditionMessage keeps a status readable in kubectl; the full list
	// of problems is in /debug/tenants and the log.
	maxConditionMessage = 2000
)

// KubernetesSource is a Source of MetricAccess objects read from the API
// server, in every namespace or in tenants.namespaces. It writes each
// object's status: whether and how much of it is in force.
type KubernetesSource struct {
	client         dynamic.Interface
	namespaces     []string // metav1.NamespaceAll alone means every namespace
	opts           CompileOptions
	resync         time.Duration
	healthInterval time.Duration
	writeStatus    bool
	logger         *slog.Logger

	synced atomic.Bool
	health atomic.Pointer[kubeHealth]
}

type kubeHealth struct {
	err   error
	since time.Time
}

// KubernetesOption changes a rarely changed setting of the source.
type KubernetesOption func(*KubernetesSource)

// WithResync sets how often every object is read again from the informer
// cache (default 5m); changes arrive as they happen regardless.
func WithResync(d time.Duration) KubernetesOption {
	return func(s *KubernetesSource) {
		if d > 0 {
			s.resync = d
		}
	}
}

// WithHealthInterval sets how often the API server is checked (default 5s);
// Ready reports ErrDegraded from the first failed check to the next good one.
func WithHealthInterval(d time.Duration) KubernetesOption {
	return func(s *KubernetesSource) {
		if d > 0 {
			s.healthInterval = d
		}
	}
}

// WithoutStatus leaves the objects' status alone (a read-only deployment).
func WithoutStatus() KubernetesOption {
	return func(s *KubernetesSource) { s.writeStatus = false }
}

// NewKubernetesSource returns a source reading MetricAccess objects through rc.
func NewKubernetesSource(cfg Config, rc *rest.Config, logger *slog.Logger, options ...KubernetesOption) (*KubernetesSource, error) {
	client, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("tenants.kubernetes: %w", err)
	}
	return NewKubernetesSourceWithClient(cfg, client, logger, options...)
}

// NewKubernetesSourceWithClient is NewKubernetesSource with the client given.
func NewKubernetesSourceWithClient(cfg Config, client dynamic.Interface, logger *slog.Logger, options ...KubernetesOption) (*KubernetesSource, error) {
	if logger == nil {
		logger = slog.Default()
	}
	s := &KubernetesSource{
		client:         client,
		namespaces:     []string{metav1.NamespaceAll},
		opts:           cfg.CompileOptions(),
		resync:         defaultKubeResync,
		healthInterval: defaultKubeHealthInterval,
		writeStatus:    true,
		logger:         logger,
	}
	// The same rule as Config.Watches: objects elsewhere would grant nothing,
	// so they are not even read.
	if !cfg.WatchAllNamespaces && len(cfg.Namespaces) > 0 {
		s.namespaces = nil
		for _, ns := range cfg.Namespaces {
			if !slices.Contains(s.namespaces, ns) {
				s.namespaces = append(s.namespaces, ns)
			}
		}
	}
	for _, o := range options {
		o(s)
	}
	return s, nil
}

// Ready is nil once the objects have been read and while the API server
// answers. Otherwise it says why; an error wrapping ErrDegraded means the
// last known objects are in force.
func (s *KubernetesSource) Ready() error {
	if !s.synced.Load() {
		return errors.New("MetricAccess objects have not been read from Kubernetes yet")
	}
	if h := s.health.Load(); h != nil && h.err != nil {
		return fmt.Errorf("%w (since %s): %w", ErrDegraded, h.since.UTC().Format(time.RFC3339), h.err)
	}
	return nil
}

// Run reads the objects, delivers them once the informers have synced and
// again on every change, and keeps their status up to date, until ctx ends.
// While the API server is unreachable nothing is delivered: the objects last
// delivered stay in force.
func (s *KubernetesSource) Run(ctx context.Context, update func([]*MetricAccess)) {
	changed := make(chan struct{}, 1)
	notify := func() {
		select {
		case changed <- struct{}{}:
		default: // a delivery is already pending
		}
	}
	queue := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "metricaccess_status"})
	enqueue := func(obj any) {
		if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil && s.writeStatus {
			queue.Add(key)
		}
		notify()
	}

	var (
		informers []cache.SharedIndexInformer
		synced    []cache.InformerSynced
	)
	stores := map[string]cache.Store{}
	for _, ns := range s.namespaces {
		inf := s.informer(ns)
		// managedFields would double the cached size of every object.
		_ = inf.SetTransform(func(obj any) (any, error) {
			if u, ok := obj.(*unstructured.Unstructured); ok {
				u.SetManagedFields(nil)
			}
			return obj, nil
		})
		_ = inf.SetWatchErrorHandler(func(_ *cache.Reflector, err error) {
			s.logger.Warn("MetricAccess watch failed; the last known objects stay in force", "namespace", cmp.Or(ns, "*"), "err", err)
		})
		_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    enqueue,
			UpdateFunc: func(_, obj any) { enqueue(obj) },
			DeleteFunc: func(any) { notify() },
		})
		informers = append(informers, inf)
		synced = append(synced, inf.HasSynced)
		stores[ns] = inf.GetStore()
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	defer queue.ShutDown()
	// The informers stop with ctx, which has ended whenever this returns;
	// wg.Wait above waits for them.
	for _, inf := range informers {
		wg.Go(func() { inf.RunWithContext(ctx) })
	}
	wg.Go(func() { s.checkHealth(ctx) })
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return
	}
	if s.writeStatus {
		wg.Go(func() {
			for s.processStatus(ctx, queue, stores) {
			}
		})
	}

	first := true
	for {
		objs := s.objects(stores)
		update(objs)
		if first {
			first = false
			s.synced.Store(true)
			s.logger.Info("MetricAccess objects read from Kubernetes", "objects", len(objs), "namespaces", kubewatch.NamespacesText(s.namespaces))
		}
		if !kubewatch.NextChange(ctx, changed, kubeDebounce) {
			return
		}
	}
}

// informer lists and watches the MetricAccess objects of namespace ns ("":
// all). Built on the dynamic client directly rather than client-go's
// dynamicinformer, whose package links the typed informers and clientset
// of every built-in API group (two thirds of this package's dependencies,
// compiled again for every fuzzing build).
func (s *KubernetesSource) informer(ns string) cache.SharedIndexInformer {
	resource := s.client.Resource(GroupVersionResource).Namespace(ns)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			return resource.List(ctx, opts)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			return resource.Watch(ctx, opts)
		},
	}
	return cache.NewSharedIndexInformerWithOptions(cache.ToListWatcherWithWatchListSemantics(lw, s.client),
		&unstructured.Unstructured{}, cache.SharedIndexInformerOptions{
			ResyncPeriod:      s.resync,
			Indexers:          cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc},
			ObjectDescription: GroupVersionResource.String(),
		})
}

// objects converts every cached object. One that does not convert (possible
// only when the CRD lacks its schema) grants nothing; its status says why.
func (s *KubernetesSource) objects(stores map[string]cache.Store) []*MetricAccess {
	var out []*MetricAccess
	for _, st := range stores {
		for _, item := range st.List() {
			u, ok := item.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			obj, err := fromUnstructured(u)
			if err != nil {
				continue
			}
			out = append(out, obj)
		}
	}
	return out
}

func fromUnstructured(u *unstructured.Unstructured) (*MetricAccess, error) {
	var obj MetricAccess
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &obj); err != nil {
		return nil, fmt.Errorf("MetricAccess %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	return &obj, nil
}

// checkHealth lists (at most one) MetricAccess object in every watched
// namespace each interval: the cheapest call that proves both that the API
// server answers and that the proxy may still read what it watches.
func (s *KubernetesSource) checkHealth(ctx context.Context) {
	t := time.NewTicker(s.healthInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var errs []error
		for _, ns := range s.namespaces {
			cctx, cancel := context.WithTimeout(ctx, s.healthInterval)
			_, err := s.client.Resource(GroupVersionResource).Namespace(ns).List(cctx, metav1.ListOptions{Limit: 1})
			cancel()
			if err != nil {
				errs = append(errs, fmt.Errorf("list MetricAccess in namespace %q: %w", cmp.Or(ns, "*"), err))
			}
		}
		if ctx.Err() != nil {
			return
		}
		err := errors.Join(errs...)
		prev := s.health.Load()
		switch {
		case err != nil && (prev == nil || prev.err == nil):
			s.health.Store(&kubeHealth{err: err, since: time.Now()})
			s.logger.Warn("Kubernetes API unreachable; the last known MetricAccess objects stay in force", "err", err)
		case err != nil:
			s.health.Store(&kubeHealth{err: err, since: prev.since})
		case prev != nil && prev.err != nil:
			s.health.Store(&kubeHealth{since: time.Now()})
			s.logger.Info("Kubernetes API reachable again", "degraded_for", time.Since(prev.since).Round(time.Second).String())
		}
	}
}

// processStatus handles one key of the queue; false once the queue is shut down.
func (s *KubernetesSource) processStatus(ctx context.Context, queue workqueue.TypedRateLimitingInterface[string], stores map[string]cache.Store) bool {
	key, shutdown := queue.Get()
	if shutdown {
		return false
	}
	defer queue.Done(key)
	err := s.syncStatus(ctx, key, stores)
	switch {
	case err == nil:
		queue.Forget(key)
	case apierrors.IsConflict(err):
		// The informer brings the newer version; try again with it.
		queue.AddRateLimited(key)
	case ctx.Err() != nil:
	default:
		s.logger.Warn("MetricAccess status not written", "object", key, "err", err)
		queue.AddRateLimited(key)
	}
	return true
}

// syncStatus writes the status of the object named key when it differs from
// what the object holds.
func (s *KubernetesSource) syncStatus(ctx context.Context, key string, stores map[string]cache.Store) error {
	ns, _, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil // not a key this source made
	}
	st := stores[ns]
	if st == nil {
		st = stores[metav1.NamespaceAll]
	}
	if st == nil {
		return nil
	}
	item, exists, err := st.GetByKey(key)
	if err != nil || !exists {
		return err // deleted meanwhile: nothing to write
	}
	u, ok := item.(*unstructured.Unstructured)
	if !ok {
		return nil
	}
	var current MetricAccessStatus
	if raw, ok := u.Object["status"].(map[string]any); ok {
		// A status someone else wrote in a shape we cannot read gets replaced.
		_ = runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &current)
	}
	var desired MetricAccessStatus
	if obj, err := fromUnstructured(u); err != nil {
		desired = invalidStatus(u.GetGeneration(), current, err)
	} else {
		desired = StatusFor(obj, s.opts, current)
	}
	if equality.Semantic.DeepEqual(current, desired) {
		return nil
	}
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&desired)
	if err != nil {
		return fmt.Errorf("MetricAccess %s: status: %w", key, err)
	}
	next := u.DeepCopy()
	next.Object["status"] = raw
	if _, err := s.client.Resource(GroupVersionResource).Namespace(ns).UpdateStatus(ctx, next, metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("MetricAccess %s: update status: %w", key, err)
	}
	ready := meta.FindStatusCondition(desired.Conditions, ConditionReady)
	s.logger.Debug("MetricAccess status written", "object", key, "ready", ready.Status, "reason", ready.Reason, "validated_metrics", desired.ValidatedMetrics)
	return nil
}

// StatusFor is the status that says what Compile makes of obj: the Ready
// condition (with the reason the object or some entries grant nothing), the
// number of entries in force and the generation it was computed for.
// current's conditions are kept where they still hold, so the condition's
// lastTransitionTime moves only when its status does.
func StatusFor(obj *MetricAccess, opts CompileOptions, current MetricAccessStatus) MetricAccessStatus {
	rules, problems := Compile(obj, opts)
	cond := metav1.Condition{
		Type:               ConditionReady,
		Status:             metav1.ConditionTrue,
		Reason:             ReasonValid,
		Message:            fmt.Sprintf("all %d entries are in force", len(rules)),
		ObservedGeneration: obj.Generation,
	}
	if len(problems) > 0 {
		cond.Status = metav1.ConditionFalse
		cond.Reason = ReasonInvalidEntries
		var msgs []string
		for _, p := range problems {
			if p.Entry == "" && cond.Reason == ReasonInvalidEntries {
				// An object-level problem voids every entry: it is the reason.
				cond.Reason = objectReason(p.Err)
			}
			msgs = append(msgs, problemText(p))
		}
		prefix := fmt.Sprintf("%d of %d entries in force", len(rules), len(obj.Spec.Metrics))
		if cond.Reason != ReasonInvalidEntries {
			prefix = "nothing granted"
		}
		cond.Message = clipMessage(prefix + ": " + strings.Join(msgs, "; "))
	}
	out := MetricAccessStatus{
		ObservedGeneration: obj.Generation,
		ValidatedMetrics:   len(rules),
		Conditions:         current.DeepCopy().Conditions,
	}
	meta.SetStatusCondition(&out.Conditions, cond)
	return out
}

func invalidStatus(generation int64, current MetricAccessStatus, err error) MetricAccessStatus {
	out := MetricAccessStatus{ObservedGeneration: generation, Conditions: current.DeepCopy().Conditions}
	meta.SetStatusCondition(&out.Conditions, metav1.Condition{
		Type:               ConditionReady,
		Status:             metav1.ConditionFalse,
		Reason:             ReasonInvalidObject,
		Message:            clipMessage("nothing granted: " + err.Error()),
		ObservedGeneration: generation,
	})
	return out
}

func objectReason(err error) string {
	switch {
	case errors.Is(err, ErrCrossNamespaceSource):
		return ReasonCrossNamespaceSource
	case errors.Is(err, ErrMissingSource):
		return ReasonMissingSource
	case errors.Is(err, ErrInvalidLabelSelector):
		return ReasonInvalidLabelSelector
	}
	return ReasonInvalidObject
}

// problemText is a problem without the object's name, which the status
// belongs to anyway.
func problemText(p Problem) string {
	if p.Entry != "" {
		return fmt.Sprintf("entry %q: %s", p.Entry, p.Reason)
	}
	return p.Reason
}

func clipMessage(s string) string {
	if len(s) <= maxConditionMessage {
		return s
	}
	cut := maxConditionMessage
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
