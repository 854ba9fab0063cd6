package tenancy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

func TestStatusFor(t *testing.T) {
	obj := func(ns, source string, metrics ...string) *MetricAccess {
		return &MetricAccess{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "x", Generation: 3},
			Spec:       MetricAccessSpec{Source: source, Metrics: metrics},
		}
	}
	for _, tc := range []struct {
		name       string
		obj        *MetricAccess
		opts       CompileOptions
		status     metav1.ConditionStatus
		reason     string
		validated  int
		msgContain string
	}{
		{"valid", obj("a", "a", "up", "http_.*", `{job="x"}`), CompileOptions{}, metav1.ConditionTrue, ReasonValid, 3, "all 3 entries"},
		{"some entries invalid", obj("a", "a", "up", "(", `foo{`), CompileOptions{}, metav1.ConditionFalse, ReasonInvalidEntries, 1, `1 of 3 entries in force: entry "(":`},
		{"cross-namespace source", obj("a", "b", "up"), CompileOptions{}, metav1.ConditionFalse, ReasonCrossNamespaceSource, 0, `source "b"`},
		{"cross-namespace source allowed", obj("a", "b", "up"), CompileOptions{AllowCrossNamespaceSource: true}, metav1.ConditionTrue, ReasonValid, 1, ""},
		{"missing source", obj("a", "", "up"), CompileOptions{}, metav1.ConditionFalse, ReasonMissingSource, 0, "nothing granted"},
		{"no metrics", obj("a", "a"), CompileOptions{}, metav1.ConditionFalse, ReasonInvalidObject, 0, "spec.metrics is empty"},
		{"bad label selector and bad entry", func() *MetricAccess {
			o := obj("a", "a", "up", "(")
			o.Spec.LabelSelectors = map[string]string{"": "x"}
			return o
		}(), CompileOptions{}, metav1.ConditionFalse, ReasonInvalidLabelSelector, 0, "nothing granted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := StatusFor(tc.obj, tc.opts, MetricAccessStatus{})
			c := meta.FindStatusCondition(st.Conditions, ConditionReady)
			if c == nil {
				t.Fatalf("no Ready condition: %+v", st)
			}
			if c.Status != tc.status || c.Reason != tc.reason || st.ValidatedMetrics != tc.validated {
				t.Errorf("got %s/%s validated %d (%q), want %s/%s validated %d", c.Status, c.Reason, st.ValidatedMetrics, c.Message, tc.status, tc.reason, tc.validated)
			}
			if !strings.Contains(c.Message, tc.msgContain) {
				t.Errorf("message %q does not contain %q", c.Message, tc.msgContain)
			}
			if st.ObservedGeneration != 3 || c.ObservedGeneration != 3 {
				t.Errorf("observed generation %d/%d, want 3", st.ObservedGeneration, c.ObservedGeneration)
			}
		})
	}

	t.Run("transition time moves only with the status", func(t *testing.T) {
		then := metav1.NewTime(time.Now().Add(-time.Hour).Truncate(time.Second))
		current := MetricAccessStatus{Conditions: []metav1.Condition{{Type: ConditionReady, Status: metav1.ConditionTrue, Reason: ReasonValid, LastTransitionTime: then}}}
		st := StatusFor(obj("a", "a", "up", "down"), CompileOptions{}, current)
		if got := meta.FindStatusCondition(st.Conditions, ConditionReady).LastTransitionTime; !got.Equal(&then) {
			t.Errorf("still ready: transition time %v, want %v", got, then)
		}
		st = StatusFor(obj("a", "a", "("), CompileOptions{}, current)
		if got := meta.FindStatusCondition(st.Conditions, ConditionReady).LastTransitionTime; got.Equal(&then) {
			t.Error("became not ready: transition time did not move")
		}
		if current.Conditions[0].Status != metav1.ConditionTrue {
			t.Error("StatusFor modified the current status")
		}
	})

	t.Run("long messages are clipped", func(t *testing.T) {
		var metrics []string
		for i := range 200 {
			metrics = append(metrics, fmt.Sprintf("bad_%d(", i))
		}
		c := meta.FindStatusCondition(StatusFor(obj("a", "a", metrics...), CompileOptions{}, MetricAccessStatus{}).Conditions, ConditionReady)
		if len(c.Message) > maxConditionMessage+len("…") || !strings.HasSuffix(c.Message, "…") {
			t.Errorf("message of %d bytes not clipped: %q", len(c.Message), c.Message[len(c.Message)-20:])
		}
	})
}

// TestKubernetesSourceAgainstAPIServer installs the CRD and the proxy's RBAC
// from deploy/kubernetes into a real API server, runs the source as the
// proxy's ServiceAccount, and checks that policies and status follow
// creations, updates and deletions within 5 s, and that an outage of the
// API server keeps the last policies and reports degraded.
func TestKubernetesSourceAgainstAPIServer(t *testing.T) {
	kube := e2eutil.StartKube(t)
	deploy := filepath.Join(e2eutil.RepoRoot(t), "deploy", "kubernetes")
	kube.ApplyFiles(t, filepath.Join(deploy, "namespace.yaml"), filepath.Join(deploy, "crd.yaml"),
		filepath.Join(deploy, "serviceaccount.yaml"), filepath.Join(deploy, "rbac.yaml"))
	adminClient, err := dynamic.NewForConfig(kube.RESTConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	admin := func(ns string) dynamic.ResourceInterface {
		return adminClient.Resource(GroupVersionResource).Namespace(ns)
	}
	kube.Apply(t, []byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: team-a}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: team-b}\n"))

	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := DefaultConfig()
	cfg.Kubernetes = true
	reg, err := NewRegistry(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	sa := kube.WriteKubeconfig(t, e2eutil.ServiceAccountUser("monitoring", "prometheus-multi-tenant-proxy"), e2eutil.ServiceAccountGroups("monitoring")...)
	rc, err := clientcmd.BuildConfigFromFlags("", sa)
	if err != nil {
		t.Fatal(err)
	}
	src, err := NewKubernetesSource(cfg, rc, logger, WithHealthInterval(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		reg.Run(ctx, "kubernetes", src)
	}()
	defer func() { cancel(); <-done }()

	eventually := func(what string, cond func() error) {
		t.Helper()
		e2eutil.Eventually(t, 5*time.Second, what, cond)
	}
	eventually("synced", func() error {
		if !reg.Ready() {
			return errors.New("registry not ready")
		}
		return src.Ready()
	})
	rules := func(ns string) string {
		p, err := reg.Policy(ns)
		if err != nil {
			return err.Error()
		}
		return strings.Join(ruleStrings(p.Rules), " ")
	}
	wantRules := func(ns, want string) func() error {
		return func() error {
			if got := rules(ns); got != want {
				return fmt.Errorf("rules of %s: %s, want %s", ns, got, want)
			}
			return nil
		}
	}
	wantStatus := func(ns, name string, status metav1.ConditionStatus, reason string, validated int) func() error {
		return func() error {
			u, err := admin(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			var obj MetricAccess
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &obj); err != nil {
				return err
			}
			c := meta.FindStatusCondition(obj.Status.Conditions, ConditionReady)
			switch {
			case c == nil:
				return fmt.Errorf("%s/%s: no Ready condition yet", ns, name)
			case c.Status != status || c.Reason != reason || obj.Status.ValidatedMetrics != validated:
				return fmt.Errorf("%s/%s: Ready=%s reason %s validated %d (%s)", ns, name, c.Status, c.Reason, obj.Status.ValidatedMetrics, c.Message)
			case obj.Status.ObservedGeneration != obj.Generation || c.ObservedGeneration != obj.Generation:
				return fmt.Errorf("%s/%s: observed generation %d, object generation %d", ns, name, obj.Status.ObservedGeneration, obj.Generation)
			}
			return nil
		}
	}
	apply := func(yaml string) { kube.Apply(t, []byte(yaml)) }

	apply(`apiVersion: observability.ethos.io/v1alpha1
kind: MetricAccess
metadata: {name: http, namespace: team-a}
spec:
  source: team-a
  metrics: [up]
`)
	eventually("created object grants", wantRules("team-a", `{__name__=~"up|up_bucket|up_sum|up_count", namespace="team-a"}`))
	eventually("created object status", wantStatus("team-a", "http", metav1.ConditionTrue, ReasonValid, 1))

	apply(`apiVersion: observability.ethos.io/v1alpha1
kind: MetricAccess
metadata: {name: http, namespace: team-a}
spec:
  source: team-a
  metrics: ['http_.*', 'bad(']
`)
	eventually("updated object grants", wantRules("team-a", `{__name__=~"http_.*", namespace="team-a"}`))
	eventually("updated object status", wantStatus("team-a", "http", metav1.ConditionFalse, ReasonInvalidEntries, 1))

	apply(`apiVersion: observability.ethos.io/v1alpha1
kind: MetricAccess
metadata: {name: steal, namespace: team-b}
spec:
  source: team-a
  metrics: [up]
`)
	eventually("cross-namespace object status", wantStatus("team-b", "steal", metav1.ConditionFalse, ReasonCrossNamespaceSource, 0))
	if _, err := reg.Policy("team-b"); !errors.Is(err, ErrNoAccess) {
		t.Errorf("team-b policy: %v, want ErrNoAccess", err)
	}

	// The CRD refuses what its schema forbids before the proxy sees it.
	bad := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": APIVersion(), "kind": Kind,
		"metadata": map[string]any{"name": "wrong-type", "namespace": "team-a"},
		"spec":     map[string]any{"source": "team-a", "metrics": "up"},
	}}
	if _, err := admin("team-a").Create(ctx, bad, metav1.CreateOptions{}); err == nil || !strings.Contains(err.Error(), "spec.metrics") {
		t.Errorf("metrics as a string: %v, want a validation error naming spec.metrics", err)
	}

	if err := admin("team-a").Delete(ctx, "http", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("deleted object revoked", func() error {
		_, err := reg.Policy("team-a")
		if err == nil {
			return errors.New("team-a still has a policy")
		}
		if !errors.Is(err, ErrNoAccess) {
			return fmt.Errorf("team-a policy: %w", err)
		}
		return nil
	})

	apply(`apiVersion: observability.ethos.io/v1alpha1
kind: MetricAccess
metadata: {name: kept, namespace: team-a}
spec:
  source: team-a
  metrics: [up]
`)
	eventually("object before outage", wantRules("team-a", `{__name__=~"up|up_bucket|up_sum|up_count", namespace="team-a"}`))

	kube.StopAPIServer()
	eventually("degraded", func() error {
		err := src.Ready()
		if err == nil {
			return errors.New("Ready() = nil, want ErrDegraded")
		}
		if !errors.Is(err, ErrDegraded) {
			return fmt.Errorf("Ready() = %w, want ErrDegraded", err)
		}
		return nil
	})
	t.Logf("while the API server is down: %v", src.Ready())
	if got := rules("team-a"); got != `{__name__=~"up|up_bucket|up_sum|up_count", namespace="team-a"}` {
		t.Errorf("policy during the outage: %s", got)
	}
	kube.StartAPIServer()
	eventually("recovered", src.Ready)
	apply(`apiVersion: observability.ethos.io/v1alpha1
kind: MetricAccess
metadata: {name: after, namespace: team-b}
spec:
  source: team-b
  metrics: [up]
`)
	eventually("object after outage", wantRules("team-b", `{__name__=~"up|up_bucket|up_sum|up_count", namespace="team-b"}`))
}

// testWriter sends log lines to the test's log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
