package discovery

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
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

// Validate checks the section without connecting to a cluster, so that a
// bad key fails when the configuration is loaded.
func (c KubernetesConfig) Validate() error {
	_, err := c.settings()
	return err
}

func (c KubernetesConfig) settings() (kubeSettings, error) {
	var s kubeSettings
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("discovery.kubernetes"+c.where()+"."+format, args...))
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

// groups turns the objects into groups, sorted by name, replicas sorted by
// URL, so equal clusters give equal lists.
func (k *Kubernetes) groups(o kubeObjects) []*Group {
	var out []*Group
	serviceGroups := map[string]bool{}
	if k.s.services {
		slicesByService := map[string][]*discoveryv1.EndpointSlice{}
		for _, sl := range o.slices {
			if svc := sl.Labels[discoveryv1.LabelServiceName]; svc != "" {
				key := sl.Namespace + "/" + svc
				slicesByService[key] = append(slicesByService[key], sl)
			}
		}
		for _, svc := range o.services {
			if !k.annotationsMatch(svc.Annotations) {
				continue
			}
			g, reason := k.serviceGroup(svc, slicesByService[svc.Namespace+"/"+svc.Name])
			if g == nil {
				k.logger.Debug("service skipped", "service", svc.Namespace+"/"+svc.Name, "reason", reason)
				continue
			}
			serviceGroups[svc.Namespace+"/"+svc.Name] = true
			out = append(out, g)
		}
	}
	if k.s.slices {
		out = append(out, k.sliceGroups(o, serviceGroups)...)
	}
	if k.s.pods {
		out = append(out, k.podGroups(o.pods)...)
	}
	for _, g := range out {
		slices.SortFunc(g.Replicas, func(a, b *Replica) int { return cmp.Compare(a.URL, b.URL) })
		g.Replicas = slices.CompactFunc(g.Replicas, func(a, b *Replica) bool { return a.URL == b.URL })
		k.decorate(g)
	}
	slices.SortFunc(out, func(a, b *Group) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// decorate gives a group what its cluster entry says of all its groups:
// the entry's name (group names stay unique across clusters), labels, HTTP
// client settings and, through the API server, its transport.
func (k *Kubernetes) decorate(g *Group) {
	if k.s.name != "" {
		g.Name = k.s.name + "/" + g.Name
		g.Source = "kubernetes " + k.s.name + ": " + strings.TrimPrefix(g.Source, "kubernetes ")
	}
	if !k.s.labels.IsEmpty() {
		b := labels.NewBuilder(g.Labels)
		k.s.labels.Range(func(l labels.Label) { b.Set(l.Name, l.Value) })
		g.Labels = b.Labels()
	}
	g.HTTPClient = k.s.httpClient
	if k.s.access == AccessAPIServer {
		g.Transport = k.apiTransport
	}
}

// proxyURL is a backend reached through the API server: kind is "services"
// or "pods", port a port name or number.
func (k *Kubernetes) proxyURL(kind, ns, name, port string) string {
	target := name + ":" + port
	if k.s.scheme == "https" {
		target = "https:" + target
	}
	return k.apiHost + "/api/v1/namespaces/" + url.PathEscape(ns) + "/" + kind + "/" + url.PathEscape(target) + "/proxy" + k.s.pathPrefix
}

func (k *Kubernetes) annotationsMatch(have map[string]string) bool {
	for key, want := range k.s.annotations {
		if v, ok := have[key]; !ok || v != want {
			return false
		}
	}
	return true
}

func (k *Kubernetes) url(host string, port int32) string {
	return k.s.scheme + "://" + net.JoinHostPort(host, strconv.Itoa(int(port))) + k.s.pathPrefix
}

// serviceGroup makes one group of a Service: its ready endpoints, or its
// externalName. A Service with no ready endpoint is still a group (with no
// replica), so queries warn that its data is missing instead of silently
// leaving it out. nil and the reason when the Service lacks the port.
func (k *Kubernetes) serviceGroup(svc *corev1.Service, eps []*discoveryv1.EndpointSlice) (*Group, string) {
	key := svc.Namespace + "/" + svc.Name
	g := &Group{
		Name:   "service/" + key,
		Source: "kubernetes service " + key,
		Labels: labels.FromStrings(LabelNamespace, svc.Namespace, LabelServiceName, svc.Name),
	}
	sp := k.servicePort(svc)
	switch k.s.access {
	case AccessAPIServer:
		if sp == nil {
			return nil, "service has no port " + k.portString()
		}
		if svc.Spec.Type == corev1.ServiceTypeExternalName {
			return nil, "the API server does not proxy to ExternalName services"
		}
		// The API server picks one ready endpoint per request.
		g.Replicas = []*Replica{newReplica(k.proxyURL("services", svc.Namespace, svc.Name, cmp.Or(sp.Name, strconv.Itoa(int(sp.Port)))))}
		return g, ""
	case AccessLoadBalancer:
		if sp == nil {
			return nil, "service has no port " + k.portString()
		}
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			if host := cmp.Or(ing.IP, ing.Hostname); host != "" {
				g.Replicas = append(g.Replicas, newReplica(k.url(host, sp.Port)))
			}
		}
		return g, ""
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		port := k.s.portNumber
		if sp != nil {
			port = sp.Port
		}
		if port == 0 {
			return nil, fmt.Sprintf("ExternalName service has no port named %q", k.s.portName)
		}
		if svc.Spec.ExternalName == "" {
			return nil, "ExternalName service without externalName"
		}
		g.Replicas = []*Replica{newReplica(k.url(svc.Spec.ExternalName, port))}
		return g, ""
	}
	if sp == nil {
		return nil, "service has no port " + k.portString()
	}
	for _, sl := range eps {
		port, ok := slicePort(sl, sp.Name)
		if !ok {
			continue
		}
		for _, host := range readyAddresses(sl) {
			g.Replicas = append(g.Replicas, newReplica(k.url(host, port)))
		}
	}
	return g, ""
}

func (k *Kubernetes) portString() string {
	if k.s.portName != "" {
		return strconv.Quote(k.s.portName)
	}
	return strconv.Itoa(int(k.s.portNumber))
}

// servicePort is the Service port the configured port names: by number or
// by name.
func (k *Kubernetes) servicePort(svc *corev1.Service) *corev1.ServicePort {
	for i, sp := range svc.Spec.Ports {
		if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
			continue
		}
		if (k.s.portName != "" && sp.Name == k.s.portName) || (k.s.portNumber != 0 && sp.Port == k.s.portNumber) {
			return &svc.Spec.Ports[i]
		}
	}
	return nil
}

// slicePort finds the endpoint port of a slice by name; a slice's ports carry
// the names of the Service's ports.
func slicePort(sl *discoveryv1.EndpointSlice, name string) (int32, bool) {
	for _, p := range sl.Ports {
		if p.Port == nil || (p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP) {
			continue
		}
		if (p.Name == nil && name == "") || (p.Name != nil && *p.Name == name) {
			return *p.Port, true
		}
	}
	return 0, false
}

// readyAddresses lists the addresses of the slice's ready endpoints. An
// endpoint without a ready condition counts as ready, as the API defines.
func readyAddresses(sl *discoveryv1.EndpointSlice) []string {
	var out []string
	for _, ep := range sl.Endpoints {
		if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
			continue
		}
		out = append(out, ep.Addresses...)
	}
	return out
}

// sliceGroups makes one group per Service named by the slices'
// kubernetes.io/service-name label (one per slice without it), leaving out
// Services that already are a group of their own.
func (k *Kubernetes) sliceGroups(o kubeObjects, serviceGroups map[string]bool) []*Group {
	byKey := map[string]*Group{}
	var order []string
	for _, sl := range o.slices {
		if o.slicesUnfiltered && !k.s.selector.Matches(k8slabels.Set(sl.Labels)) {
			continue
		}
		if !k.annotationsMatch(sl.Annotations) {
			continue
		}
		svc := sl.Labels[discoveryv1.LabelServiceName]
		if svc != "" && serviceGroups[sl.Namespace+"/"+svc] {
			continue
		}
		var key string
		lbls := []string{LabelNamespace, sl.Namespace}
		if svc != "" {
			key = sl.Namespace + "/" + svc
			lbls = append(lbls, LabelServiceName, svc)
		} else {
			key = sl.Namespace + "/" + sl.Name
			lbls = append(lbls, LabelEndpointSlice, sl.Name)
		}
		g := byKey[key]
		if g == nil {
			g = &Group{Name: "endpointslice/" + key, Source: "kubernetes endpointslices " + key, Labels: labels.FromStrings(lbls...)}
			byKey[key] = g
			order = append(order, key)
		}
		port := k.s.portNumber
		if k.s.portName != "" {
			var ok bool
			if port, ok = slicePort(sl, k.s.portName); !ok {
				k.logger.Debug("endpointslice skipped", "endpointslice", sl.Namespace+"/"+sl.Name, "reason", "no port "+k.portString())
				continue
			}
		}
		for _, host := range readyAddresses(sl) {
			g.Replicas = append(g.Replicas, newReplica(k.url(host, port)))
		}
	}
	out := make([]*Group, 0, len(order))
	for _, key := range order {
		out = append(out, byKey[key])
	}
	return out
}

// podGroups groups pods by the first group label they carry (and their
// prometheus-operator shard); a pod without any is a group of its own. Pods
// that are not Running and Ready still make their group exist, without a
// replica, so a Prometheus whose pods are all down shows up as missing data.
func (k *Kubernetes) podGroups(pods []*corev1.Pod) []*Group {
	type podGroup struct {
		g      *Group
		owners map[[2]string]bool
	}
	byName := map[string]*podGroup{}
	for _, pod := range pods {
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			continue
		}
		if !k.annotationsMatch(pod.Annotations) {
			continue
		}
		port, ok := k.podPort(pod)
		if !ok {
			k.logger.Debug("pod skipped", "pod", pod.Namespace+"/"+pod.Name, "reason", "no container port "+k.portString())
			continue
		}
		name, lbls := k.podGroupOf(pod)
		pg := byName[name]
		if pg == nil {
			pg = &podGroup{
				g:      &Group{Name: name, Source: "kubernetes " + name, Labels: labels.FromStrings(lbls...)},
				owners: map[[2]string]bool{},
			}
			byName[name] = pg
		}
		var owner [2]string
		if ref := metav1.GetControllerOf(pod); ref != nil {
			owner = [2]string{ref.Kind, ref.Name}
		}
		pg.owners[owner] = true
		if podReady(pod) {
			u := k.url(pod.Status.PodIP, port)
			if k.s.access == AccessAPIServer {
				u = k.proxyURL("pods", pod.Namespace, pod.Name, strconv.Itoa(int(port)))
			}
			pg.g.Replicas = append(pg.g.Replicas, newReplica(u))
		}
	}
	out := make([]*Group, 0, len(byName))
	for _, pg := range byName {
		// The owner is a label only when every pod of the group agrees.
		if len(pg.owners) == 1 {
			for owner := range maps.Keys(pg.owners) {
				if owner[0] != "" {
					b := labels.NewBuilder(pg.g.Labels)
					b.Set(LabelControllerKind, owner[0]).Set(LabelControllerName, owner[1])
					pg.g.Labels = b.Labels()
				}
			}
		}
		out = append(out, pg.g)
	}
	return out
}

// podGroupOf names the group of a pod and gives its labels.
func (k *Kubernetes) podGroupOf(pod *corev1.Pod) (string, []string) {
	for _, l := range k.s.groupLabels {
		v := pod.Labels[l]
		if v == "" {
			continue
		}
		name := "pods/" + pod.Namespace + "/" + l + "=" + v
		lbls := []string{LabelNamespace, pod.Namespace, LabelPodLabelPrefix + sanitizeLabelName(l), v}
		if shard := pod.Labels[operatorShardLabel]; shard != "" {
			name += "," + operatorShardLabel + "=" + shard
			lbls = append(lbls, LabelPodLabelPrefix+sanitizeLabelName(operatorShardLabel), shard)
		}
		return name, lbls
	}
	return "pod/" + pod.Namespace + "/" + pod.Name, []string{LabelNamespace, pod.Namespace, LabelPodName, pod.Name}
}

// podPort is the port by number, or the container port of that name.
func (k *Kubernetes) podPort(pod *corev1.Pod) (int32, bool) {
	if k.s.portNumber != 0 {
		return k.s.portNumber, true
	}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == k.s.portName && (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP) {
				return p.ContainerPort, true
			}
		}
	}
	return 0, false
}

// podReady: Running, Ready, not terminating, with an IP.
func podReady(pod *corev1.Pod) bool {
	if pod.Status.Phase != corev1.PodRunning || pod.DeletionTimestamp != nil || pod.Status.PodIP == "" {
		return false
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// sanitizeLabelName maps a Kubernetes label name to a Prometheus one the way
// Prometheus' own Kubernetes discovery does.
func sanitizeLabelName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			return r
		}
		return '_'
	}, s)
}

// groupsFingerprint identifies a list of groups by what a query sees of it.
func groupsFingerprint(gs []*Group) string {
	var b strings.Builder
	for _, g := range gs {
		b.WriteString(g.Name)
		b.WriteByte('\x00')
		b.WriteString(g.Labels.String())
		for _, r := range g.Replicas {
			b.WriteByte('\x00')
			b.WriteString(r.URL)
		}
		b.WriteByte('\n')
	}
	return b.String()
}
