package discovery

import (
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
)

// TestKubernetesAccessModes: the URL each access mode gives a Service or a
// Pod, and what a cluster entry adds to its groups.
func TestKubernetesAccessModes(t *testing.T) {
	lb := &corev1.Service{}
	*lb = *externalName("mon", "prom", "x", web)
	lb.Spec.Type = corev1.ServiceTypeLoadBalancer
	lb.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.7"}, {Hostname: "prom.example.com"}}
	clusterIP := &corev1.Service{}
	*clusterIP = *lb
	clusterIP.Spec.Type = corev1.ServiceTypeClusterIP
	clusterIP.Status = corev1.ServiceStatus{}
	p := pod("mon", "prometheus-k8s-0", "10.1.2.3", map[string]string{"prometheus": "k8s"}, true, corev1.ContainerPort{Name: "web", ContainerPort: 9090})
	for _, tc := range []struct {
		name string
		cfg  KubernetesConfig
		objs kubeObjects
		want []string
	}{
		{
			name: "loadbalancer",
			cfg:  KubernetesConfig{Name: "eu", Access: AccessLoadBalancer, Port: "web", PathPrefix: "/prom", Labels: map[string]string{"cluster": "prod-eu"}},
			objs: kubeObjects{services: []*corev1.Service{lb}},
			want: []string{`eu/service/mon/prom {__meta_kubernetes_namespace="mon", __meta_kubernetes_service_name="prom", cluster="prod-eu"} http://203.0.113.7:9090/prom http://prom.example.com:9090/prom`},
		},
		{
			name: "apiserver service",
			cfg:  KubernetesConfig{Name: "us", Access: AccessAPIServer, Port: "9090", Scheme: "https"},
			objs: kubeObjects{services: []*corev1.Service{clusterIP}},
			want: []string{`us/service/mon/prom {__meta_kubernetes_namespace="mon", __meta_kubernetes_service_name="prom"} https://api.us:6443/api/v1/namespaces/mon/services/https:prom:web/proxy`},
		},
		{
			name: "apiserver pods",
			cfg:  KubernetesConfig{Access: AccessAPIServer, Port: "web", ResourceTypes: []string{"Pod"}},
			objs: kubeObjects{pods: []*corev1.Pod{p}},
			want: []string{`pods/mon/prometheus=k8s {__meta_kubernetes_namespace="mon", __meta_kubernetes_pod_label_prometheus="k8s"} https://api.us:6443/api/v1/namespaces/mon/pods/prometheus-k8s-0:9090/proxy`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := NewKubernetesWithClient(tc.cfg, nil, time.Minute, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			k.apiHost = "https://api.us:6443"
			gs := k.groups(tc.objs)
			if got := describe(gs); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("groups:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestKubernetesClustersConfig(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, err string
		n               int
	}{
		{name: "single mapping (the original form)", yaml: "kubernetes:\n  port: web\n", n: 1},
		{name: "list", yaml: "kubernetes:\n  - {name: eu, kubeconfig: /eu, labels: {cluster: eu}}\n  - {name: us, kubeconfig: /us, access: apiserver}\n", n: 2},
		{name: "unknown key in an entry", yaml: "kubernetes:\n  - {name: eu, acces: apiserver}\n", err: "acces"},
		{name: "unknown key in the mapping", yaml: "kubernetes:\n  prot: web\n", err: "prot"},
		{name: "names required with several", yaml: "kubernetes:\n  - {kubeconfig: /a}\n  - {kubeconfig: /b}\n", err: "name is required"},
		{name: "duplicate names", yaml: "kubernetes:\n  - {name: a}\n  - {name: a}\n", err: "duplicate name"},
		{name: "bad access", yaml: "kubernetes:\n  access: vpn\n", err: `access: "vpn"`},
		{name: "loadbalancer needs services", yaml: "kubernetes:\n  {access: loadbalancer, resource_types: [Pod]}\n", err: "Services only"},
		{name: "apiserver has no slice proxy", yaml: "kubernetes:\n  {access: apiserver, resource_types: [EndpointSlice]}\n", err: "no EndpointSlice proxy"},
		{name: "label names", yaml: "kubernetes:\n  labels: {__meta_x: a}\n", err: "bad label name"},
		{name: "static group client and prefix", yaml: "static:\n  - name: mimir\n    urls: [https://mimir.example.com]\n    path_prefix: /prometheus\n    http_client:\n      http_headers: {X-Scope-OrgID: {values: [t1]}}\n      bearer_token_file: /token\n"},
		{name: "static prefix must be absolute", yaml: "static:\n  - {name: a, urls: [http://a], path_prefix: prom}\n", err: "must start with /"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cfg Config
			dec := yaml.NewDecoder(strings.NewReader(tc.yaml))
			dec.KnownFields(true)
			err := dec.Decode(&cfg)
			if err == nil {
				err = cfg.Validate()
			}
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want it to mention %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.Kubernetes) != tc.n {
				t.Errorf("%d cluster entries, want %d", len(cfg.Kubernetes), tc.n)
			}
		})
	}
	gs := StaticGroups([]StaticGroup{{Name: "m", URLs: []string{"https://mimir.example.com/"}, PathPrefix: "/prometheus/"}})
	if got := gs[0].Replicas[0].URL; got != "https://mimir.example.com/prometheus" {
		t.Errorf("static URL with path_prefix = %s", got)
	}
}
