package tenants

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/e2e/e2eproxy"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

// TestKustomizeApplyWithHPA: `kubectl apply -k deploy/kubernetes`, as an
// operator would run it, is accepted by a real API server, and what it
// creates includes the autoscaler scaling the proxy's Deployment on CPU and
// on requests in flight, never below two replicas.
func TestKustomizeApplyWithHPA(t *testing.T) {
	kubectl := e2eutil.KubectlBinary(t)
	kube := e2eutil.StartKube(t)
	kubeconfig := kube.WriteKubeconfig(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, kubectl, "--kubeconfig", kubeconfig, "apply", "--server-side", "-k", deployDir(t)).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl apply -k deploy/kubernetes: %v\n%s", err, out)
	}
	t.Logf("kubectl apply -k:\n%s", out)

	dyn := dynamic.NewForConfigOrDie(kube.RESTConfig(t))
	hpa, err := dyn.Resource(schema.GroupVersionResource{Group: "autoscaling", Version: "v2", Resource: "horizontalpodautoscalers"}).
		Namespace(proxyNamespace).Get(ctx, "prometheus-multi-tenant-proxy", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the HPA was not created: %v", err)
	}
	if kind, _, _ := unstructured.NestedString(hpa.Object, "spec", "scaleTargetRef", "kind"); kind != "Deployment" {
		t.Errorf("scaleTargetRef kind %q", kind)
	}
	name, _, _ := unstructured.NestedString(hpa.Object, "spec", "scaleTargetRef", "name")
	if _, err := dyn.Resource(schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}).
		Namespace(proxyNamespace).Get(ctx, name, metav1.GetOptions{}); err != nil {
		t.Errorf("the HPA scales %q, which the kustomization did not create: %v", name, err)
	}
	if n, _, _ := unstructured.NestedInt64(hpa.Object, "spec", "minReplicas"); n < 2 {
		t.Errorf("minReplicas %d: one pod restarting would leave none", n)
	}
	metrics, _, _ := unstructured.NestedSlice(hpa.Object, "spec", "metrics")
	var cpu, inflight bool
	for _, m := range metrics {
		m := m.(map[string]any)
		if r, _, _ := unstructured.NestedString(m, "resource", "name"); m["type"] == "Resource" && r == "cpu" {
			cpu = true
		}
		if p, _, _ := unstructured.NestedString(m, "pods", "metric", "name"); m["type"] == "Pods" && p == "prometheus_proxy_requests_in_flight" {
			inflight = true
		}
	}
	if !cpu || !inflight {
		t.Errorf("HPA metrics %v: want CPU and the pods metric prometheus_proxy_requests_in_flight", metrics)
	}
	// The label the kustomization adds shows the object came through it.
	if l := hpa.GetLabels()["app.kubernetes.io/part-of"]; l != "prometheus-multi-tenant-proxy" {
		t.Errorf("HPA labels %v: not applied through the kustomization", hpa.GetLabels())
	}

	t.Run("ReadyOnlyOnceSynced", func(t *testing.T) { testReadyOnlyOnceSynced(t, kube, dyn) })
}

// testReadyOnlyOnceSynced: the shipped configuration, acting as the shipped
// ServiceAccount, keeps /ready false (naming discovery and the tenant
// source) while the API server cannot be reached, and true once both have
// synced, so an HPA-added or restarted pod gets no traffic before it can
// answer like the others.
func testReadyOnlyOnceSynced(t *testing.T, kube *e2eutil.Kube, dyn dynamic.Interface) {
	ctx := context.Background()
	svc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Service",
		"metadata": map[string]any{"name": "prometheus-sync", "namespace": proxyNamespace, "labels": map[string]any{"app.kubernetes.io/name": "prometheus"}},
		"spec":     map[string]any{"type": "ExternalName", "externalName": "localhost", "ports": []any{map[string]any{"name": "web", "port": int64(9090)}}},
	}}
	if _, err := dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "services"}).Namespace(proxyNamespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cm, err := dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}).Namespace(proxyNamespace).Get(ctx, "prometheus-multi-tenant-proxy", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := configMapConfig(t, cm)
	if len(cfg.Discovery.Kubernetes) == 0 || !cfg.Tenants.Kubernetes {
		t.Fatal("the shipped config does not use Kubernetes discovery and tenants")
	}
	saKubeconfig := kube.WriteKubeconfig(t, e2eutil.ServiceAccountUser(proxyNamespace, proxyServiceAccount), e2eutil.ServiceAccountGroups(proxyNamespace)...)
	for i := range cfg.Discovery.Kubernetes {
		cfg.Discovery.Kubernetes[i].Kubeconfig = saKubeconfig
	}
	// Outside a pod the in-cluster configuration (token reviews) is $KUBECONFIG.
	t.Setenv("KUBECONFIG", saKubeconfig)
	cfg.Proxy.EnableRequestLogging = false
	cfg.Server.DrainDelay = 0 // the test stops it, no Service to leave

	kube.StopAPIServer()
	restarted := false
	defer func() {
		if !restarted {
			kube.StartAPIServer()
		}
	}()
	p := e2eproxy.StartProxy(t, cfg)
	probe := p.URL // probes go to the management listener when there is one
	if p.ManagementURL != "" {
		probe = p.ManagementURL
	}
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		a := e2eproxy.DoRequest(t, probe, e2eproxy.APIRequest{Path: "/ready"})
		if a.Code != http.StatusServiceUnavailable || !strings.Contains(string(a.Body), "discovery") || !strings.Contains(string(a.Body), "tenant") {
			t.Fatalf("/ready with the API server down: HTTP %d %s; want 503 naming discovery and the tenant source", a.Code, a.Body)
		}
	}
	kube.StartAPIServer()
	restarted = true
	e2eutil.Eventually(t, 30*time.Second, "ready once synced", func() error {
		if a := e2eproxy.DoRequest(t, probe, e2eproxy.APIRequest{Path: "/ready"}); a.Code != http.StatusOK {
			return fmt.Errorf("/ready: HTTP %d %s", a.Code, a.Body)
		}
		return nil
	})
}
