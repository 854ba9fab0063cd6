package discovery

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	config_util "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8slabels "k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/kubewatch"
)

// Resource types discovery.kubernetes.resource_types accepts. "Endpoints"
// is taken as EndpointSlice: the Endpoints API is deprecated and every
// cluster that serves it also serves EndpointSlices.
const (
	ResourceService       = "Service"
	ResourcePod           = "Pod"
	ResourceEndpointSlice = "EndpointSlice"
)

// Labels of Kubernetes groups. They carry Prometheus' __meta_ prefix, which
// never appears on stored series: a group label that shared its name with a
// series label (say "namespace") would make Group.Matches skip the group for
// every query about that label, tenant rules included.
const (
	LabelNamespace      = "__meta_kubernetes_namespace"
	LabelServiceName    = "__meta_kubernetes_service_name"
	LabelEndpointSlice  = "__meta_kubernetes_endpointslice_name"
	LabelPodName        = "__meta_kubernetes_pod_name"
	LabelControllerKind = "__meta_kubernetes_pod_controller_kind"
	LabelControllerName = "__meta_kubernetes_pod_controller_name"
	// LabelPodLabelPrefix precedes the (sanitised) name of the pod label a
	// pod group was formed by.
	LabelPodLabelPrefix = "__meta_kubernetes_pod_label_"
)

// Pod labels that form groups unless pod_group_label names another:
// prometheus-operator puts both on the pods of a Prometheus resource, and a
// sharded Prometheus holds different data in each shard.
const (
	operatorPrometheusLabel = "prometheus"
	instanceLabel           = "app.kubernetes.io/instance"
	operatorShardLabel      = "operator.prometheus.io/shard"
)

const (
	// DefaultKubernetesPort is Prometheus' own port.
	DefaultKubernetesPort = "9090"
	// kubeDebounce folds a burst of events (a rollout, a resync) into one update.
	kubeDebounce = 100 * time.Millisecond
)

// RESTConfig returns the client configuration for a kubeconfig file; with an
// empty path, the in-cluster configuration, or the file named by $KUBECONFIG
// when not running in a cluster.
func RESTConfig(kubeconfig string) (*rest.Config, error) {
	var (
		rc  *rest.Config
		err error
	)
	switch {
	case kubeconfig != "":
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	case os.Getenv("KUBERNETES_SERVICE_HOST") == "" && os.Getenv(clientcmd.RecommendedConfigPathEnvVar) != "":
		kubeconfig = os.Getenv(clientcmd.RecommendedConfigPathEnvVar)
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	default:
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		if kubeconfig == "" {
			return nil, fmt.Errorf("kubernetes in-cluster config (outside a cluster set discovery.kubernetes.kubeconfig or $KUBECONFIG): %w", err)
		}
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	rc.UserAgent = "prometheus-multi-tenant-proxy"
	// client-go's default (5/s) would queue status writes behind each other
	// when many MetricAccess objects change at once.
	rc.QPS, rc.Burst = 20, 40
	return rc, nil
}

// How a cluster entry's backends are reached (discovery.kubernetes[].access).
const (
	// AccessDirect: endpoint and pod IPs, or an ExternalName's host (the
	// proxy runs where they route).
	AccessDirect = "direct"
	// AccessLoadBalancer: a Service's status.loadBalancer.ingress.
	AccessLoadBalancer = "loadbalancer"
	// AccessAPIServer: through the cluster's API server service (or pod)
	// proxy with the kubeconfig's credentials; no network path to the
	// cluster's pods is needed.
	AccessAPIServer = "apiserver"
)

// Kubernetes is a Provider of groups found in a cluster: Services, Pods and
// EndpointSlices, watched through informers.
type Kubernetes struct {
	s      kubeSettings
	client kubernetes.Interface
	resync time.Duration
	logger *slog.Logger
	// apiHost and apiTransport reach the API server (access: apiserver).
	apiHost      string
	apiTransport http.RoundTripper
}

// kubeSettings is a KubernetesConfig checked and with defaults filled.
type kubeSettings struct {
	namespaces  []string // metav1.NamespaceAll alone means every namespace
	selector    k8slabels.Selector
	annotations map[string]string
	portNumber  int32 // set when port is a number
	portName    string
	services    bool
	pods        bool
	slices      bool
	scheme      string
	pathPrefix  string
	groupLabels []string // pod labels tried in order
	name        string   // the cluster entry's name, prefixed to group names
	labels      labels.Labels
	access      string
	httpClient  *config_util.HTTPClientConfig
}

// NewKubernetes connects to the cluster cfg names (in-cluster when
// cfg.Kubeconfig is empty). resync is how often the informers replay every
// object (discovery.refresh_interval); changes arrive as they happen.
func NewKubernetes(cfg KubernetesConfig, resync time.Duration, logger *slog.Logger) (*Kubernetes, error) {
	rc, err := RESTConfig(cfg.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("discovery.kubernetes%s: %w", cfg.where(), err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("discovery.kubernetes%s: %w", cfg.where(), err)
	}
	k, err := NewKubernetesWithClient(cfg, client, resync, logger)
	if err != nil {
		return nil, err
	}
	if k.s.access == AccessAPIServer {
		// The backends' calls carry the kubeconfig's credentials, like kubectl's.
		if k.apiTransport, err = rest.TransportFor(rc); err != nil {
			return nil, fmt.Errorf("discovery.kubernetes%s: API server transport: %w", cfg.where(), err)
		}
		k.apiHost = strings.TrimRight(rc.Host, "/")
		if !strings.Contains(k.apiHost, "://") {
			k.apiHost = "https://" + k.apiHost
		}
	}
	return k, nil
}

func (c KubernetesConfig) where() string {
	if c.Name == "" {
		return ""
	}
	return "[" + c.Name + "]"
}

// NewKubernetesWithClient is NewKubernetes with a client given by the caller;
// cfg.Kubeconfig is not used.
func NewKubernetesWithClient(cfg KubernetesConfig, client kubernetes.Interface, resync time.Duration, logger *slog.Logger) (*Kubernetes, error) {
	s, err := cfg.settings()
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.Default()
	}
	if resync <= 0 {
		resync = 30 * time.Second
	}
	return &Kubernetes{s: s, client: client, resync: resync, logger: logger}, nil
}

// DefaultKubernetesConfig is what an entry of discovery.kubernetes means
// for the keys it leaves out: the Services of every namespace, reached
// directly on Prometheus' port over http.
func DefaultKubernetesConfig() KubernetesConfig {
	return KubernetesConfig{
		Access:        AccessDirect,
		Port:          DefaultKubernetesPort,
		ResourceTypes: []string{ResourceService},
		Scheme:        "http",
	}
}

// UnmarshalYAML starts from DefaultKubernetesConfig, so keys left out of an
// entry keep their defaults.
func (c *KubernetesConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultKubernetesConfig()
	type plain KubernetesConfig
	return unmarshal((*plain)(c))
}

// Validate checks the entry without connecting to a cluster, so that a
// bad key fails when the configuration is loaded; it changes nothing.
// Errors name the key within the discovery section.
func (c KubernetesConfig) Validate() error {
	_, err := c.settings()
	return err
}

// settings checks the entry and derives what the watcher uses. An entry
// built in code (tests, tools) may leave port, resource_types, scheme and
// access empty; they then mean DefaultKubernetesConfig's values, as in YAML.
func (c KubernetesConfig) settings() (kubeSettings, error) {
	var s kubeSettings
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("kubernetes"+c.where()+"."+format, args...))
	}

	s.name = c.Name
	if c.Name != "" {
		if msgs := validation.IsDNS1123Subdomain(c.Name); len(msgs) > 0 {
			bad("name: %q: %s", c.Name, strings.Join(msgs, "; "))
		}
	}
	for k := range c.Labels {
		if !model.LegacyValidation.IsValidLabelName(k) || strings.HasPrefix(k, "__") {
			bad("labels: bad label name %q", k)
		}
	}
	s.labels = labels.FromMap(c.Labels)
	if c.HTTPClient != nil {
		if err := c.HTTPClient.Validate(); err != nil {
			bad("http_client: %v", err)
		}
	}
	s.httpClient = c.HTTPClient

	s.namespaces = []string{metav1.NamespaceAll}
	if len(c.Namespaces) > 0 {
		s.namespaces = nil
		for i, ns := range c.Namespaces {
			if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
				bad("namespaces[%d]: %q: %s", i, ns, strings.Join(msgs, "; "))
				continue
			}
			if !slices.Contains(s.namespaces, ns) {
				s.namespaces = append(s.namespaces, ns)
			}
		}
	}

	sel, err := k8slabels.ValidatedSelectorFromSet(c.LabelSelectors)
	if err != nil {
		bad("label_selectors: %v", err)
	}
	s.selector = sel
	for k := range c.AnnotationSelectors {
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			bad("annotation_selectors: %q: %s", k, strings.Join(msgs, "; "))
		}
	}
	s.annotations = c.AnnotationSelectors

	port := cmp.Or(c.Port, DefaultKubernetesPort)
	if n, err := strconv.ParseInt(port, 10, 32); err == nil {
		if n < 1 || n > 65535 {
			bad("port: %d is out of range", n)
		}
		s.portNumber = int32(n)
	} else if msgs := validation.IsValidPortName(port); len(msgs) > 0 {
		bad("port: %q is neither a number nor a port name: %s", port, strings.Join(msgs, "; "))
	} else {
		s.portName = port
	}

	types := c.ResourceTypes
	if len(types) == 0 {
		types = []string{ResourceService}
	}
	for i, t := range types {
		switch strings.ToLower(t) {
		case "service", "services":
			s.services = true
		case "pod", "pods":
			s.pods = true
		case "endpointslice", "endpointslices", "endpoints":
			s.slices = true
		default:
			bad("resource_types[%d]: %q is not one of %s, %s, %s (or Endpoints)", i, t, ResourceService, ResourcePod, ResourceEndpointSlice)
		}
	}

	switch s.scheme = cmp.Or(c.Scheme, "http"); s.scheme {
	case "http", "https":
	default:
		bad("scheme: %q is neither http nor https", c.Scheme)
	}
	s.pathPrefix = strings.TrimRight(c.PathPrefix, "/")
	if s.pathPrefix != "" && !strings.HasPrefix(s.pathPrefix, "/") {
		bad("path_prefix: %q must start with /", c.PathPrefix)
	}

	if c.PodGroupLabel != "" {
		if msgs := validation.IsQualifiedName(c.PodGroupLabel); len(msgs) > 0 {
			bad("pod_group_label: %q: %s", c.PodGroupLabel, strings.Join(msgs, "; "))
		}
		s.groupLabels = []string{c.PodGroupLabel}
	} else {
		s.groupLabels = []string{operatorPrometheusLabel, instanceLabel}
	}
	switch s.access = cmp.Or(c.Access, AccessDirect); s.access {
	case AccessDirect:
	case AccessLoadBalancer:
		if s.pods || s.slices {
			bad("access: %s reaches Services only; resource_types must be [Service]", AccessLoadBalancer)
		}
	case AccessAPIServer:
		if s.slices {
			bad("access: %s reaches Services and Pods; the API server has no EndpointSlice proxy", AccessAPIServer)
		}
		if c.HTTPClient != nil {
			bad("http_client: with access %s the kubeconfig's credentials are used", AccessAPIServer)
		}
	default:
		bad("access: %q is none of %s, %s, %s", c.Access, AccessDirect, AccessLoadBalancer, AccessAPIServer)
	}
	return s, errors.Join(errs...)
}

// Run watches the cluster and sends the groups once the informers have
// synced, then again on every change, until ctx ends. While the API server
// is unreachable the last groups stay: the informers keep their caches.
func (k *Kubernetes) Run(ctx context.Context, update func([]*Group)) {
	changed := make(chan struct{}, 1)
	notify := func() {
		select {
		case changed <- struct{}{}:
		default: // an update is already pending
		}
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { notify() },
		UpdateFunc: func(any, any) { notify() },
		DeleteFunc: func(any) { notify() },
	}

	var (
		factories []informers.SharedInformerFactory
		synced    []cache.InformerSynced
		watched   []*kubeListers
	)
	watch := func(inf cache.SharedIndexInformer, what, ns string) {
		// Instead of client-go's klog line, one slog line naming the resource.
		_ = inf.SetWatchErrorHandler(func(_ *cache.Reflector, err error) {
			k.logger.Warn("kubernetes watch failed; keeping the last known backends", "resource", what, "namespace", cmp.Or(ns, "*"), "err", err)
		})
		_, _ = inf.AddEventHandler(handler)
		synced = append(synced, inf.HasSynced)
	}
	for _, ns := range k.s.namespaces {
		selected := informers.NewSharedInformerFactoryWithOptions(k.client, k.resync,
			informers.WithNamespace(ns), informers.WithTransform(stripManagedFields),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = k.s.selector.String() }))
		factories = append(factories, selected)
		l := &kubeListers{}
		if k.s.services {
			inf := selected.Core().V1().Services()
			watch(inf.Informer(), "services", ns)
			l.services = inf.Lister()
		}
		if k.s.pods {
			inf := selected.Core().V1().Pods()
			watch(inf.Informer(), "pods", ns)
			l.pods = inf.Lister()
		}
		if k.s.services || k.s.slices {
			// A Service's endpoints live in slices that need not carry the
			// Service's labels, so with Services the slices are all watched
			// and label_selectors applies to EndpointSlice groups client-side.
			f := selected
			if k.s.services {
				f = informers.NewSharedInformerFactoryWithOptions(k.client, k.resync, informers.WithNamespace(ns), informers.WithTransform(stripManagedFields))
				factories = append(factories, f)
				l.slicesUnfiltered = true
			}
			inf := f.Discovery().V1().EndpointSlices()
			watch(inf.Informer(), "endpointslices", ns)
			l.slices = inf.Lister()
		}
		watched = append(watched, l)
	}
	for _, f := range factories {
		f.Start(ctx.Done())
	}
	defer func() {
		for _, f := range factories {
			f.Shutdown()
		}
	}()
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return
	}
	k.logger.Info("kubernetes discovery synced", "namespaces", kubewatch.NamespacesText(k.s.namespaces), "selector", k.s.selector.String())

	var (
		last      string
		delivered bool // the first list goes out even when empty
	)
	for {
		objs, err := listAll(watched)
		if err != nil {
			// Listers read the local cache; this is not expected to happen.
			k.logger.Error("kubernetes discovery: reading the informer cache", "err", err)
		} else {
			groups := k.groups(objs)
			if fp := groupsFingerprint(groups); fp != last || !delivered {
				last, delivered = fp, true
				k.logger.Info("kubernetes backends changed", "groups", len(groups))
				update(groups)
			}
		}
		if !kubewatch.NextChange(ctx, changed, kubeDebounce) {
			return
		}
	}
}

// stripManagedFields drops what discovery never reads and the cache would
// otherwise hold for every pod of the cluster.
func stripManagedFields(obj any) (any, error) {
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// kubeListers reads one namespace (or all) from the informers' caches.
type kubeListers struct {
	services interface {
		List(k8slabels.Selector) ([]*corev1.Service, error)
	}
	pods interface {
		List(k8slabels.Selector) ([]*corev1.Pod, error)
	}
	slices interface {
		List(k8slabels.Selector) ([]*discoveryv1.EndpointSlice, error)
	}
	slicesUnfiltered bool
}

// kubeObjects is what groups are made of.
type kubeObjects struct {
	services []*corev1.Service
	pods     []*corev1.Pod
	slices   []*discoveryv1.EndpointSlice
	// slicesUnfiltered: label_selectors was not applied to slices by the
	// API server.
	slicesUnfiltered bool
}

func listAll(ls []*kubeListers) (kubeObjects, error) {
	var o kubeObjects
	for _, l := range ls {
		if l.services != nil {
			svcs, err := l.services.List(k8slabels.Everything())
			if err != nil {
				return o, fmt.Errorf("list services: %w", err)
			}
			o.services = append(o.services, svcs...)
		}
		if l.pods != nil {
			pods, err := l.pods.List(k8slabels.Everything())
			if err != nil {
				return o, fmt.Errorf("list pods: %w", err)
			}
			o.pods = append(o.pods, pods...)
		}
		if l.slices != nil {
			sl, err := l.slices.List(k8slabels.Everything())
			if err != nil {
				return o, fmt.Errorf("list endpointslices: %w", err)
			}
			o.slices = append(o.slices, sl...)
			o.slicesUnfiltered = o.slicesUnfiltered || l.slicesUnfiltered
		}
	}
	return o, nil
}
