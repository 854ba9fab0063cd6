package query

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/cmd/proxy/app"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/e2e/e2eproxy"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

// connectProxy is the HTTP CONNECT proxy a kube-apiserver's egress
// selector sends its "cluster" traffic (service, pod and node proxy)
// through. It maps the made-up pod addresses the API server dials to local
// test servers and refuses every other address, so nothing leaves the
// machine while the API server's own service proxy carries the requests.
type connectProxy struct {
	Socket  string            // unix socket (kube-apiserver's TCP egress insists on TLS client certificates)
	to      map[string]string // host:port the API server dials → 127.0.0.1:port
	mu      sync.Mutex
	tunnels map[string]int
	refused atomic.Int64
}

func startConnectProxy(t testing.TB, to map[string]string) *connectProxy {
	t.Helper()
	dir, err := os.MkdirTemp("", "egress-") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	cp := &connectProxy{to: to, tunnels: map[string]int{}, Socket: filepath.Join(dir, "s")}
	ln, err := net.Listen("unix", cp.Socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		target, ok := cp.to[r.Host]
		if r.Method != http.MethodConnect || !ok {
			cp.refused.Add(1)
			http.Error(w, "not a mapped CONNECT target: "+r.Method+" "+r.Host, http.StatusForbidden)
			return
		}
		backend, err := net.Dial("tcp", target)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		client, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			_ = backend.Close()
			return
		}
		cp.mu.Lock()
		cp.tunnels[r.Host]++
		cp.mu.Unlock()
		_, _ = client.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n"))
		go func() {
			_, _ = io.Copy(backend, buf)
			_ = backend.(*net.TCPConn).CloseWrite()
		}()
		_, _ = io.Copy(client, backend)
		_ = client.Close()
		_ = backend.Close()
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return cp
}

func (cp *connectProxy) count(addr string) int {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.tunnels[addr]
}

// TestKubernetesClusters: one proxy discovers Prometheus in two clusters
// (two real API servers). Cluster "eu" holds the HA pair as Pods (access
// direct) and shard 1 behind a LoadBalancer Service (a second entry, access
// loadbalancer); cluster "us" holds shard 2 behind a Service reached only
// through its API server's service proxy. Each entry adds a region label. Answers equal a reference
// holding the union with cluster, prometheus and region stored.
func TestKubernetesClusters(t *testing.T) {
	f := startExtFleet(t)
	promC := f.groups[2].URLs[0]
	_, portC, _ := net.SplitHostPort(strings.TrimPrefix(promC, "http://"))
	// A documentation address (RFC 5737): never routed, only mapped.
	const podIPC = "192.0.2.10"
	egress := startConnectProxy(t, map[string]string{net.JoinHostPort(podIPC, portC): "127.0.0.1:" + portC})
	egressConfig := filepath.Join(t.TempDir(), "egress.yaml")
	if err := os.WriteFile(egressConfig, []byte(`apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      uds:
        udsName: `+egress.Socket+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	eu := e2eutil.StartKube(t)
	us := e2eutil.StartKube(t, e2eutil.WithAPIServerFlags("--egress-selector-config-file="+egressConfig))
	euc := kubernetes.NewForConfigOrDie(eu.RESTConfig(t))
	usc := kubernetes.NewForConfigOrDie(us.RESTConfig(t))
	ctx := context.Background()

	sel := map[string]string{"app.kubernetes.io/name": "prometheus"}
	podLabels := map[string]string{"app.kubernetes.io/name": "prometheus", "prometheus": "k8s"}
	for _, c := range []kubernetes.Interface{euc, usc} {
		if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "monitoring"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// Cluster eu: the HA pair as two pods of one prometheus-operator
	// Prometheus, shard 1 as an ExternalName Service.
	for i, u := range f.groups[0].URLs {
		_, port, _ := net.SplitHostPort(strings.TrimPrefix(u, "http://"))
		createPod(t, euc, "monitoring", "prometheus-k8s-"+strconv.Itoa(i), podLabels, port, "127.0.0.1")
	}
	_, portB, _ := net.SplitHostPort(strings.TrimPrefix(f.groups[1].URLs[0], "http://"))
	nb, _ := strconv.Atoi(portB)
	// Shard 1 behind a LoadBalancer Service whose ingress the test writes
	// (no cloud controller runs), read by a third entry with access
	// loadbalancer.
	if _, err := euc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "edge"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	lb, err := euc.CoreV1().Services("edge").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "prometheus-b", Labels: sel},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Name: "web", Port: int32(nb)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lb.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{Hostname: "localhost"}}
	if _, err := euc.CoreV1().Services("edge").UpdateStatus(ctx, lb, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Cluster us: shard 2 behind a Service whose endpoint is a pod. The API
	// server refuses a loopback endpoint outright:
	nc, _ := strconv.Atoi(portC)
	if _, err := usc.CoreV1().Services("monitoring").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "prometheus-c", Labels: sel},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "web", Port: 9090, TargetPort: intOrString(nc)}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err = createPodSlice(usc, "monitoring", "prometheus-c", "prometheus-c-0", "127.0.0.1", int32(nc))
	if err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("an EndpointSlice with 127.0.0.1 was not refused as loopback: %v", err)
	}
	t.Logf("API server on a loopback endpoint: %v", err)
	// ... so the pod gets a made-up address, which the API server's egress
	// (the CONNECT proxy above) maps to the local server.
	createPod(t, usc, "monitoring", "prometheus-c-0", podLabels, portC, podIPC)
	if err := createPodSlice(usc, "monitoring", "prometheus-c", "prometheus-c-0", podIPC, int32(nc)); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	config := fmt.Sprintf(`discovery:
  health_check_interval: 1s
  kubernetes:
    - name: eu
      kubeconfig: %q
      namespaces: [monitoring]
      label_selectors: {app.kubernetes.io/name: prometheus}
      resource_types: [Pod, Service]
      port: web
      labels: {region: eu}
    - name: eu-edge
      kubeconfig: %q
      namespaces: [edge]
      label_selectors: {app.kubernetes.io/name: prometheus}
      resource_types: [Service]
      port: web
      access: loadbalancer
      labels: {region: eu}
    - name: us
      kubeconfig: %q
      namespaces: [monitoring]
      label_selectors: {app.kubernetes.io/name: prometheus}
      resource_types: [Service]
      port: web
      access: apiserver
      labels: {region: us}
proxy:
  enable_request_logging: false
`, eu.Kubeconfig, eu.Kubeconfig, us.Kubeconfig)
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := app.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	p := e2eproxy.StartProxy(t, cfg)
	viaAPIServer := strings.TrimRight(us.URL, "/") + "/api/v1/namespaces/monitoring/services/prometheus-c:web/proxy"
	e2eproxy.WaitGroups(t, p, "two clusters", map[string][]string{
		"eu-edge/service/edge/prometheus-b":  {"http://localhost:" + portB},
		"eu/pods/monitoring/prometheus=k8s":  {"http://127.0.0.1:" + portOf(f.groups[0].URLs[0]), "http://127.0.0.1:" + portOf(f.groups[0].URLs[1])},
		"us/service/monitoring/prometheus-c": {viaAPIServer},
	})
	waitExternalLabels(t, p)
	if a := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: "/ready"}); a.Code != http.StatusOK {
		t.Errorf("/ready: %d %s", a.Code, a.Body)
	}

	region := map[int]map[string]string{0: {"region": "eu"}, 1: {"region": "eu"}, 2: {"region": "us"}}
	reference := e2eutil.StartPrometheus(t, e2eutil.V3, relabeledOpenMetricsExtra(t, f.data, allShards(f.data), region), e2eutil.WithName("reference-two-clusters"))
	// Shipped configuration: push-down with sums re-associated.
	reqs := append(e2eproxy.SuiteRequests(f.data), extRequests(f.data)...)
	runSuiteWithin(t, reference.URL, p.URL, reqs, nil, len(reqs)/2, sumsTolerance)

	if n := egress.count(net.JoinHostPort(podIPC, portC)); n == 0 {
		t.Error("no connection went through cluster us's API server to shard 2")
	} else {
		t.Logf("%d connections from cluster us's API server service proxy to shard 2", n)
	}
	if n := egress.refused.Load(); n != 0 {
		t.Errorf("the API server tried %d unmapped addresses", n)
	}
	metrics := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: "/metrics"})
	for _, kind := range []string{"read", "series", "label_values"} {
		for backend, group := range map[string]string{viaAPIServer: "us/service/monitoring/prometheus-c", "http://localhost:" + portB: "eu-edge/service/edge/prometheus-b"} {
			if !strings.Contains(string(metrics.Body), `backend="`+backend+`",group="`+group+`",kind="`+kind+`",result="success"`) {
				t.Errorf("no successful %s call to %s in the proxy's metrics", kind, backend)
			}
		}
	}
}

func portOf(u string) string {
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(u, "http://"))
	return port
}

// createPod creates a Prometheus pod and writes its status (no kubelet
// runs): Running, Ready, with podIP ip and the container port named "web".
func createPod(t testing.TB, c kubernetes.Interface, ns, name string, lbls map[string]string, port, ip string) {
	t.Helper()
	n, _ := strconv.Atoi(port)
	pod, err := c.CoreV1().Pods(ns).Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "prometheus", Image: "quay.io/prometheus/prometheus",
			Ports: []corev1.ContainerPort{{Name: "web", ContainerPort: int32(n)}},
		}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("pod %s/%s: %v", ns, name, err)
	}
	pod.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
	}
	if _, err := c.CoreV1().Pods(ns).UpdateStatus(context.Background(), pod, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("pod status %s/%s: %v", ns, name, err)
	}
}

// createPodSlice writes the EndpointSlice of a Service with one endpoint,
// the pod at addr (the API server proxies only to endpoints that are pods).
func createPodSlice(c kubernetes.Interface, ns, svc, pod, addr string, port int32) error {
	name, tcp, ready := "web", corev1.ProtocolTCP, true
	_, err := c.DiscoveryV1().EndpointSlices(ns).Create(context.Background(), &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: svc + "-" + strings.ReplaceAll(addr, ".", "-"), Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod}}},
		Ports: []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &tcp}},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("endpointslice for %s/%s: %w", ns, svc, err)
	}
	return nil
}

func intOrString(n int) intstr.IntOrString { return intstr.FromInt32(int32(n)) }
