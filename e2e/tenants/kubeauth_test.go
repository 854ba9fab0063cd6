package tenants

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8slabels "k8s.io/apimachinery/pkg/labels"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/authn"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/cmd/proxy/app"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/e2e/e2eproxy"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

// proxyAudience is the audience the shipped configuration asks tokens for.
const proxyAudience = "prometheus-multi-tenant-proxy"

// kubeAuthConfig makes cfg check tokens with the test API server, as the
// proxy's ServiceAccount (RBAC of deploy/kubernetes decides what it may ask).
func kubeAuthConfig(w *kubeWorld, cfg app.Config) app.Config {
	cfg.Auth.Type = authn.TypeKubernetes
	k := &cfg.Auth.Kubernetes
	k.Kubeconfig, k.Audiences, k.CacheTTL = w.proxyKubeconfig, []string{proxyAudience}, model.Duration(time.Second)
	return cfg
}

// saTokens hands out one ServiceAccount token per namespace (made once).
type saTokens struct {
	w  *kubeWorld
	mu sync.Mutex
	m  map[string]string
}

func (s *saTokens) header(t testing.TB, ns string) http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]string{}
	}
	tok, ok := s.m[ns]
	if !ok {
		tok = s.w.kube.ServiceAccountToken(t, ns, "tenant", proxyAudience)
		s.m[ns] = tok
	}
	return bearerHeader(tok)
}

// testTenancyKubernetesAuth: the whole tenancy differential suite, every
// request authenticated by a ServiceAccount token of its namespace.
func testTenancyKubernetesAuth(t *testing.T, w *kubeWorld, f *e2eproxy.Fleet) {
	tokens := &saTokens{w: w}
	cfg := kubeAuthConfig(w, e2eproxy.TenantConfig(f, e2eproxy.TenantFiles(t)))
	testTenancyAs(t, f, cfg, func(ns string) http.Header { return tokens.header(t, ns) })
}

// testKubernetesAuth: ServiceAccount tokens (TokenRequest) of two
// namespaces; each reads its own; a foreign namespace is 403 until a
// RoleBinding grants get metricaccesses there; expired, forged and
// other-audience tokens are 401; with the API server down nothing is
// answered that it would not have allowed.
func testKubernetesAuth(t *testing.T, w *kubeWorld, f *e2eproxy.Fleet) {
	p := e2eproxy.StartProxy(t, kubeAuthConfig(w, e2eproxy.TenantConfig(f, e2eproxy.TenantFiles(t))))
	tokA := w.kube.ServiceAccountToken(t, "team-a", "grafana", proxyAudience)
	tokB := w.kube.ServiceAccountToken(t, "team-b", "grafana", proxyAudience)
	at := e2eproxy.FormatTime(f.Data.Start.Add(time.Hour))
	query := func(h http.Header, params ...string) e2eproxy.APIAnswer {
		v := url.Values{"query": {`count by (namespace) ({__name__=~".+"})`}, "time": {at}}
		for i := 0; i+1 < len(params); i += 2 {
			v.Set(params[i], params[i+1])
		}
		return e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: "/api/v1/query", Params: v, Header: h})
	}
	// seesOnly checks an answer holds data of exactly one namespace.
	seesOnly := func(what string, a e2eproxy.APIAnswer, ns string) {
		t.Helper()
		if a.Code != http.StatusOK || !strings.Contains(string(a.Body), `"namespace":"`+ns+`"`) {
			t.Errorf("%s: HTTP %d %s, want data of %s", what, a.Code, e2eproxy.Clip(a.Body), ns)
		}
		assertNoForeignNamespace(t, what, a, ns)
	}
	seesOnly("team-a's token", query(bearerHeader(tokA)), "team-a")
	seesOnly("team-b's token", query(bearerHeader(tokB)), "team-b")

	asB := withHeader(bearerHeader(tokA), "X-Tenant-Namespace", "team-b")
	if a := query(asB); a.Code != http.StatusForbidden || !strings.Contains(string(a.Body), "metricaccesses") {
		t.Errorf("team-a's token as team-b before any grant: HTTP %d %s, want 403 naming the permission", a.Code, a.Body)
	}
	if a := query(bearerHeader(tokA), "namespace", "team-b"); a.Code != http.StatusForbidden {
		t.Errorf("team-a's token, namespace=team-b, before any grant: HTTP %d %s, want 403", a.Code, a.Body)
	}

	// A RoleBinding in team-b grants team-a's ServiceAccount the viewer role.
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "team-a-reads-metrics", Namespace: "team-b"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "metricaccess-viewer"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "grafana", Namespace: "team-a"}},
	}
	start := time.Now()
	if _, err := w.admin.RbacV1().RoleBindings("team-b").Create(context.Background(), rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e2eutil.Eventually(t, 5*time.Second, "RoleBinding grants team-b", func() error {
		if a := query(asB); a.Code != http.StatusOK {
			return fmt.Errorf("HTTP %d %s", a.Code, e2eproxy.Clip(a.Body))
		}
		return nil
	})
	t.Logf("granted after %v", time.Since(start).Round(time.Millisecond))
	seesOnly("team-a's token as team-b, granted", query(asB), "team-b")
	seesOnly("team-a's token, namespace=team-b, granted", query(bearerHeader(tokA), "namespace", "team-b"), "team-b")
	seesOnly("team-a's token without a choice", query(bearerHeader(tokA)), "team-a")
	if a := query(withHeader(bearerHeader(tokB), "X-Tenant-Namespace", "team-a")); a.Code != http.StatusForbidden {
		t.Errorf("the grant is one way: team-b's token as team-a: HTTP %d", a.Code)
	}
	if err := w.admin.RbacV1().RoleBindings("team-b").Delete(context.Background(), rb.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e2eutil.Eventually(t, 5*time.Second, "deleted RoleBinding revokes", func() error {
		if a := query(asB); a.Code != http.StatusForbidden {
			return fmt.Errorf("HTTP %d", a.Code)
		}
		return nil
	})

	// Tokens that must not authenticate anyone.
	uid := w.kube.ServiceAccountUID(t, "team-a", "grafana")
	now := time.Now()
	for name, tok := range map[string]string{
		"expired":                w.kube.SignServiceAccountToken(t, e2eutil.ServiceAccountClaims("team-a", "grafana", uid, []string{proxyAudience}, now.Add(-2*time.Hour), now.Add(-time.Hour)), false),
		"forged":                 w.kube.SignServiceAccountToken(t, e2eutil.ServiceAccountClaims("team-a", "grafana", uid, []string{proxyAudience}, now, now.Add(time.Hour)), true),
		"for another audience":   w.kube.ServiceAccountToken(t, "team-a", "grafana", "some-other-service"),
		"for the API server":     w.kube.ServiceAccountToken(t, "team-a", "grafana"),
		"not a token":            "garbage",
		"the admin's static one": w.kube.Token,
	} {
		a := query(bearerHeader(tok))
		if a.Code != http.StatusUnauthorized || !strings.Contains(string(a.Body), `"status":"error"`) {
			t.Errorf("%s token: HTTP %d %s, want 401", name, a.Code, e2eproxy.Clip(a.Body))
		}
	}
	if a := query(nil); a.Code != http.StatusUnauthorized {
		t.Errorf("no token: HTTP %d, want 401", a.Code)
	}
	// The well-formed token is still good: the refusals above are the tokens'.
	if a := query(bearerHeader(tokA)); a.Code != http.StatusOK {
		t.Errorf("team-a's token after the refusals: HTTP %d", a.Code)
	}

	// Admin only on purpose, with the RBAC as shipped: a cluster-wide
	// binding of the built-in view role (which, aggregated, carries get
	// metricaccesses everywhere) is no admin; one of the shipped admin
	// ClusterRole is.
	aggregateClusterRoles(t, w)
	tokViewer := w.kube.ServiceAccountToken(t, "platform", "viewer", proxyAudience)
	bindClusterRole(t, w, "platform-viewer-views-all", "view", "platform", "viewer")
	e2eutil.Eventually(t, 5*time.Second, "cluster-wide view carries get metricaccesses everywhere", func() error {
		if !subjectMay(t, w, e2eutil.ServiceAccountUser("platform", "viewer"), "platform", authn.MetricAccessCheck) {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	if a := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: "/debug/tenants", Header: bearerHeader(tokViewer)}); a.Code != http.StatusForbidden {
		t.Errorf("/debug/tenants with a cluster-wide view binding: HTTP %d, want 403 (not admin)", a.Code)
	}
	if a := query(withHeader(bearerHeader(tokViewer), "X-Tenant-Namespace", "team-a")); a.Code == http.StatusOK {
		seesOnly("cluster-wide view, as team-a", a, "team-a")
	} else {
		t.Errorf("cluster-wide view, as team-a: HTTP %d %s (view in team-a grants its metrics)", a.Code, e2eproxy.Clip(a.Body))
	}
	tokAdmin := w.kube.ServiceAccountToken(t, "platform", "oncall", proxyAudience)
	bindClusterRole(t, w, "platform-oncall-proxy-admin", "prometheus-multi-tenant-proxy-admin", "platform", "oncall")
	e2eutil.Eventually(t, 5*time.Second, "the admin ClusterRole makes an admin", func() error {
		a := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: "/debug/tenants", Header: bearerHeader(tokAdmin)})
		if a.Code != http.StatusOK {
			return fmt.Errorf("/debug/tenants: HTTP %d", a.Code)
		}
		return nil
	})
	countNS := e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {`count by (namespace) ({__name__=~".+"})`}, "time": {at}}}
	want := e2eproxy.DoRequest(t, f.Reference.URL, countNS)
	countNS.Header = bearerHeader(tokAdmin)
	e2eproxy.CompareAnswers(t, "admin sees the union", want, e2eproxy.DoRequest(t, p.URL, countNS))
	if a := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: "/debug/tenants", Header: bearerHeader(tokA)}); a.Code != http.StatusForbidden {
		t.Errorf("/debug/tenants as team-a: HTTP %d, want 403", a.Code)
	}

	// "Every namespace I may read": a ServiceAccount of a namespace without
	// rules, bound to the viewer role in team-a and team-b, sees exactly
	// those two, the same as naming them; naming a third is 403.
	tokDash := w.kube.ServiceAccountToken(t, "dashboards", "grafana", proxyAudience)
	for _, ns := range []string{"team-a", "team-b"} {
		rb := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "dashboards-grafana", Namespace: ns},
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "metricaccess-viewer"},
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "grafana", Namespace: "dashboards"}},
		}
		if _, err := w.admin.RbacV1().RoleBindings(ns).Create(context.Background(), rb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	every := withHeader(bearerHeader(tokDash), "X-Tenant-Namespace", "*")
	e2eutil.Eventually(t, 5*time.Second, "RoleBindings in team-a and team-b", func() error {
		if a := query(every); !strings.Contains(string(a.Body), `"namespace":"team-b"`) || !strings.Contains(string(a.Body), `"namespace":"team-a"`) {
			return fmt.Errorf("HTTP %d %s", a.Code, e2eproxy.Clip(a.Body))
		}
		return nil
	})
	got := query(every)
	if ns := answerNamespaces(t, got); strings.Join(ns, ",") != "team-a,team-b" {
		t.Errorf("every namespace I may read: namespaces %v in %s, want exactly team-a and team-b", ns, e2eproxy.Clip(got.Body))
	}
	e2eproxy.CompareAnswers(t, "* equals naming both", query(withHeader(bearerHeader(tokDash), "X-Tenant-Namespace", "team-b,team-a")), got)
	e2eproxy.CompareAnswers(t, "* as a parameter", got, query(bearerHeader(tokDash), "namespace", "*"))
	if a := query(withHeader(bearerHeader(tokDash), "X-Tenant-Namespace", "team-a,team-c")); a.Code != http.StatusForbidden || !strings.Contains(string(a.Body), "team-c") {
		t.Errorf("naming team-c, not granted: HTTP %d %s, want 403 naming team-c", a.Code, e2eproxy.Clip(a.Body))
	}

	// The API server stops: a token not reviewed yet gets 503, and once the
	// cached answers expire so does every other; nothing answers with data.
	fresh := w.kube.ServiceAccountToken(t, "team-c", "grafana", proxyAudience)
	w.kube.StopAPIServer()
	defer w.kube.StartAPIServer()
	if a := query(bearerHeader(fresh)); a.Code != http.StatusServiceUnavailable || strings.Contains(string(a.Body), `"success"`) {
		t.Errorf("new token, API server down: HTTP %d %s, want 503", a.Code, e2eproxy.Clip(a.Body))
	}
	time.Sleep(1500 * time.Millisecond) // past cache_ttl
	for name, h := range map[string]http.Header{"team-a": bearerHeader(tokA), "team-a as team-b": asB, "admin": bearerHeader(tokAdmin)} {
		if a := query(h); a.Code != http.StatusServiceUnavailable {
			t.Errorf("%s, API server down, cache expired: HTTP %d %s, want 503", name, a.Code, e2eproxy.Clip(a.Body))
		}
	}
}

// answerNamespaces lists the namespace labels of an instant vector, sorted.
func answerNamespaces(t *testing.T, a e2eproxy.APIAnswer) []string {
	t.Helper()
	var v struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(a.Body, &v); err != nil {
		t.Fatalf("%v: %s", err, e2eproxy.Clip(a.Body))
	}
	var ns []string
	for _, r := range v.Data.Result {
		ns = append(ns, r.Metric["namespace"])
	}
	slices.Sort(ns)
	return slices.Compact(ns)
}

// bindClusterRole binds a ServiceAccount to a ClusterRole in every namespace.
func bindClusterRole(t *testing.T, w *kubeWorld, name, role, ns, sa string) {
	t.Helper()
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: ns}},
	}
	if _, err := w.admin.RbacV1().ClusterRoleBindings().Create(context.Background(), crb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = w.admin.RbacV1().ClusterRoleBindings().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

// subjectMay asks the API server whether a ServiceAccount user passes check
// in all namespaces.
func subjectMay(t *testing.T, w *kubeWorld, user, saNamespace string, check authn.AccessCheck) bool {
	t.Helper()
	sar, err := w.admin.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: user, Groups: e2eutil.ServiceAccountGroups(saNamespace),
		ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: check.Verb, Group: check.Group, Resource: check.Resource},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return sar.Status.Allowed
}

// aggregateClusterRoles does what kube-controller-manager's clusterrole
// aggregation controller does (the test runs no controller manager): every
// ClusterRole with an aggregationRule gets the rules of the ClusterRoles its
// selectors pick, so the built-in view/edit/admin roles carry what the
// shipped rbac-users.yaml aggregates into them.
func aggregateClusterRoles(t *testing.T, w *kubeWorld) {
	t.Helper()
	ctx := context.Background()
	roles, err := w.admin.RbacV1().ClusterRoles().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, agg := range roles.Items {
		if agg.AggregationRule == nil {
			continue
		}
		var rules []rbacv1.PolicyRule
		for _, sel := range agg.AggregationRule.ClusterRoleSelectors {
			ls, err := metav1.LabelSelectorAsSelector(&sel)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range roles.Items {
				if r.Name != agg.Name && ls.Matches(k8slabels.Set(r.Labels)) {
					rules = append(rules, r.Rules...)
				}
			}
		}
		cp := agg.DeepCopy()
		cp.Rules = rules
		if _, err := w.admin.RbacV1().ClusterRoles().Update(ctx, cp, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("aggregating ClusterRole %s: %v", agg.Name, err)
		}
	}
}

// testKubectlApply: `kubectl apply -k deploy/kubernetes` against the API
// server, then the ConfigMap it created runs (no pod: in this process) and
// refuses unauthenticated requests, serving probes and metrics on its
// management port.
func testKubectlApply(t *testing.T, w *kubeWorld) {
	kubectl := e2eutil.KubectlBinary(t)
	cmd := exec.Command(kubectl, "--kubeconfig="+w.kube.Kubeconfig, "apply", "--server-side", "--force-conflicts", "-k", deployDir(t))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl apply -k: %v\n%s", err, out)
	}
	t.Logf("kubectl apply -k deploy/kubernetes:\n%s", out)
	cm, err := w.admin.CoreV1().ConfigMaps(proxyNamespace).Get(context.Background(), "prometheus-multi-tenant-proxy", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(cm.Data["config.yaml"]), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := app.LoadConfig(path)
	if err != nil {
		t.Fatalf("the applied ConfigMap's config: %v", err)
	}
	if cfg.Auth.Type != authn.TypeKubernetes || cfg.Server.ManagementAddress == "" || len(cfg.Tenants.AdminNamespaces) != 0 {
		t.Errorf("shipped config: auth.type %q, management_address %q, admin_namespaces %v", cfg.Auth.Type, cfg.Server.ManagementAddress, cfg.Tenants.AdminNamespaces)
	}
	// Outside a pod the in-cluster configuration is $KUBECONFIG: the proxy's
	// ServiceAccount, so the shipped RBAC decides.
	t.Setenv("KUBECONFIG", w.proxyKubeconfig)
	cfg.Proxy.EnableRequestLogging = false
	p := e2eproxy.StartProxy(t, cfg)
	for _, h := range []http.Header{nil, bearerHeader("garbage"), bearerHeader(w.kube.ServiceAccountToken(t, "team-a", "grafana"))} {
		for _, path := range []string{"/api/v1/query?query=up", "/metrics", "/debug/tenants", "/ready"} {
			req, _ := http.NewRequest(http.MethodGet, p.URL+path, nil)
			for k, v := range h {
				req.Header[k] = v
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s with %v: HTTP %d, want 401", path, h, resp.StatusCode)
			}
		}
	}
	// A token meant for the proxy works.
	if a := e2eproxy.DoRequest(t, p.URL, e2eproxy.APIRequest{Path: "/api/v1/query", Params: url.Values{"query": {"vector(1)"}}, Header: bearerHeader(w.kube.ServiceAccountToken(t, "team-a", "grafana", proxyAudience))}); a.Code == http.StatusUnauthorized {
		t.Errorf("token for the proxy's audience: HTTP %d %s", a.Code, a.Body)
	}
	for _, path := range []string{"/health", "/metrics"} {
		if a := e2eproxy.DoRequest(t, p.ManagementURL, e2eproxy.APIRequest{Path: path}); a.Code != http.StatusOK {
			t.Errorf("%s on the management port: HTTP %d", path, a.Code)
		}
	}

	// The ServiceMonitor scrapes the Service's management port.
	var sm struct {
		Spec struct {
			Selector struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			} `yaml:"selector"`
			Endpoints []struct {
				Port, Path string
			} `yaml:"endpoints"`
		} `yaml:"spec"`
	}
	if err := yamlUnmarshalFile(filepath.Join(e2eutil.RepoRoot(t), "deploy", "prometheus-operator", "servicemonitor.yaml"), &sm); err != nil {
		t.Fatal(err)
	}
	svc, err := w.admin.CoreV1().Services(proxyNamespace).Get(context.Background(), "prometheus-multi-tenant-proxy", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range sm.Spec.Selector.MatchLabels {
		if svc.Labels[k] != v {
			t.Errorf("the ServiceMonitor selects %s=%s; the Service has %q", k, v, svc.Labels[k])
		}
	}
	ports := map[string]int32{}
	for _, sp := range svc.Spec.Ports {
		ports[sp.Name] = sp.Port
	}
	if len(sm.Spec.Endpoints) != 1 || ports[sm.Spec.Endpoints[0].Port] != 9091 || sm.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("the ServiceMonitor scrapes %+v; the Service's ports are %v", sm.Spec.Endpoints, ports)
	}
}
