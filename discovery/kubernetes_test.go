package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

func TestKubernetesConfigSettings(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     KubernetesConfig
		wantErr string
		check   func(t *testing.T, s kubeSettings)
	}{
		{name: "defaults", check: func(t *testing.T, s kubeSettings) {
			if !s.services || s.pods || s.slices {
				t.Errorf("resource types: services=%v pods=%v slices=%v, want Service only", s.services, s.pods, s.slices)
			}
			if s.portNumber != 9090 || s.scheme != "http" || !reflect.DeepEqual(s.namespaces, []string{""}) {
				t.Errorf("got port %d scheme %q namespaces %q", s.portNumber, s.scheme, s.namespaces)
			}
			if !reflect.DeepEqual(s.groupLabels, []string{"prometheus", "app.kubernetes.io/instance"}) {
				t.Errorf("group labels %q", s.groupLabels)
			}
		}},
		{name: "seed keys", cfg: KubernetesConfig{
			Namespaces:          []string{"monitoring", "monitoring", "other"},
			LabelSelectors:      map[string]string{"app": "prometheus"},
			AnnotationSelectors: map[string]string{"prometheus.io/scrape": "true"},
			Port:                "web",
			ResourceTypes:       []string{"Service", "pods", "Endpoints"},
			PathPrefix:          "/prom/",
			PodGroupLabel:       "team",
		}, check: func(t *testing.T, s kubeSettings) {
			if !s.services || !s.pods || !s.slices {
				t.Errorf("resource types: services=%v pods=%v slices=%v, want all", s.services, s.pods, s.slices)
			}
			if s.portName != "web" || s.portNumber != 0 || s.pathPrefix != "/prom" || s.selector.String() != "app=prometheus" {
				t.Errorf("got port %q/%d prefix %q selector %q", s.portName, s.portNumber, s.pathPrefix, s.selector)
			}
			if !reflect.DeepEqual(s.namespaces, []string{"monitoring", "other"}) || !reflect.DeepEqual(s.groupLabels, []string{"team"}) {
				t.Errorf("namespaces %q group labels %q", s.namespaces, s.groupLabels)
			}
		}},
		{name: "bad resource type", cfg: KubernetesConfig{ResourceTypes: []string{"Deployment"}}, wantErr: `resource_types[0]: "Deployment"`},
		{name: "port out of range", cfg: KubernetesConfig{Port: "70000"}, wantErr: "port: 70000 is out of range"},
		{name: "bad port name", cfg: KubernetesConfig{Port: "no_underscores"}, wantErr: "neither a number nor a port name"},
		{name: "bad namespace", cfg: KubernetesConfig{Namespaces: []string{"Upper"}}, wantErr: `namespaces[0]: "Upper"`},
		{name: "bad label selector", cfg: KubernetesConfig{LabelSelectors: map[string]string{"a b": "c"}}, wantErr: "label_selectors"},
		{name: "bad annotation", cfg: KubernetesConfig{AnnotationSelectors: map[string]string{"": "x"}}, wantErr: "annotation_selectors"},
		{name: "bad scheme", cfg: KubernetesConfig{Scheme: "ftp"}, wantErr: "scheme"},
		{name: "relative prefix", cfg: KubernetesConfig{PathPrefix: "prom"}, wantErr: "path_prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := tc.cfg.settings()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, s)
		})
	}
}

// Object builders for the grouping tables.

func service(ns, name string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{Ports: ports}}
}

func externalName(ns, name, host string, ports ...corev1.ServicePort) *corev1.Service {
	s := service(ns, name, ports...)
	s.Spec.Type = corev1.ServiceTypeExternalName
	s.Spec.ExternalName = host
	return s
}

func ptr[T any](v T) *T { return &v }

type ep struct {
	addr  string
	ready *bool
}

func slice(ns, name, svc string, port string, number int32, eps ...ep) *discoveryv1.EndpointSlice {
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr(port), Port: ptr(number)}},
	}
	if svc != "" {
		sl.Labels[discoveryv1.LabelServiceName] = svc
	}
	for _, e := range eps {
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{e.addr}, Conditions: discoveryv1.EndpointConditions{Ready: e.ready}})
	}
	return sl
}

func pod(ns, name, ip string, lbls map[string]string, ready bool, ports ...corev1.ContainerPort) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbls},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "prometheus", Ports: ports}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
	}
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}
	return p
}

func ownedBy(p *corev1.Pod, kind, name string) *corev1.Pod {
	p.OwnerReferences = []metav1.OwnerReference{{Kind: kind, Name: name, Controller: ptr(true), APIVersion: "apps/v1", UID: "u"}}
	return p
}

var web = corev1.ServicePort{Name: "web", Port: 9090}

// describe renders groups compactly: "name {labels} url url".
func describe(gs []*Group) []string {
	out := []string{}
	for _, g := range gs {
		s := g.Name + " " + g.Labels.String()
		for _, r := range g.Replicas {
			s += " " + r.URL
		}
		out = append(out, s)
	}
	return out
}

func TestKubernetesGroups(t *testing.T) {
	notReady := ptr(false)
	for _, tc := range []struct {
		name string
		cfg  KubernetesConfig
		objs kubeObjects
		want []string
	}{
		{
			name: "service: ready endpoints of its slices, by port name",
			cfg:  KubernetesConfig{Port: "web"},
			objs: kubeObjects{
				services: []*corev1.Service{service("mon", "prom", corev1.ServicePort{Name: "other", Port: 80}, web)},
				slices: []*discoveryv1.EndpointSlice{
					slice("mon", "prom-a", "prom", "web", 19090, ep{addr: "10.0.0.2"}, ep{addr: "10.0.0.1", ready: ptr(true)}),
					slice("mon", "prom-b", "prom", "web", 19090, ep{addr: "10.0.0.3", ready: notReady}, ep{addr: "fd00::1"}),
					slice("mon", "prom-c", "prom", "other", 80, ep{addr: "10.0.0.4"}),
					slice("mon", "unrelated", "other-svc", "web", 9090, ep{addr: "10.0.0.9"}),
				},
			},
			want: []string{`service/mon/prom {__meta_kubernetes_namespace="mon", __meta_kubernetes_service_name="prom"} http://10.0.0.1:19090 http://10.0.0.2:19090 http://[fd00::1]:19090`},
		},
		{
			name: "service by port number; without the port it is no group; without endpoints it is an empty group",
			cfg:  KubernetesConfig{Port: "9090", Scheme: "https", PathPrefix: "/prometheus"},
			objs: kubeObjects{
				services: []*corev1.Service{service("mon", "prom", web), service("mon", "grafana", corev1.ServicePort{Name: "http", Port: 3000}), service("mon", "down", web)},
				slices:   []*discoveryv1.EndpointSlice{slice("mon", "prom-x", "prom", "web", 9090, ep{addr: "10.0.0.1"})},
			},
			want: []string{
				`service/mon/down {__meta_kubernetes_namespace="mon", __meta_kubernetes_service_name="down"}`,
				`service/mon/prom {__meta_kubernetes_namespace="mon", __meta_kubernetes_service_name="prom"} https://10.0.0.1:9090/prometheus`,
			},
		},
		{
			name: "ExternalName: one replica at externalName:port",
			cfg:  KubernetesConfig{Port: "web"},
			objs: kubeObjects{services: []*corev1.Service{
				externalName("mon", "remote", "prom.example.com", corev1.ServicePort{Name: "web", Port: 443}),
				externalName("mon", "no-port", "x.example.com"),
			}},
			want: []string{`service/mon/remote {__meta_kubernetes_namespace="mon", __meta_kubernetes_service_name="remote"} http://prom.example.com:443`},
		},
		{
			name: "ExternalName without ports takes the configured number",
			cfg:  KubernetesConfig{Port: "9091"},
			objs: kubeObjects{services: []*corev1.Service{externalName("mon", "remote", "prom.example.com")}},
			want: []string{`service/mon/remote {__meta_kubernetes_namespace="mon", __meta_kubernetes_service_name="remote"} http://prom.example.com:9091`},
		},
		{
			name: "annotation selectors are exact",
			cfg:  KubernetesConfig{AnnotationSelectors: map[string]string{"federate": "true"}},
			objs: kubeObjects{services: []*corev1.Service{
				func() *corev1.Service {
					s := externalName("mon", "yes", "a.example.com", web)
					s.Annotations = map[string]string{"federate": "true"}
					return s
				}(),
				func() *corev1.Service {
					s := externalName("mon", "no", "b.example.com", web)
					s.Annotations = map[string]string{"federate": "false"}
					return s
				}(),
				externalName("mon", "none", "c.example.com", web),
			}},
			want: []string{`service/mon/yes {__meta_kubernetes_namespace="mon", __meta_kubernetes_service_name="yes"} http://a.example.com:9090`},
		},
		{
			name: "pods: operator label, instance label, shards, one group per unlabelled pod",
			cfg:  KubernetesConfig{ResourceTypes: []string{"Pod"}, Port: "web"},
			objs: kubeObjects{pods: []*corev1.Pod{
				ownedBy(pod("mon", "prometheus-k8s-0", "10.1.0.1", map[string]string{"prometheus": "k8s", "app.kubernetes.io/instance": "ignored"}, true, corev1.ContainerPort{Name: "web", ContainerPort: 9090}), "StatefulSet", "prometheus-k8s"),
				ownedBy(pod("mon", "prometheus-k8s-1", "10.1.0.2", map[string]string{"prometheus": "k8s"}, true, corev1.ContainerPort{Name: "web", ContainerPort: 9090}), "StatefulSet", "prometheus-k8s"),
				pod("mon", "prometheus-big-shard-1-0", "10.1.0.3", map[string]string{"prometheus": "big", "operator.prometheus.io/shard": "1"}, true, corev1.ContainerPort{Name: "web", ContainerPort: 9090}),
				pod("mon", "prometheus-big-0", "10.1.0.4", map[string]string{"prometheus": "big", "operator.prometheus.io/shard": "0"}, true, corev1.ContainerPort{Name: "web", ContainerPort: 9090}),
				pod("mon", "helm-0", "10.1.0.5", map[string]string{"app.kubernetes.io/instance": "helm"}, true, corev1.ContainerPort{Name: "web", ContainerPort: 9091}),
				pod("mon", "lonely", "10.1.0.6", nil, true, corev1.ContainerPort{Name: "web", ContainerPort: 9092}),
				pod("mon", "no-web-port", "10.1.0.7", nil, true, corev1.ContainerPort{Name: "metrics", ContainerPort: 8080}),
			}},
			want: []string{
				`pod/mon/lonely {__meta_kubernetes_namespace="mon", __meta_kubernetes_pod_name="lonely"} http://10.1.0.6:9092`,
				`pods/mon/app.kubernetes.io/instance=helm {__meta_kubernetes_namespace="mon", __meta_kubernetes_pod_label_app_kubernetes_io_instance="helm"} http://10.1.0.5:9091`,
				`pods/mon/prometheus=big,operator.prometheus.io/shard=0 {__meta_kubernetes_namespace="mon", __meta_kubernetes_pod_label_operator_prometheus_io_shard="0", __meta_kubernetes_pod_label_prometheus="big"} http://10.1.0.4:9090`,
				`pods/mon/prometheus=big,operator.prometheus.io/shard=1 {__meta_kubernetes_namespace="mon", __meta_kubernetes_pod_label_operator_prometheus_io_shard="1", __meta_kubernetes_pod_label_prometheus="big"} http://10.1.0.3:9090`,
				`pods/mon/prometheus=k8s {__meta_kubernetes_namespace="mon", __meta_kubernetes_pod_controller_kind="StatefulSet", __meta_kubernetes_pod_controller_name="prometheus-k8s", __meta_kubernetes_pod_label_prometheus="k8s"} http://10.1.0.1:9090 http://10.1.0.2:9090`,
			},
		},
		{
			name: "pods: only Running and Ready ones are replicas; finished ones are nothing",
			cfg:  KubernetesConfig{ResourceTypes: []string{"Pod"}, Port: "9090", PodGroupLabel: "team"},
			objs: kubeObjects{pods: func() []*corev1.Pod {
				lbl := map[string]string{"team": "a"}
				ready := pod("mon", "ready", "10.1.0.1", lbl, true)
				notReady := pod("mon", "not-ready", "10.1.0.2", lbl, false)
				pending := pod("mon", "pending", "", lbl, false)
				pending.Status.Phase = corev1.PodPending
				terminating := pod("mon", "terminating", "10.1.0.3", lbl, true)
				terminating.DeletionTimestamp = &metav1.Time{Time: time.Now()}
				done := pod("mon", "done", "10.1.0.4", map[string]string{"team": "b"}, false)
				done.Status.Phase = corev1.PodSucceeded
				allDown := pod("mon", "down", "10.1.0.5", map[string]string{"team": "c"}, false)
				return []*corev1.Pod{ready, notReady, pending, terminating, done, allDown}
			}()},
			want: []string{
				`pods/mon/team=a {__meta_kubernetes_namespace="mon", __meta_kubernetes_pod_label_team="a"} http://10.1.0.1:9090`,
				`pods/mon/team=c {__meta_kubernetes_namespace="mon", __meta_kubernetes_pod_label_team="c"}`,
			},
		},
		{
			name: "endpointslices: grouped by service, a Service group wins, label selector applied when the server did not",
			cfg:  KubernetesConfig{ResourceTypes: []string{"Service", "EndpointSlice"}, Port: "web", LabelSelectors: map[string]string{"app": "prom"}},
			objs: kubeObjects{
				slicesUnfiltered: true,
				services:         []*corev1.Service{service("mon", "covered", web)},
				slices: func() []*discoveryv1.EndpointSlice {
					covered := slice("mon", "covered-1", "covered", "web", 9090, ep{addr: "10.0.0.1"})
					a1 := slice("mon", "a-1", "a", "web", 9090, ep{addr: "10.0.0.2"})
					a2 := slice("mon", "a-2", "a", "web", 9090, ep{addr: "10.0.0.3"})
					orphan := slice("mon", "orphan", "", "web", 9091, ep{addr: "10.0.0.4"})
					unselected := slice("mon", "b-1", "b", "web", 9090, ep{addr: "10.0.0.5"})
					for _, s := range []*discoveryv1.EndpointSlice{a1, a2, orphan} {
						s.Labels["app"] = "prom"
					}
					return []*discoveryv1.EndpointSlice{covered, a1, a2, orphan, unselected}
				}(),
			},
			want: []string{
				`endpointslice/mon/a {__meta_kubernetes_namespace="mon", __meta_kubernetes_service_name="a"} http://10.0.0.2:9090 http://10.0.0.3:9090`,
				`endpointslice/mon/orphan {__meta_kubernetes_endpointslice_name="orphan", __meta_kubernetes_namespace="mon"} http://10.0.0.4:9091`,
				`service/mon/covered {__meta_kubernetes_namespace="mon", __meta_kubernetes_service_name="covered"} http://10.0.0.1:9090`,
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := NewKubernetesWithClient(tc.cfg, nil, time.Minute, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			got := describe(k.groups(tc.objs))
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("groups:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// A group label must never contradict a query or tenant matcher on a
// series label: only __meta_ labels, which no stored series carries.
func TestKubernetesGroupLabelsNeverPruneQueries(t *testing.T) {
	k, err := NewKubernetesWithClient(KubernetesConfig{ResourceTypes: []string{"Service", "Pod"}, Port: "9090"}, nil, time.Minute, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	gs := k.groups(kubeObjects{
		services: []*corev1.Service{externalName("monitoring", "prom", "prom.example.com", web)},
		pods:     []*corev1.Pod{ownedBy(pod("monitoring", "p-0", "10.0.0.1", map[string]string{"prometheus": "k8s"}, true), "StatefulSet", "p")},
	})
	if len(gs) != 2 {
		t.Fatalf("got %d groups, want 2", len(gs))
	}
	for _, g := range gs {
		g.Labels.Range(func(l labels.Label) {
			if !strings.HasPrefix(l.Name, "__meta_kubernetes_") {
				t.Errorf("group %s: label %s is not a __meta_kubernetes_ label", g.Name, l.Name)
			}
		})
		for _, name := range []string{"namespace", "service", "pod", "job", "instance"} {
			ms, err := parser.NewParser(parser.Options{}).ParseMetricSelector(fmt.Sprintf(`{%s="team-a"}`, name))
			if err != nil {
				t.Fatal(err)
			}
			if ok, reason := g.Matches(ms); !ok {
				t.Errorf("group %s skipped for %s: %s", g.Name, name, reason)
			}
		}
	}
}

// TestKubernetesAgainstAPIServer runs the provider against a real API
// server, acting as the ServiceAccount of deploy/kubernetes (so its RBAC is
// enough), and follows creations, readiness changes and deletions.
func TestKubernetesAgainstAPIServer(t *testing.T) {
	kube := e2eutil.StartKube(t)
	deploy := filepath.Join(e2eutil.RepoRoot(t), "deploy", "kubernetes")
	kube.ApplyFiles(t, filepath.Join(deploy, "namespace.yaml"), filepath.Join(deploy, "serviceaccount.yaml"), filepath.Join(deploy, "rbac.yaml"))
	admin := kubernetes.NewForConfigOrDie(kube.RESTConfig(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const ns = "prom"
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	k, err := NewKubernetes(KubernetesConfig{
		Kubeconfig:     kube.WriteKubeconfig(t, e2eutil.ServiceAccountUser("monitoring", "prometheus-multi-tenant-proxy"), e2eutil.ServiceAccountGroups("monitoring")...),
		Namespaces:     []string{ns},
		LabelSelectors: map[string]string{"app": "prom"},
		Port:           "web",
		ResourceTypes:  []string{"Service", "Pod", "Endpoints"},
	}, time.Minute, slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		latest []string
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		k.Run(ctx, func(gs []*Group) {
			mu.Lock()
			defer mu.Unlock()
			latest = describe(gs)
		})
	}()
	defer func() { cancel(); <-done }()
	expect := func(what string, want ...string) {
		t.Helper()
		if want == nil {
			want = []string{}
		}
		start := time.Now()
		for {
			mu.Lock()
			got := latest
			mu.Unlock()
			if reflect.DeepEqual(got, want) {
				t.Logf("%s: seen after %v", what, time.Since(start).Round(time.Millisecond))
				return
			}
			if time.Since(start) > 5*time.Second {
				t.Fatalf("%s: groups after 5 s:\n%s\nwant:\n%s", what, strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	expect("empty namespace")

	selected := map[string]string{"app": "prom"}
	mustCreate := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mustCreate(admin.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "ha", Labels: selected},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{web}},
	}, metav1.CreateOptions{}))
	mustCreate(admin.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "not-selected"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{web}},
	}, metav1.CreateOptions{}))
	mustCreate(admin.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "remote", Labels: selected},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "localhost", Ports: []corev1.ServicePort{{Name: "web", Port: 19090}}},
	}, metav1.CreateOptions{}))
	// No controller runs: the test writes the Service's slice itself, with
	// addresses the API server accepts (it refuses loopback ones).
	haSlice := slice(ns, "ha-1", "ha", "web", 9090, ep{addr: "10.20.0.1"}, ep{addr: "10.20.0.2", ready: ptr(true)})
	mustCreate(admin.DiscoveryV1().EndpointSlices(ns).Create(ctx, haSlice, metav1.CreateOptions{}))
	orphan := slice(ns, "orphan", "", "web", 9091, ep{addr: "10.20.0.3"})
	orphan.Labels["app"] = "prom"
	mustCreate(admin.DiscoveryV1().EndpointSlices(ns).Create(ctx, orphan, metav1.CreateOptions{}))

	newPod := func(name string) *corev1.Pod {
		p, err := admin.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "prom", "prometheus": "k8s"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{
				Name: "prometheus", Image: "prom/prometheus",
				Ports: []corev1.ContainerPort{{Name: "web", ContainerPort: 9090}},
			}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	setPodStatus := func(p *corev1.Pod, ip string, ready bool) *corev1.Pod {
		t.Helper()
		st := corev1.ConditionFalse
		if ready {
			st = corev1.ConditionTrue
		}
		p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}}
		p, err := admin.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p0 := setPodStatus(newPod("prometheus-k8s-0"), "10.30.0.1", true)
	p1 := setPodStatus(newPod("prometheus-k8s-1"), "10.30.0.2", false)

	svcHA := `service/prom/ha {__meta_kubernetes_namespace="prom", __meta_kubernetes_service_name="ha"} http://10.20.0.1:9090 http://10.20.0.2:9090`
	svcRemote := `service/prom/remote {__meta_kubernetes_namespace="prom", __meta_kubernetes_service_name="remote"} http://localhost:19090`
	orphanGroup := `endpointslice/prom/orphan {__meta_kubernetes_endpointslice_name="orphan", __meta_kubernetes_namespace="prom"} http://10.20.0.3:9091`
	pods := `pods/prom/prometheus=k8s {__meta_kubernetes_namespace="prom", __meta_kubernetes_pod_label_prometheus="k8s"}`
	expect("created", orphanGroup, pods+" http://10.30.0.1:9090", svcHA, svcRemote)

	setPodStatus(p1, "10.30.0.2", true)
	expect("second pod ready", orphanGroup, pods+" http://10.30.0.1:9090 http://10.30.0.2:9090", svcHA, svcRemote)

	haSlice.Endpoints[0].Conditions.Ready = ptr(false)
	mustCreate(admin.DiscoveryV1().EndpointSlices(ns).Update(ctx, haSlice, metav1.UpdateOptions{}))
	expect("endpoint not ready", orphanGroup, pods+" http://10.30.0.1:9090 http://10.30.0.2:9090",
		`service/prom/ha {__meta_kubernetes_namespace="prom", __meta_kubernetes_service_name="ha"} http://10.20.0.2:9090`, svcRemote)

	if err := admin.CoreV1().Pods(ns).Delete(ctx, p0.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := admin.CoreV1().Services(ns).Delete(ctx, "remote", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := admin.DiscoveryV1().EndpointSlices(ns).Delete(ctx, "orphan", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	expect("deleted", pods+" http://10.30.0.2:9090",
		`service/prom/ha {__meta_kubernetes_namespace="prom", __meta_kubernetes_service_name="ha"} http://10.20.0.2:9090`)
}

// testWriter sends log lines to the test's log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
