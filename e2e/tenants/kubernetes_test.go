package tenants

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	config_util "github.com/prometheus/common/config"
	"go.yaml.in/yaml/v3"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/cmd/proxy/app"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/discovery"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/e2e/e2eproxy"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// The proxy's ServiceAccount, as deploy/kubernetes creates it.
const (
	proxyNamespace      = "monitoring"
	proxyServiceAccount = "prometheus-multi-tenant-proxy"
)

// kubeWorld is a real API server holding deploy/kubernetes, and clients of it.
type kubeWorld struct {
	kube *e2eutil.Kube
	// proxyKubeconfig acts as the proxy's ServiceAccount: RBAC decides.
	proxyKubeconfig string
	admin           kubernetes.Interface
	dyn             dynamic.Interface
}

// TestKubernetes runs the proxy against a real kube-apiserver: the shipped
// manifests are accepted and grant enough (and no more), backends found in
// Pods, ExternalName Services and EndpointSlices answer exactly like the
// reference, and MetricAccess objects drive tenancy and get their status.
func TestKubernetes(t *testing.T) {
	kube := e2eutil.StartKube(t)
	w := &kubeWorld{kube: kube}
	rc := kube.RESTConfig(t)
	w.admin = kubernetes.NewForConfigOrDie(rc)
	w.dyn = dynamic.NewForConfigOrDie(rc)
	w.proxyKubeconfig = kube.WriteKubeconfig(t, e2eutil.ServiceAccountUser(proxyNamespace, proxyServiceAccount), e2eutil.ServiceAccountGroups(proxyNamespace)...)

	t.Run("ManifestsAccepted", func(t *testing.T) { testManifestsAccepted(t, w) })
	if t.Failed() {
		t.FailNow() // everything below needs the CRD and the RBAC
	}
	f := e2eproxy.StartFleet(t)
	t.Run("DiscoveryPodsAndExternalName", func(t *testing.T) { testDiscoveryPods(t, w, f) })
	t.Run("DiscoveryEndpointSlices", func(t *testing.T) { testDiscoveryEndpointSlices(t, w, f) })
	t.Run("MetricAccessObjects", func(t *testing.T) { testMetricAccessObjects(t, w, f) })
	t.Run("KubectlApplyKustomize", func(t *testing.T) { testKubectlApply(t, w) })
	t.Run("KubernetesAuth", func(t *testing.T) { testKubernetesAuth(t, w, f) })
	t.Run("TenancyUnderKubernetesAuth", func(t *testing.T) { testTenancyKubernetesAuth(t, w, f) })
}

func deployDir(t testing.TB) string {
	return filepath.Join(e2eutil.RepoRoot(t), "deploy", "kubernetes")
}

// testManifestsAccepted applies every manifest of deploy/kubernetes for real
// (in the kustomization's order, which must name every file), checks what
// the deployment promises, and that the ServiceAccount may do what the proxy
// needs and nothing more.
func testManifestsAccepted(t *testing.T, w *kubeWorld) {
	dir := deployDir(t)
	var kust struct {
		Resources []string `yaml:"resources"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &kust); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var onDisk []string
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" {
			onDisk = append(onDisk, base)
		}
	}
	if listed := slices.Sorted(slices.Values(kust.Resources)); !slices.Equal(listed, onDisk) {
		t.Errorf("kustomization.yaml lists %v, the directory holds %v", listed, onDisk)
	}
	var paths []string
	for _, r := range kust.Resources {
		paths = append(paths, filepath.Join(dir, r))
	}
	objs := w.kube.ApplyFiles(t, paths...)
	kinds := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		kinds[o.GetKind()+"/"+o.GetName()] = o
	}
	for _, want := range []string{"CustomResourceDefinition/metricaccesses.observability.ethos.io", "ClusterRole/prometheus-multi-tenant-proxy",
		"ClusterRoleBinding/prometheus-multi-tenant-proxy", "ServiceAccount/prometheus-multi-tenant-proxy", "ConfigMap/prometheus-multi-tenant-proxy",
		"Deployment/prometheus-multi-tenant-proxy", "Service/prometheus-multi-tenant-proxy", "PodDisruptionBudget/prometheus-multi-tenant-proxy",
		"NetworkPolicy/prometheus-multi-tenant-proxy"} {
		if kinds[want] == nil {
			t.Errorf("deploy/kubernetes has no %s", want)
		}
	}
	// The example Service for a Prometheus outside the cluster is accepted too.
	w.kube.ApplyFiles(t, filepath.Join(e2eutil.RepoRoot(t), "examples", "kubernetes", "external-prometheus.yaml"))

	t.Run("Deployment", func(t *testing.T) {
		d := kinds["Deployment/prometheus-multi-tenant-proxy"]
		if d == nil {
			t.Fatal("deploy/kubernetes has no Deployment prometheus-multi-tenant-proxy")
		}
		if n, _, _ := unstructured.NestedInt64(d.Object, "spec", "replicas"); n != 2 {
			t.Errorf("replicas %d, want 2", n)
		}
		containers, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
		if len(containers) != 1 {
			t.Fatalf("%d containers, want 1", len(containers))
		}
		c := containers[0].(map[string]any)
		for path, want := range map[string]any{
			"livenessProbe.httpGet.path":               "/health",
			"readinessProbe.httpGet.path":              "/ready",
			"livenessProbe.httpGet.port":               "management",
			"readinessProbe.httpGet.port":              "management",
			"securityContext.readOnlyRootFilesystem":   true,
			"securityContext.runAsNonRoot":             true,
			"securityContext.allowPrivilegeEscalation": false,
		} {
			got, _, _ := unstructured.NestedFieldNoCopy(c, strings.Split(path, ".")...)
			if got != want {
				t.Errorf("container %s = %v, want %v", path, got, want)
			}
		}
		for _, r := range []string{"requests.cpu", "requests.memory", "limits.memory"} {
			if v, _, _ := unstructured.NestedString(c, append([]string{"resources"}, strings.Split(r, ".")...)...); v == "" {
				t.Errorf("container has no resources.%s", r)
			}
		}
		if sa, _, _ := unstructured.NestedString(d.Object, "spec", "template", "spec", "serviceAccountName"); sa != proxyServiceAccount {
			t.Errorf("serviceAccountName %q", sa)
		}
	})

	t.Run("ConfigMapConfigLoads", func(t *testing.T) {
		cm := kinds["ConfigMap/prometheus-multi-tenant-proxy"]
		if cm == nil {
			t.Fatal("deploy/kubernetes has no ConfigMap prometheus-multi-tenant-proxy")
		}
		cfg := configMapConfig(t, cm)
		if len(cfg.Discovery.Kubernetes) == 0 || !cfg.Tenants.Kubernetes {
			t.Errorf("the ConfigMap's config does not use Kubernetes: discovery %+v tenants.kubernetes %v", cfg.Discovery.Kubernetes, cfg.Tenants.Kubernetes)
		}
		if _, err := app.LoadConfig(filepath.Join(e2eutil.RepoRoot(t), "examples", "kubernetes", "config.yaml")); err != nil {
			t.Errorf("examples/kubernetes/config.yaml: %v", err)
		}
	})

	t.Run("LeastPrivilege", func(t *testing.T) {
		rc, err := clientcmd.BuildConfigFromFlags("", w.proxyKubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		sa := kubernetes.NewForConfigOrDie(rc)
		for _, c := range []struct {
			group, resource, sub, verb, ns string
			allowed                        bool
		}{
			{"", "pods", "", "list", "prom", true},
			{"", "pods", "", "watch", "", true},
			{"", "services", "", "watch", "prom", true},
			{"discovery.k8s.io", "endpointslices", "", "list", "", true},
			{"observability.ethos.io", "metricaccesses", "", "watch", "team-a", true},
			{"observability.ethos.io", "metricaccesses", "status", "update", "team-a", true},
			{"observability.ethos.io", "metricaccesses", "", "create", "team-a", false},
			{"observability.ethos.io", "metricaccesses", "", "update", "team-a", false},
			{"observability.ethos.io", "metricaccesses", "", "delete", "team-a", false},
			{"", "pods", "", "delete", "prom", false},
			{"", "pods", "exec", "create", "prom", false},
			{"", "secrets", "", "get", proxyNamespace, false},
			{"", "secrets", "", "list", "", false},
			{"", "configmaps", "", "get", proxyNamespace, false},
			{"", "services", "", "create", "prom", false},
			{"authentication.k8s.io", "tokenreviews", "", "create", "", true},
			{"authorization.k8s.io", "subjectaccessreviews", "", "create", "", true},
			{"authorization.k8s.io", "localsubjectaccessreviews", "", "create", "team-a", false},
			{"", "serviceaccounts", "token", "create", "team-a", false},
		} {
			review, err := sa.AuthorizationV1().SelfSubjectAccessReviews().Create(context.Background(), &authorizationv1.SelfSubjectAccessReview{
				Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
					Group: c.group, Resource: c.resource, Subresource: c.sub, Verb: c.verb, Namespace: c.ns,
				}},
			}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if review.Status.Allowed != c.allowed {
				t.Errorf("%s %s/%s %s in %q: allowed=%v, want %v", c.verb, c.group, c.resource, c.sub, c.ns, review.Status.Allowed, c.allowed)
			}
		}
	})
}

func (w *kubeWorld) namespace(t testing.TB, name string) {
	t.Helper()
	_, err := w.admin.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("namespace %s: %v", name, err)
	}
}

// prometheusPod creates a Pod standing for a test Prometheus: no kubelet
// runs, so the test writes its status itself, with podIP 127.0.0.1 and the
// server's port as the container port named "web".
func (w *kubeWorld) prometheusPod(t testing.TB, ns, name string, lbls map[string]string, p *e2eutil.Prometheus) *corev1.Pod {
	t.Helper()
	_, port, _ := net.SplitHostPort(p.Addr)
	n, _ := strconv.Atoi(port)
	pod, err := w.admin.CoreV1().Pods(ns).Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "prometheus", Image: "quay.io/prometheus/prometheus",
			Ports: []corev1.ContainerPort{{Name: "web", ContainerPort: int32(n)}},
		}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("pod %s/%s: %v", ns, name, err)
	}
	return w.setPodReady(t, pod, true)
}

func (w *kubeWorld) setPodReady(t testing.TB, pod *corev1.Pod, ready bool) *corev1.Pod {
	t.Helper()
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	pod.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: "127.0.0.1", PodIPs: []corev1.PodIP{{IP: "127.0.0.1"}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}},
	}
	pod, err := w.admin.CoreV1().Pods(pod.Namespace).UpdateStatus(context.Background(), pod, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("pod status: %v", err)
	}
	return pod
}

func kubeProxyConfig(w *kubeWorld, k discovery.KubernetesConfig) app.Config {
	cfg := app.DefaultConfig()
	cfg.Proxy.EnableRequestLogging = false
	k.Kubeconfig = w.proxyKubeconfig
	cfg.Discovery.Kubernetes = discovery.KubernetesClusters{k}
	return cfg
}

// testDiscoveryPods: Prometheus pods grouped by the prometheus-operator
// label (an HA pair of shard 0, one pod for shard 1) and shard 2 behind an
// ExternalName Service answer like the reference; readiness and deletions
// are followed within seconds.
func testDiscoveryPods(t *testing.T, w *kubeWorld, f *e2eproxy.Fleet) {
	const ns = "prom-pods"
	w.namespace(t, ns)
	// The HA partner of shard 0: another server holding the same data.
	partner := e2eutil.StartPrometheus(t, e2eutil.V3, e2eproxy.OpenMetrics(t, f.Data, 0, nil), e2eutil.WithName(f.Data.Clusters[0]+"-replica"))
	sel := map[string]string{"app.kubernetes.io/name": "prometheus"}
	with := func(k, v string) map[string]string {
		m := map[string]string{k: v}
		for a, b := range sel {
			m[a] = b
		}
		return m
	}
	a0 := w.prometheusPod(t, ns, "prometheus-a-0", with("prometheus", "a"), f.Shards[0])
	w.prometheusPod(t, ns, "prometheus-a-1", with("prometheus", "a"), partner)
	b0 := w.prometheusPod(t, ns, "prometheus-b-0", with("prometheus", "b"), f.Shards[1])
	// Not selected: its data would double shard 1's.
	w.prometheusPod(t, ns, "stray", map[string]string{"prometheus": "b"}, f.Shards[1])
	_, port, _ := net.SplitHostPort(f.Shards[2].Addr)
	n, _ := strconv.Atoi(port)
	if _, err := w.admin.CoreV1().Services(ns).Create(context.Background(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "prometheus-c", Labels: sel},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "localhost",
			Ports: []corev1.ServicePort{{Name: "web", Port: int32(n)}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	p := e2eproxy.StartProxy(t, kubeProxyConfig(w, discovery.KubernetesConfig{
		Namespaces:     []string{ns},
		LabelSelectors: sel,
		Port:           "web",
		ResourceTypes:  []string{"Pod", "Service"},
	}))
	groupA, groupB, groupC := "pods/"+ns+"/prometheus=a", "pods/"+ns+"/prometheus=b", "service/"+ns+"/prometheus-c"
	e2eproxy.WaitGroups(t, p, "discovered", map[string][]string{
		groupA: {f.Shards[0].URL, partner.URL},
		groupB: {f.Shards[1].URL},
		groupC: {"http://localhost:" + port},
	})
	if a := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: "/ready"}); a.Code != http.StatusOK {
		t.Errorf("/ready: %d %s", a.Code, a.Body)
	}
	e2eproxy.RunSuite(t, f.Reference.URL, p.URL, e2eproxy.SuiteRequests(f.Data), nil)

	// One replica of the pair not ready: its partner answers alone.
	w.setPodReady(t, a0, false)
	e2eproxy.WaitGroups(t, p, "replica not ready", map[string][]string{
		groupA: {partner.URL},
		groupB: {f.Shards[1].URL},
		groupC: {"http://localhost:" + port},
	})
	queries := queryRequests(f, 12)
	e2eproxy.RunSuite(t, f.Reference.URL, p.URL, queries, nil)

	// Shard 1's only pod deleted: its group goes, and its data with it.
	if err := w.admin.CoreV1().Pods(ns).Delete(context.Background(), b0.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e2eproxy.WaitGroups(t, p, "pod deleted", map[string][]string{
		groupA: {partner.URL},
		groupC: {"http://localhost:" + port},
	})
	countUp := e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {"count(up)"}, "time": {e2eproxy.FormatTime(f.Data.Start.Add(time.Hour))}}}
	if d := e2eproxy.DiffAnswers(t, e2eproxy.DoRequest(t, f.Reference.URL, countUp), e2eproxy.DoRequest(t, p.URL, countUp)); d == "" {
		t.Error("count(up) still equals the reference after shard 1's pod was deleted")
	}
	if err := w.admin.CoreV1().Services(ns).Delete(context.Background(), "prometheus-c", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e2eproxy.WaitGroups(t, p, "service deleted", map[string][]string{groupA: {partner.URL}})
}

// queryRequests is the first n PromQL expressions of the suite, as instant
// queries: enough to tell whether every shard answers.
func queryRequests(f *e2eproxy.Fleet, n int) []e2eproxy.APIRequest {
	at := e2eproxy.FormatTime(f.Data.Start.Add(time.Hour))
	var reqs []e2eproxy.APIRequest
	for _, e := range e2eproxy.SuiteExprs[:min(n, len(e2eproxy.SuiteExprs))] {
		reqs = append(reqs, e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {e2eproxy.ExpandExpr(e, f.Data)}, "time": {at}}})
	}
	return reqs
}

// redirectingProxy is an HTTP forward proxy for the proxy under test: it
// dials the local server mapped to each non-loopback address and refuses any
// other, so no test traffic ever leaves the machine. Loopback addresses pass.
type redirectingProxy struct {
	URL      string
	to       map[string]string // host:port → 127.0.0.1:port
	seen     sync.Map          // host:port asked for → *atomic.Int64
	refusals atomic.Int64
}

func startRedirectingProxy(t testing.TB, to map[string]string) *redirectingProxy {
	t.Helper()
	rp := &redirectingProxy{to: to}
	var dialer net.Dialer
	transport := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			target, ok := rp.to[addr]
			if !ok {
				host, _, _ := net.SplitHostPort(addr)
				if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
					rp.refusals.Add(1)
					return nil, fmt.Errorf("test proxy: %s is not redirected to a local server", addr)
				}
				target = addr
			}
			n, _ := rp.seen.LoadOrStore(addr, new(atomic.Int64))
			n.(*atomic.Int64).Add(1)
			return dialer.DialContext(ctx, network, target)
		},
	}
	rev := &httputil.ReverseProxy{
		// Requests to a forward proxy carry the absolute URL already.
		Rewrite:       func(pr *httputil.ProxyRequest) { pr.Out.URL = pr.In.URL },
		Transport:     transport,
		FlushInterval: -1, // remote read streams
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { e2eproxy.ForwardBuffered(w, r, rev) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Close()
		transport.CloseIdleConnections()
	})
	rp.URL = "http://" + ln.Addr().String()
	return rp
}

func (rp *redirectingProxy) count(addr string) int64 {
	if n, ok := rp.seen.Load(addr); ok {
		return n.(*atomic.Int64).Load()
	}
	return 0
}

// testDiscoveryEndpointSlices: Services whose EndpointSlices hold real
// (non-loopback) addresses, the only kind the API server accepts there. The
// proxy's connections go through a forward proxy that maps those addresses
// to the local shards.
func testDiscoveryEndpointSlices(t *testing.T, w *kubeWorld, f *e2eproxy.Fleet) {
	const ns = "prom-slices"
	w.namespace(t, ns)
	redirect := map[string]string{}
	want := map[string][]string{}
	sel := map[string]string{"app.kubernetes.io/name": "prometheus"}
	for i, shard := range f.Shards {
		svc := "shard-" + strconv.Itoa(i)
		if _, err := w.admin.CoreV1().Services(ns).Create(context.Background(), &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: svc, Labels: sel},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "web", Port: 9090}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// TEST-NET-2 addresses: reserved for documentation, never routed.
		addr := fmt.Sprintf("198.51.100.%d", i+1)
		createSlice(t, w, ns, svc, addr, 19090)
		redirect[net.JoinHostPort(addr, "19090")] = shard.Addr
		want["service/"+ns+"/"+svc] = []string{"http://" + net.JoinHostPort(addr, "19090")}
	}
	rp := startRedirectingProxy(t, redirect)
	cfg := kubeProxyConfig(w, discovery.KubernetesConfig{
		Namespaces:     []string{ns},
		LabelSelectors: sel,
		Port:           "web",
		ResourceTypes:  []string{"Service", "Endpoints"},
	})
	proxyURL, _ := url.Parse(rp.URL)
	cfg.Backend.HTTPClient.ProxyURL = config_util.URL{URL: proxyURL}
	p := e2eproxy.StartProxy(t, cfg)
	e2eproxy.WaitGroups(t, p, "discovered", want)
	e2eproxy.RunSuite(t, f.Reference.URL, p.URL, e2eproxy.SuiteRequests(f.Data), nil)
	for addr := range redirect {
		if rp.count(addr) == 0 {
			t.Errorf("no connection to %s went through the test proxy", addr)
		}
	}
	if n := rp.refusals.Load(); n > 0 {
		t.Errorf("the proxy tried %d connections to addresses no test server stands for", n)
	}

	// The slice of shard 2 goes: its Service is a group without replicas,
	// and answers say that data is missing.
	if err := w.admin.DiscoveryV1().EndpointSlices(ns).Delete(context.Background(), "shard-2-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	want["service/"+ns+"/shard-2"] = []string{}
	e2eproxy.WaitGroups(t, p, "slice deleted", want)
	a := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {"count(up)"}, "time": {e2eproxy.FormatTime(f.Data.Start.Add(time.Hour))}}})
	if a.Code != http.StatusOK || !strings.Contains(string(a.Body), "service/"+ns+"/shard-2") {
		t.Errorf("query without shard 2's endpoints: HTTP %d %s, want a warning naming the group", a.Code, e2eproxy.Clip(a.Body))
	}
	if err := w.admin.CoreV1().Services(ns).Delete(context.Background(), "shard-2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	delete(want, "service/"+ns+"/shard-2")
	e2eproxy.WaitGroups(t, p, "service deleted", want)
}

func createSlice(t testing.TB, w *kubeWorld, ns, svc, addr string, port int32) {
	t.Helper()
	name, tcp, ready := "web", corev1.ProtocolTCP, true
	_, err := w.admin.DiscoveryV1().EndpointSlices(ns).Create(context.Background(), &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: svc + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &tcp}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("endpointslice for %s/%s: %v", ns, svc, err)
	}
}

// testMetricAccessObjects: the example MetricAccess objects, applied to the
// API server, make the same tenants as the files do (answers equal each
// tenant's oracle); objects created, changed and deleted take effect and get
// their status within 5 s; an API server outage keeps the last policies and
// /ready says degraded.
func testMetricAccessObjects(t *testing.T, w *kubeWorld, f *e2eproxy.Fleet) {
	for _, ns := range []string{"team-a", "team-b", "team-c", "sneaky"} {
		w.namespace(t, ns)
	}
	examples, err := filepath.Glob(filepath.Join(e2eutil.RepoRoot(t), "examples", "tenants", "*.yaml"))
	if err != nil || len(examples) == 0 {
		t.Fatalf("no examples/tenants/*.yaml: %v", err)
	}
	w.kube.ApplyFiles(t, examples...)

	cfg := e2eproxy.BaseConfig(f)
	cfg.Tenants.Kubernetes = true
	cfg.Tenants.AdminNamespaces = []string{"monitoring"}
	// Outside a cluster and without discovery.kubernetes, the proxy finds
	// its cluster through $KUBECONFIG.
	t.Setenv("KUBECONFIG", w.proxyKubeconfig)
	p := e2eproxy.StartProxy(t, cfg)

	eventually := func(what string, cond func() error) {
		t.Helper()
		e2eutil.Eventually(t, 5*time.Second, what, cond)
	}
	ready := func() error {
		if a := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: "/ready"}); a.Code != http.StatusOK {
			return fmt.Errorf("/ready: HTTP %d %s", a.Code, a.Body)
		}
		return nil
	}
	status := func(ns, name string, want metav1.ConditionStatus, reason string, validated int) func() error {
		return func() error {
			u, err := w.dyn.Resource(tenancy.GroupVersionResource).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			var obj tenancy.MetricAccess
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &obj); err != nil {
				return err
			}
			c := meta.FindStatusCondition(obj.Status.Conditions, tenancy.ConditionReady)
			switch {
			case c == nil:
				return fmt.Errorf("%s/%s has no Ready condition", ns, name)
			case c.Status != want || c.Reason != reason || obj.Status.ValidatedMetrics != validated || obj.Status.ObservedGeneration != obj.Generation:
				return fmt.Errorf("%s/%s: Ready=%s %s validated %d generation %d/%d: %s", ns, name, c.Status, c.Reason,
					obj.Status.ValidatedMetrics, obj.Status.ObservedGeneration, obj.Generation, c.Message)
			}
			return nil
		}
	}
	eventually("ready", ready)
	for _, o := range []struct{ ns, name string }{{"team-a", "http-metrics"}, {"team-b", "resource-metrics"}, {"team-c", "api-and-health"}} {
		eventually("status of "+o.ns+"/"+o.name, status(o.ns, o.name, metav1.ConditionTrue, tenancy.ReasonValid, 2))
	}

	attacks := e2eproxy.AttackRequests(f)
	for _, ns := range []string{"team-a", "team-b", "team-c"} {
		t.Run(ns, func(t *testing.T) {
			oracle := e2eproxy.OracleFor(t, f, ns, e2eproxy.PolicyOf(t, p, ns))
			if ns == "team-c" {
				// One whole suite; the files test covers the others as well.
				e2eproxy.RunSuiteMinData(t, oracle.URL, p.URL, e2eproxy.SuiteRequests(f.Data), e2eproxy.TenantHeader(ns), 40)
			}
			for _, r := range attacks {
				want := e2eproxy.DoRequest(t, oracle.URL, r)
				r.Header = e2eproxy.TenantHeader(ns)
				e2eproxy.CompareAnswers(t, "attack "+r.String(), want, e2eproxy.DoRequest(t, p.URL, r))
			}
		})
	}

	at := e2eproxy.FormatTime(f.Data.Start.Add(time.Hour))
	count := func(ns, expr string) (int, string) { return resultCount(t, p, ns, expr, at) }
	sees := func(ns, expr string, want bool) func() error {
		return func() error {
			n, body := count(ns, expr)
			if (n > 0) != want {
				return fmt.Errorf("%s, %s: %s", ns, expr, e2eproxy.Clip([]byte(body)))
			}
			return nil
		}
	}
	apply := func(doc string) { w.kube.Apply(t, []byte(doc)) }

	if n, body := count("team-a", "memory_usage_bytes"); n != 0 {
		t.Fatalf("team-a sees memory_usage_bytes before any grant: %s", body)
	}
	apply(`apiVersion: observability.ethos.io/v1alpha1
kind: MetricAccess
metadata: {name: extra, namespace: team-a}
spec:
  source: team-a
  metrics: [memory_usage_bytes]
`)
	eventually("created object grants", sees("team-a", "memory_usage_bytes", true))
	eventually("created object status", status("team-a", "extra", metav1.ConditionTrue, tenancy.ReasonValid, 1))

	apply(`apiVersion: observability.ethos.io/v1alpha1
kind: MetricAccess
metadata: {name: extra, namespace: team-a}
spec:
  source: team-a
  metrics: ['temperature_.*', 'memory_(']
`)
	eventually("updated object grants the new entry", sees("team-a", "temperature_celsius", true))
	eventually("updated object no longer grants the old one", sees("team-a", "memory_usage_bytes", false))
	eventually("invalid entry in status", status("team-a", "extra", metav1.ConditionFalse, tenancy.ReasonInvalidEntries, 1))

	apply(`apiVersion: observability.ethos.io/v1alpha1
kind: MetricAccess
metadata: {name: steal, namespace: sneaky}
spec:
  source: team-b
  metrics: [memory_usage_bytes]
`)
	eventually("cross-namespace object refused in status", status("sneaky", "steal", metav1.ConditionFalse, tenancy.ReasonCrossNamespaceSource, 0))
	if n, body := count("sneaky", "memory_usage_bytes"); n != -http.StatusForbidden {
		t.Errorf("cross-namespace source: got %d %s, want 403", n, body)
	}

	if err := w.dyn.Resource(tenancy.GroupVersionResource).Namespace("team-a").Delete(context.Background(), "extra", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("deleted object revoked", sees("team-a", "temperature_celsius", false))
	if err := w.dyn.Resource(tenancy.GroupVersionResource).Namespace("team-b").Delete(context.Background(), "resource-metrics", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("namespace without objects refused", func() error {
		if n, body := count("team-b", "up"); n != -http.StatusForbidden {
			return fmt.Errorf("team-b: %d %s", n, e2eproxy.Clip([]byte(body)))
		}
		return nil
	})

	t.Run("APIServerOutage", func(t *testing.T) {
		w.kube.StopAPIServer()
		restarted := false
		defer func() {
			if !restarted {
				w.kube.StartAPIServer()
			}
		}()
		start := time.Now()
		for {
			a := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: "/ready"})
			if strings.Contains(string(a.Body), "degraded") {
				t.Logf("/ready after %v: HTTP %d %s", time.Since(start).Round(time.Millisecond), a.Code, a.Body)
				break
			}
			if time.Since(start) > 15*time.Second {
				t.Fatalf("/ready does not say degraded 15 s into the outage: HTTP %d %s", a.Code, a.Body)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// The last policies stay in force.
		if err := sees("team-a", "http_requests_total", true)(); err != nil {
			t.Errorf("during the outage: %v", err)
		}
		if err := sees("team-a", "memory_usage_bytes", false)(); err != nil {
			t.Errorf("during the outage: %v", err)
		}
		w.kube.StartAPIServer()
		restarted = true
		start = time.Now()
		for ready() != nil || strings.Contains(string(e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: "/ready"}).Body), "degraded") {
			if time.Since(start) > 15*time.Second {
				t.Fatalf("not ready 15 s after the API server came back: %v", ready())
			}
			time.Sleep(100 * time.Millisecond)
		}
		apply(`apiVersion: observability.ethos.io/v1alpha1
kind: MetricAccess
metadata: {name: after-outage, namespace: team-b}
spec:
  source: team-b
  metrics: [memory_usage_bytes]
`)
		eventually("object created after the outage grants", sees("team-b", "memory_usage_bytes", true))
	})
}

// configMapConfig loads the config.yaml a ConfigMap of deploy/kubernetes
// holds, as the proxy in the pod would.
func configMapConfig(t *testing.T, cm *unstructured.Unstructured) app.Config {
	t.Helper()
	text, _, _ := unstructured.NestedString(cm.Object, "data", "config.yaml")
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := app.LoadConfig(path)
	if err != nil {
		t.Fatalf("the ConfigMap's config.yaml: %v", err)
	}
	return cfg
}
