// Package e2e holds end-to-end tests of what the project ships beside the
// binary: here the Helm chart in deploy/helm, linted, rendered for every
// values file of its ci/ folder, applied to a real kube-apiserver, checked
// against its schema and against the kustomize manifests it mirrors.
package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/cmd/proxy/app"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

const (
	chartName = "prometheus-multi-tenant-proxy"
	// The release and namespace whose default render must equal deploy/kubernetes.
	kustomizeRelease   = chartName
	kustomizeNamespace = "monitoring"
)

func chartDir(t testing.TB) string {
	return filepath.Join(e2eutil.RepoRoot(t), "deploy", "helm", chartName)
}

// ciValues are the chart's ci/*.yaml values files, by base name.
func ciValues(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir(t), "ci", "*-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 4 {
		t.Fatalf("ci/: %d values files, want at least default, multi-cluster, redis and everything-on", len(files))
	}
	return files
}

// helmRun runs helm with its cache, config and data in a temporary folder
// (nothing of the machine's helm setup is read or written).
func helmRun(t testing.TB, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	bin := e2eutil.HelmBinary(t)
	home := t.TempDir()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG="+filepath.Join(home, "no-kubeconfig"),
	)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// render is `helm template` of the chart with --include-crds.
func render(t testing.TB, release, namespace string, valuesFiles ...string) string {
	t.Helper()
	args := []string{"template", release, chartDir(t), "--namespace", namespace, "--include-crds"}
	for _, f := range valuesFiles {
		args = append(args, "--values", f)
	}
	out, stderr, err := helmRun(t, args...)
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return out
}

// objects decodes a YAML stream into its objects (empty documents dropped),
// with numbers as JSON decodes them, so two renders compare field by field.
func objects(t testing.TB, stream string) []map[string]any {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(stream), 4096)
	var out []map[string]any
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return out
			}
			t.Fatalf("decode rendered YAML: %v", err)
		}
		if len(m) > 0 {
			out = append(out, m)
		}
	}
}

func objectKey(o map[string]any) string {
	md, _ := o["metadata"].(map[string]any)
	ns, _ := md["namespace"].(string)
	name, _ := md["name"].(string)
	return fmt.Sprintf("%v %v %s/%s", o["apiVersion"], o["kind"], ns, name)
}

// TestHelmChartOneSource: the chart carries copies of files that live
// elsewhere in the repository (helm reads nothing outside the chart
// folder); each copy must equal its source byte for byte.
func TestHelmChartOneSource(t *testing.T) {
	root := e2eutil.RepoRoot(t)
	chart := chartDir(t)
	for copyPath, source := range map[string]string{
		"crds/metricaccess.yaml":     "deploy/kubernetes/crd.yaml",
		"files/alerts.yaml":          "deploy/prometheus/alerts.yaml",
		"files/proxy-dashboard.json": "deploy/grafana/proxy-dashboard.json",
	} {
		want, err := os.ReadFile(filepath.Join(root, source))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(chart, copyPath))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("deploy/helm/%s/%s differs from %s, its source: cp %s deploy/helm/%s/%s", chartName, copyPath, source, source, chartName, copyPath)
		}
	}
}

// TestHelmLint: `helm lint --strict` passes with the defaults and with every
// ci/ values file.
func TestHelmLint(t *testing.T) {
	for _, f := range append([]string{""}, ciValues(t)...) {
		name := "defaults"
		args := []string{"lint", "--strict", chartDir(t)}
		if f != "" {
			name = filepath.Base(f)
			args = append(args, "--values", f)
		}
		t.Run(name, func(t *testing.T) {
			out, stderr, err := helmRun(t, args...)
			if err != nil || !strings.Contains(out, "1 chart(s) linted, 0 chart(s) failed") {
				t.Errorf("helm lint --strict: %v\n%s%s", err, out, stderr)
			}
		})
	}
}

// TestHelmValuesSchema: values.schema.json refuses each bad value below
// (naming it), while the same command with a good value renders, so it is
// the schema that refused.
func TestHelmValuesSchema(t *testing.T) {
	cases := []struct {
		name, values, good, want string
	}{
		{"InlineRedisPassword", "config: {cache: {backend: redis, redis: {addresses: [r:6379], password: hunter2}}}",
			"config: {cache: {backend: redis, redis: {addresses: [r:6379]}}}", "password"},
		{"InlineJWTSecret", "config: {auth: {type: jwt, jwt: {secret_key: s3cr3t}}}",
			"config: {auth: {type: jwt, jwt: {jwks_url: 'https://issuer/keys'}}}", "secret_key"},
		{"InlineAPIKeys", "config: {auth: {type: api_key, api_keys: ['abc team-a']}}",
			"config: {auth: {type: api_key}}\nsecretFiles: {apiKeys: {secretName: keys}}", "api_keys"},
		{"UnknownAuthType", "config: {auth: {type: ldap}}", "config: {auth: {type: none}}", "type"},
		{"MisspeltTopLevelKey", "replicas: 3", "replicaCount: 3", "replicas"},
		{"ReplicasNotANumber", "replicaCount: two", "replicaCount: 2", "replicaCount"},
		{"ServiceMonitorEnabledString", "serviceMonitor: {enabled: 'yes'}", "serviceMonitor: {enabled: true}", "enabled"},
		{"SecretRefWithoutName", "secretFiles: {cacheSigningKey: {name: k}}", "secretFiles: {cacheSigningKey: {secretName: k}}", "cacheSigningKey"},
		{"ClusterKubeconfigPath", "clusters: [{name: eu, kubeconfig: /root/.kube/config}]",
			"clusters: [{name: eu, kubeconfigSecret: {secretName: eu}}]", "kubeconfig"},
		{"ClusterNameNotDNS", "clusters: [{name: EU_1}]", "clusters: [{name: eu-1}]", "name"},
		{"HPAMinZero", "autoscaling: {minReplicas: 0}", "autoscaling: {minReplicas: 1}", "minReplicas"},
		{"BadPort", "containerPorts: {http: 70000, management: 9091}", "containerPorts: {http: 8081, management: 9091}", "http"},
	}
	dir := t.TempDir()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bad := filepath.Join(dir, c.name+"-bad.yaml")
			good := filepath.Join(dir, c.name+"-good.yaml")
			if err := os.WriteFile(bad, []byte(c.values+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(good, []byte(c.good+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			_, stderr, err := helmRun(t, "template", "x", chartDir(t), "--values", bad)
			if err == nil {
				t.Fatalf("values %q rendered; the schema should refuse them", c.values)
			}
			if !strings.Contains(stderr, "schema") || !strings.Contains(stderr, c.want) {
				t.Errorf("values %q: the error names no schema violation of %q:\n%s", c.values, c.want, stderr)
			}
			if _, stderr, err := helmRun(t, "template", "x", chartDir(t), "--values", good); err != nil {
				t.Errorf("values %q (the good twin) refused: %v\n%s", c.good, err, stderr)
			}
		})
	}
}

// A difference between the default render and deploy/kubernetes that is
// there on purpose. apply removes it from the pair and reports whether it
// was there: an explanation that no longer matches anything fails too, so
// the list stays the exact list of differences.
type explained struct {
	what, why string
	apply     func(kustomize, helm map[string]map[string]any) bool
}

// helmLabels are the labels the chart adds to what deploy/kubernetes sets.
var helmLabels = []string{"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance", "app.kubernetes.io/version"}

// deleteKeys removes the keys from every map anywhere in v; true if any was there.
func deleteKeys(v any, keys []string) bool {
	found := false
	switch x := v.(type) {
	case map[string]any:
		for _, k := range keys {
			if _, ok := x[k]; ok {
				delete(x, k)
				found = true
			}
		}
		for _, e := range x {
			found = deleteKeys(e, keys) || found
		}
	case []any:
		for _, e := range x {
			found = deleteKeys(e, keys) || found
		}
	}
	return found
}

func nested(o map[string]any, path ...string) map[string]any {
	for _, p := range path {
		next, _ := o[p].(map[string]any)
		if next == nil {
			return nil
		}
		o = next
	}
	return o
}

var kustomizeDifferences = []explained{
	{
		what: "the Namespace monitoring is not rendered",
		why:  "a chart installs into a namespace it is given (helm install --namespace monitoring --create-namespace); it does not own it",
		apply: func(k, h map[string]map[string]any) bool {
			key := "v1 Namespace /" + kustomizeNamespace
			_, ok := k[key]
			delete(k, key)
			return ok
		},
	},
	{
		what: "labels helm.sh/chart, app.kubernetes.io/managed-by, app.kubernetes.io/instance and app.kubernetes.io/version on every templated object, instance also in selectors and pod labels",
		why:  "the Kubernetes recommended labels Helm charts carry; instance in the selectors keeps two releases in one namespace from selecting each other's pods",
		apply: func(k, h map[string]map[string]any) bool {
			found := false
			for _, o := range h {
				found = deleteKeys(o, helmLabels) || found
			}
			return found
		},
	},
	{
		what: "annotation checksum/config on the Deployment's pod template",
		why:  "a changed configuration rolls the pods on helm upgrade (kubectl apply -k changes the ConfigMap alone)",
		apply: func(k, h map[string]map[string]any) bool {
			md := nested(h["apps/v1 Deployment "+kustomizeNamespace+"/"+chartName], "spec", "template", "metadata")
			ann, _ := md["annotations"].(map[string]any)
			if _, ok := ann["checksum/config"]; !ok {
				return false
			}
			delete(ann, "checksum/config")
			if len(ann) == 0 {
				delete(md, "annotations")
			}
			return true
		},
	},
	{
		what: "the MetricAccess CRD lacks the label app.kubernetes.io/part-of",
		why:  "Helm installs crds/ as they are, untemplated (and never upgrades them); kustomize adds part-of to every object. The file itself is deploy/kubernetes/crd.yaml (TestHelmChartOneSource)",
		apply: func(k, h map[string]map[string]any) bool {
			labels := nested(k["apiextensions.k8s.io/v1 CustomResourceDefinition /metricaccesses.observability.ethos.io"], "metadata", "labels")
			if _, ok := labels["app.kubernetes.io/part-of"]; !ok {
				return false
			}
			delete(labels, "app.kubernetes.io/part-of")
			return true
		},
	},
	{
		what: "the ConfigMap's config.yaml is another text of the same configuration",
		why:  "the chart renders it from values (key order, no comments); compared as parsed YAML",
		apply: func(k, h map[string]map[string]any) bool {
			key := "v1 ConfigMap " + kustomizeNamespace + "/" + chartName
			kd, hd := nested(k[key], "data"), nested(h[key], "data")
			ks, _ := kd["config.yaml"].(string)
			hs, _ := hd["config.yaml"].(string)
			if ks == "" || hs == "" || ks == hs {
				return false
			}
			var kv, hv any
			if err := yaml.Unmarshal([]byte(ks), &kv); err != nil {
				return false
			}
			if err := yaml.Unmarshal([]byte(hs), &hv); err != nil {
				return false
			}
			kd["config.yaml"], hd["config.yaml"] = kv, hv
			return true
		},
	},
}

// TestHelmDefaultEqualsKustomize: with the default values, the chart renders
// what `kubectl kustomize deploy/kubernetes` does, object by object, up to
// the differences listed in kustomizeDifferences with their reasons.
func TestHelmDefaultEqualsKustomize(t *testing.T) {
	kubectl := e2eutil.KubectlBinary(t)
	kout, err := exec.Command(kubectl, "kustomize", filepath.Join(e2eutil.RepoRoot(t), "deploy", "kubernetes")).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		t.Fatalf("kubectl kustomize deploy/kubernetes: %v", err)
	}
	byKey := func(objs []map[string]any) map[string]map[string]any {
		m := map[string]map[string]any{}
		for _, o := range objs {
			m[objectKey(o)] = o
		}
		return m
	}
	k := byKey(objects(t, string(kout)))
	h := byKey(objects(t, render(t, kustomizeRelease, kustomizeNamespace)))
	for _, d := range kustomizeDifferences {
		if !d.apply(k, h) {
			t.Errorf("explained difference %q no longer occurs: remove it from kustomizeDifferences", d.what)
		}
	}
	var keys []string
	for key := range k {
		keys = append(keys, key)
	}
	for key := range h {
		if _, ok := k[key]; !ok {
			keys = append(keys, key)
		}
	}
	sort.Strings(keys)
	for _, key := range keys {
		ko, kok := k[key]
		ho, hok := h[key]
		switch {
		case !hok:
			t.Errorf("%s: in deploy/kubernetes, not rendered by the chart", key)
		case !kok:
			t.Errorf("%s: rendered by the chart, not in deploy/kubernetes", key)
		case !reflect.DeepEqual(ko, ho):
			kj, _ := json.MarshalIndent(ko, "", "  ")
			hj, _ := json.MarshalIndent(ho, "", "  ")
			t.Errorf("%s differs (after the explained differences):\n%s", key, lineDiff(string(kj), string(hj)))
		}
	}
}

// lineDiff shows the lines only one side has (kustomize "-", helm "+").
func lineDiff(a, b string) string {
	count := map[string]int{}
	for _, l := range strings.Split(a, "\n") {
		count[l]++
	}
	for _, l := range strings.Split(b, "\n") {
		count[l]--
	}
	var out []string
	for _, l := range strings.Split(a, "\n") {
		if count[l] > 0 {
			out = append(out, "- kustomize: "+l)
		}
	}
	for _, l := range strings.Split(b, "\n") {
		if count[l] < 0 {
			out = append(out, "+ helm:      "+l)
		}
	}
	return strings.Join(out, "\n")
}

// checkRender checks a render's inner consistency: the config decodes as
// the proxy's, and every file it names lies in a volume the container mounts.
func checkRender(t *testing.T, objs []map[string]any) {
	t.Helper()
	var cfgText string
	var mounts []string
	for _, o := range objs {
		switch {
		case o["kind"] == "ConfigMap" && nested(o, "data")["config.yaml"] != nil:
			cfgText, _ = nested(o, "data")["config.yaml"].(string)
		case o["kind"] == "Deployment":
			containers, _ := nested(o, "spec", "template", "spec")["containers"].([]any)
			for _, c := range containers {
				vms, _ := c.(map[string]any)["volumeMounts"].([]any)
				for _, vm := range vms {
					mounts = append(mounts, vm.(map[string]any)["mountPath"].(string))
				}
			}
		}
	}
	if cfgText == "" {
		t.Fatal("no ConfigMap with config.yaml rendered")
	}
	// Decoded only: the files it names exist in the container, not here.
	var cfg app.Config
	dec := yaml.NewDecoder(strings.NewReader(cfgText))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Errorf("config.yaml does not decode as the proxy's configuration: %v\n%s", err, cfgText)
	}
	var raw any
	if err := yaml.Unmarshal([]byte(cfgText), &raw); err != nil {
		t.Fatal(err)
	}
	for path, file := range filePaths("", raw) {
		dir := filepath.Dir(file)
		if strings.Contains(dir, "*") {
			dir = filepath.Dir(dir)
		}
		ok := false
		for _, m := range mounts {
			if dir == m || strings.HasPrefix(dir, m+"/") {
				ok = true
			}
		}
		if !ok {
			t.Errorf("config %s = %s: no volume is mounted there (mounts %v)", path, file, mounts)
		}
	}
}

// filePaths returns the config's keys holding absolute file paths (and
// globs of tenants.files) under /etc.
func filePaths(prefix string, v any) map[string]string {
	out := map[string]string{}
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			for p, f := range filePaths(prefix+"."+k, e) {
				out[p] = f
			}
		}
	case []any:
		for i, e := range x {
			for p, f := range filePaths(fmt.Sprintf("%s[%d]", prefix, i), e) {
				out[p] = f
			}
		}
	case string:
		if strings.HasPrefix(x, "/etc/") {
			out[strings.TrimPrefix(prefix, ".")] = x
		}
	}
	return out
}

// TestHelmChartApplied renders the chart with every ci/ values file, checks
// each render's config and mounts, and applies it server-side (real apply,
// strict field validation) to a real kube-apiserver, with prometheus-operator's
// ServiceMonitor and PrometheusRule CRDs installed first.
func TestHelmChartApplied(t *testing.T) {
	kubectl := e2eutil.KubectlBinary(t)
	e2eutil.HelmBinary(t) // fail before starting the API server when helm is missing
	kube := e2eutil.StartKube(t)
	kube.ApplyFiles(t,
		filepath.Join(e2eutil.RepoRoot(t), "e2e", "testdata", "monitoring-crds.yaml"),
		filepath.Join(chartDir(t), "crds", "metricaccess.yaml"))

	apply := func(t *testing.T, file string) (string, error) {
		cmd := exec.Command(kubectl, "--kubeconfig", kube.Kubeconfig, "apply", "--server-side",
			"--field-manager=helm-chart-test", "--validate=strict", "-f", file)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, f := range ciValues(t) {
		base := strings.TrimSuffix(filepath.Base(f), "-values.yaml")
		t.Run(base, func(t *testing.T) {
			release, ns := "proxy-"+base, "ci-"+base
			if base == "default" {
				release, ns = kustomizeRelease, kustomizeNamespace
			}
			text := render(t, release, ns, f)
			objs := objects(t, text)
			checkRender(t, objs)
			kube.Apply(t, []byte("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: "+ns+"\n"))
			file := filepath.Join(t.TempDir(), "render.yaml")
			if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := apply(t, file)
			if err != nil {
				t.Fatalf("kubectl apply --server-side of the render with %s: %v\n%s", filepath.Base(f), err, out)
			}
			if n := strings.Count(out, "serverside-applied"); n != len(objs) {
				t.Errorf("%d objects rendered, %d applied:\n%s", len(objs), n, out)
			}
		})
	}

	// The apply above is strict: a misplaced field is refused, not dropped.
	t.Run("StrictValidationRefuses", func(t *testing.T) {
		text := render(t, kustomizeRelease, kustomizeNamespace)
		bad := strings.Replace(text, "revisionHistoryLimit:", "revisionHistoryLimits:", 1)
		if bad == text {
			t.Fatal("no revisionHistoryLimit in the render")
		}
		file := filepath.Join(t.TempDir(), "bad.yaml")
		if err := os.WriteFile(file, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := apply(t, file)
		if err == nil || !strings.Contains(out, "revisionHistoryLimits") {
			t.Errorf("a Deployment with an unknown field was applied: %v\n%s", err, out)
		}
	})
}

// TestHelmMonitoringObjects: with everything on, the ServiceMonitor selects
// the chart's Service and scrapes its management port with job
// "prometheus-multi-tenant-proxy" (what the alerts select) whatever the
// release is called; the PrometheusRule holds exactly the groups of
// deploy/prometheus/alerts.yaml and the dashboard ConfigMap exactly
// deploy/grafana/proxy-dashboard.json.
func TestHelmMonitoringObjects(t *testing.T) {
	root := e2eutil.RepoRoot(t)
	objs := objects(t, render(t, "some-release", "observability", filepath.Join(chartDir(t), "ci", "everything-values.yaml")))
	byKind := map[string]map[string]any{}
	for _, o := range objs {
		kind, _ := o["kind"].(string)
		if kind == "ConfigMap" && strings.HasSuffix(nested(o, "metadata")["name"].(string), "-dashboard") {
			kind = "DashboardConfigMap"
		}
		byKind[kind] = o
	}
	svc, sm, rule, dash := byKind["Service"], byKind["ServiceMonitor"], byKind["PrometheusRule"], byKind["DashboardConfigMap"]
	if svc == nil || sm == nil || rule == nil || dash == nil {
		t.Fatalf("everything-values.yaml renders no Service, ServiceMonitor, PrometheusRule or dashboard ConfigMap: %v", reflect.ValueOf(byKind).MapKeys())
	}

	svcLabels := nested(svc, "metadata", "labels")
	for k, v := range nested(sm, "spec", "selector", "matchLabels") {
		if svcLabels[k] != v {
			t.Errorf("the ServiceMonitor selects %s=%v; the Service has %v", k, v, svcLabels[k])
		}
	}
	jobLabel, _ := nested(sm, "spec")["jobLabel"].(string)
	if job := svcLabels[jobLabel]; job != chartName {
		t.Errorf("scraped as job %q (the Service's label %q); the alerts select job=%q", job, jobLabel, chartName)
	}
	if ns, _ := nested(sm, "spec", "namespaceSelector")["matchNames"].([]any); len(ns) != 1 || ns[0] != "observability" {
		t.Errorf("the ServiceMonitor looks in namespaces %v, not the release's", ns)
	}
	endpoints, _ := nested(sm, "spec")["endpoints"].([]any)
	svcPorts, _ := nested(svc, "spec")["ports"].([]any)
	for _, e := range endpoints {
		port := e.(map[string]any)["port"]
		found := false
		for _, p := range svcPorts {
			found = found || p.(map[string]any)["name"] == port
		}
		if !found || port != "management" {
			t.Errorf("the ServiceMonitor scrapes port %v; want the Service's management port (ports %v)", port, svcPorts)
		}
	}

	alertsText, err := os.ReadFile(filepath.Join(root, "deploy", "prometheus", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	alerts := objects(t, string(alertsText))
	if len(alerts) != 1 || !reflect.DeepEqual(nested(rule, "spec"), alerts[0]) {
		t.Errorf("the PrometheusRule's spec is not deploy/prometheus/alerts.yaml")
	}
	if groups, _ := nested(rule, "spec")["groups"].([]any); len(groups) == 0 {
		t.Errorf("the PrometheusRule has no groups")
	}

	dashText, err := os.ReadFile(filepath.Join(root, "deploy", "grafana", "proxy-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var want, got any
	if err := json.Unmarshal(dashText, &want); err != nil {
		t.Fatal(err)
	}
	data := nested(dash, "data")
	if len(data) != 1 {
		t.Fatalf("dashboard ConfigMap holds %d files, want 1", len(data))
	}
	for name, v := range data {
		if err := json.Unmarshal([]byte(v.(string)), &got); err != nil {
			t.Fatalf("dashboard ConfigMap %s: %v", name, err)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the dashboard ConfigMap does not hold deploy/grafana/proxy-dashboard.json")
	}
	if nested(dash, "metadata", "labels")["grafana_dashboard"] != "1" {
		t.Errorf("the dashboard ConfigMap lacks the label grafana_dashboard: \"1\" Grafana's sidecar looks for")
	}
}

// TestHelmPackage: `helm package` makes an archive that carries the CRD and
// the files the templates read (the copies TestHelmChartOneSource checks).
func TestHelmPackage(t *testing.T) {
	dir := t.TempDir()
	out, stderr, err := helmRun(t, "package", chartDir(t), "--destination", dir)
	if err != nil {
		t.Fatalf("helm package: %v\n%s%s", err, out, stderr)
	}
	archives, _ := filepath.Glob(filepath.Join(dir, chartName+"-*.tgz"))
	if len(archives) != 1 {
		t.Fatalf("helm package wrote %v", archives)
	}
	// Rendering the archive is rendering what a user installs.
	out, stderr, err = helmRun(t, "template", "x", archives[0], "--include-crds",
		"--values", filepath.Join(chartDir(t), "ci", "everything-values.yaml"))
	if err != nil {
		t.Fatalf("helm template of the archive: %v\n%s", err, stderr)
	}
	kinds := map[any]bool{}
	for _, o := range objects(t, out) {
		kinds[o["kind"]] = true
	}
	for _, k := range []string{"CustomResourceDefinition", "PrometheusRule", "ServiceMonitor", "Deployment"} {
		if !kinds[k] {
			t.Errorf("the packaged chart renders no %s", k)
		}
	}
}
