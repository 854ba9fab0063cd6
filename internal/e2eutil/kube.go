package e2eutil

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil/e2ehost"
)

// kubernetesModule is the module tools/kube-apiserver builds the API server from.
const kubernetesModule = "k8s.io/kubernetes"

// kubeGoMod is the module that builds kube-apiserver, etcd and kubectl.
const kubeGoMod = "tools/kube-apiserver/go.mod"

// KubeVersion returns the Kubernetes version tools/kube-apiserver/go.mod
// requires, e.g. v1.37.2: the binaries are cached under that name.
func KubeVersion(t testing.TB) string {
	t.Helper()
	return requiredVersion(t, kubeGoMod, kubernetesModule)
}

// KubeAssetsDir is the folder holding kube-apiserver and etcd: $KUBEBUILDER_ASSETS
// when set (the variable envtest uses), else .cache/kube-<version>/.
func KubeAssetsDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" {
		return d
	}
	dir, _ := toolDir(t, "kube", kubeGoMod, kubernetesModule)
	return dir
}

// KubeBinaries returns the paths of kube-apiserver and etcd, or fails the
// test saying how to build them. Overrides: KUBE_APISERVER, ETCD.
func KubeBinaries(t testing.TB) (apiserver, etcd string) {
	t.Helper()
	dir := KubeAssetsDir(t)
	hint := "run `make k8s-tools` (builds kube-apiserver " + KubeVersion(t) + " and etcd into " + dir + ")"
	return lookBinary(t, "KUBE_APISERVER", filepath.Join(dir, "kube-apiserver"), hint),
		lookBinary(t, "ETCD", filepath.Join(dir, "etcd"), hint)
}

// Kube is a real kube-apiserver with its own etcd, both on 127.0.0.1. No
// controller, scheduler or kubelet runs: objects stay exactly as the test
// writes them (a test sets a Pod's status itself, and creates the
// EndpointSlices of a Service itself). Authorization is RBAC, so a client
// acting as a ServiceAccount gets only what its roles grant.
type Kube struct {
	// URL is the API server, https://127.0.0.1:PORT (self-signed certificate).
	URL string
	// Token authenticates as an administrator (group system:masters).
	Token string
	// Kubeconfig is a kubeconfig file acting as the administrator.
	Kubeconfig string

	t         testing.TB
	dir       string
	saKey     string // the service-account signing key (PEM)
	apiserver *e2ehost.Process
	etcd      *e2ehost.Process
}

// ServiceAccountIssuer is the issuer (and default audience) of the
// ServiceAccount tokens the API server signs.
const ServiceAccountIssuer = "https://kubernetes.default.svc"

// KubeAdminUser is the user name Token authenticates as.
const KubeAdminUser = "e2eutil-admin"

// KubeOption changes how StartKube runs the API server.
type KubeOption func(*kubeOptions)

type kubeOptions struct{ flags []string }

// WithAPIServerFlags adds kube-apiserver flags (e.g. an
// --egress-selector-config-file that sends the API server's proxy traffic
// through a test's own HTTP CONNECT proxy).
func WithAPIServerFlags(flags ...string) KubeOption {
	return func(o *kubeOptions) { o.flags = append(o.flags, flags...) }
}

// StartKube starts etcd and kube-apiserver and waits until the API server
// is ready (built-in RBAC roles included). Both are killed when the test ends.
func StartKube(t testing.TB, opts ...KubeOption) *Kube {
	t.Helper()
	var o kubeOptions
	for _, opt := range opts {
		opt(&o)
	}
	apiserverBin, etcdBin := KubeBinaries(t)
	dir := t.TempDir()
	k := &Kube{t: t, dir: dir, Token: randomHex(t, 16)}

	k.etcd = &e2ehost.Process{Name: "etcd", Path: etcdBin, LogPath: filepath.Join(dir, "etcd.log")}
	cleanup(t, k.etcd)
	var etcdURL string
	etcdClient := &http.Client{Timeout: 2 * time.Second}
	err := k.etcd.StartOnFreePort(startAttempts, func(client int) error {
		peer, err := e2ehost.FreePort()
		if err != nil {
			return err
		}
		// A failed attempt may have left a data directory behind.
		if err := os.RemoveAll(filepath.Join(dir, "etcd")); err != nil {
			return err
		}
		etcdURL = "http://127.0.0.1:" + strconv.Itoa(client)
		peerURL := "http://127.0.0.1:" + strconv.Itoa(peer)
		k.etcd.Name = "etcd (" + etcdURL + ")"
		k.etcd.Args = []string{
			"--name=default",
			"--data-dir=" + filepath.Join(dir, "etcd"),
			"--listen-client-urls=" + etcdURL,
			"--advertise-client-urls=" + etcdURL,
			"--listen-peer-urls=" + peerURL,
			"--initial-advertise-peer-urls=" + peerURL,
			"--initial-cluster=default=" + peerURL,
			// The data lives as long as the test: durability buys nothing.
			"--unsafe-no-fsync",
			"--log-level=warn",
		}
		return nil
	}, time.Minute, func() error { return e2ehost.HTTPReady(etcdClient, etcdURL+"/health", "")() })
	if err != nil {
		fatalStart(t, err)
	}

	saKey := filepath.Join(dir, "service-account.key")
	writeRSAKey(t, saKey)
	k.saKey = saKey
	tokens := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(k.Token+","+KubeAdminUser+",e2eutil-admin-uid,\"system:masters\"\n"), 0o600); err != nil {
		t.Fatalf("e2eutil: %v", err)
	}
	k.apiserver = &e2ehost.Process{Name: "kube-apiserver", Path: apiserverBin, LogPath: filepath.Join(dir, "kube-apiserver.log")}
	cleanup(t, k.apiserver)
	err = k.apiserver.StartOnFreePort(startAttempts, func(port int) error {
		k.URL = "https://127.0.0.1:" + strconv.Itoa(port)
		k.apiserver.Name = "kube-apiserver (" + k.URL + ")"
		k.apiserver.Args = []string{
			"--etcd-servers=" + etcdURL,
			"--bind-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(port),
			"--cert-dir=" + filepath.Join(dir, "certs"),
			"--token-auth-file=" + tokens,
			"--authorization-mode=RBAC",
			"--service-account-issuer=" + ServiceAccountIssuer,
			"--service-account-key-file=" + saKey,
			"--service-account-signing-key-file=" + saKey,
			"--api-audiences=" + ServiceAccountIssuer,
			"--service-cluster-ip-range=10.0.0.0/24",
			// Nothing would reconcile the kubernetes Service's endpoints, and
			// the reconciler refuses a loopback advertise address.
			"--advertise-address=127.0.0.1",
			"--endpoint-reconciler-type=none",
			// That plugin wants a "default" ServiceAccount in every namespace,
			// which only the (absent) controller manager creates.
			"--disable-admission-plugins=ServiceAccount",
		}
		k.apiserver.Args = append(k.apiserver.Args, o.flags...)
		return nil
	}, apiServerReadyTimeout, k.apiServerReady())
	if err != nil {
		fatalStart(t, err)
	}

	k.Kubeconfig = k.WriteKubeconfig(t, "")
	return k
}

const apiServerReadyTimeout = 2 * time.Minute

// apiServerReady reads k.URL when called, so it follows the port
// StartOnFreePort picks.
func (k *Kube) apiServerReady() func() error {
	// The server's certificate is self-signed, made at start; the test talks
	// to its own loopback server only.
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	return func() error { return e2ehost.HTTPReady(client, k.URL+"/readyz", k.Token)() }
}

// StopAPIServer stops kube-apiserver (etcd keeps running), as an outage of
// the control plane would. Its port is held meanwhile (clients dialling it
// are refused), so the restart finds it free.
func (k *Kube) StopAPIServer() {
	k.apiserver.StopHoldingPort(syscall.SIGTERM, 10*time.Second)
}

// StartAPIServer starts kube-apiserver again on the same address after
// StopAPIServer, and waits until it is ready.
func (k *Kube) StartAPIServer() {
	k.t.Helper()
	if err := k.apiserver.RestartOnPort(apiServerReadyTimeout, k.apiServerReady()); err != nil {
		fatalStart(k.t, fmt.Errorf("restart: %w", err))
	}
}

// WriteKubeconfig writes a kubeconfig authenticating as the administrator
// and, when as is not empty, impersonating that user (for example
// "system:serviceaccount:NS:NAME", so RBAC checks that account's roles), and
// returns its path.
func (k *Kube) WriteKubeconfig(t testing.TB, as string, groups ...string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Config\ncurrent-context: test\n")
	fmt.Fprintf(&b, "clusters:\n- name: test\n  cluster:\n    server: %s\n    insecure-skip-tls-verify: true\n", k.URL)
	fmt.Fprintf(&b, "contexts:\n- name: test\n  context: {cluster: test, user: test}\n")
	fmt.Fprintf(&b, "users:\n- name: test\n  user:\n    token: %s\n", k.Token)
	if as != "" {
		fmt.Fprintf(&b, "    as: %q\n", as)
		if len(groups) > 0 {
			b.WriteString("    as-groups:\n")
			for _, g := range groups {
				fmt.Fprintf(&b, "    - %q\n", g)
			}
		}
	}
	f, err := os.CreateTemp(k.dir, "kubeconfig-*.yaml")
	if err != nil {
		t.Fatalf("e2eutil: %v", err)
	}
	if _, err := f.WriteString(b.String()); err != nil {
		t.Fatalf("e2eutil: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("e2eutil: %v", err)
	}
	return f.Name()
}

// ServiceAccountUser is the user name a ServiceAccount authenticates as.
func ServiceAccountUser(namespace, name string) string {
	return "system:serviceaccount:" + namespace + ":" + name
}

// ServiceAccountGroups are the groups every ServiceAccount of namespace is in.
func ServiceAccountGroups(namespace string) []string {
	return []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"}
}

// Log returns the end of kube-apiserver's output.
func (k *Kube) Log() string { return k.apiserver.LogTail(logTailBytes) }

func writeRSAKey(t testing.TB, path string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("e2eutil: %v", err)
	}
	der := x509.MarshalPKCS1PrivateKey(key)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatalf("e2eutil: %v", err)
	}
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("e2eutil: %v", err)
	}
	return hex.EncodeToString(b)
}

// RESTConfig returns a client configuration acting as the administrator.
func (k *Kube) RESTConfig(t testing.TB) *rest.Config {
	t.Helper()
	return restConfigOf(t, k.Kubeconfig)
}

func restConfigOf(t testing.TB, kubeconfig string) *rest.Config {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatalf("e2eutil: %v", err)
	}
	rc.QPS, rc.Burst = 100, 200 // tests create objects in bursts
	return rc
}

// ApplyFiles applies every object of the YAML files (server-side apply, as
// the administrator) and returns them as applied. See Apply.
func (k *Kube) ApplyFiles(t testing.TB, paths ...string) []*unstructured.Unstructured {
	t.Helper()
	var all []byte
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("e2eutil: %v", err)
		}
		all = append(all, "\n---\n"...)
		all = append(all, b...)
	}
	return k.Apply(t, all)
}

// Apply applies every object of a YAML stream: Namespaces and
// CustomResourceDefinitions first (waiting until each CRD is established),
// then the rest in order. With dryRun the API server validates and admits
// everything but stores nothing. A refused object fails the test, naming it.
func (k *Kube) Apply(t testing.TB, yamlDocs []byte, opts ...ApplyOption) []*unstructured.Unstructured {
	t.Helper()
	var o applyOptions
	for _, opt := range opts {
		opt(&o)
	}
	rc := k.RESTConfig(t)
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		t.Fatalf("e2eutil: %v", err)
	}
	disco, err := discovery.NewDiscoveryClientForConfig(rc)
	if err != nil {
		t.Fatalf("e2eutil: %v", err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disco))

	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(yamlDocs), 4096)
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("e2eutil: apply: decode: %v", err)
		}
		if len(m) == 0 {
			continue // an empty document
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
	rank := func(u *unstructured.Unstructured) int {
		switch u.GroupVersionKind().GroupKind() {
		case schema.GroupKind{Kind: "Namespace"}:
			return 0
		case schema.GroupKind{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}:
			return 1
		}
		return 2
	}
	slices.SortStableFunc(objs, func(a, b *unstructured.Unstructured) int { return rank(a) - rank(b) })

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out []*unstructured.Unstructured
	for _, obj := range objs {
		gvk := obj.GroupVersionKind()
		what := fmt.Sprintf("%s %s", gvk.Kind, obj.GetName())
		if obj.GetNamespace() != "" {
			what += " in namespace " + obj.GetNamespace()
		}
		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil && rank(obj) == 2 {
			// A CRD applied just before: discovery may not list it yet.
			mapper.Reset()
			mapping, err = mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		}
		if err != nil {
			t.Fatalf("e2eutil: apply %s: %v", what, err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
		if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
			if obj.GetNamespace() == "" {
				obj.SetNamespace(metav1.NamespaceDefault)
			}
			ri = dyn.Resource(mapping.Resource).Namespace(obj.GetNamespace())
		}
		ao := metav1.ApplyOptions{FieldManager: "e2eutil", Force: true}
		if o.dryRun {
			ao.DryRun = []string{metav1.DryRunAll}
		}
		applied, err := ri.Apply(ctx, obj.GetName(), obj, ao)
		if err != nil {
			t.Fatalf("e2eutil: apply %s: %v", what, err)
		}
		if rank(obj) == 1 && !o.dryRun {
			k.waitEstablished(t, ctx, ri, obj.GetName())
			mapper.Reset()
		}
		out = append(out, applied)
	}
	return out
}

// ApplyOption changes how Apply applies.
type ApplyOption func(*applyOptions)

type applyOptions struct{ dryRun bool }

// DryRun makes Apply validate and admit without storing anything.
func DryRun() ApplyOption { return func(o *applyOptions) { o.dryRun = true } }

func (k *Kube) waitEstablished(t testing.TB, ctx context.Context, ri dynamic.ResourceInterface, name string) {
	t.Helper()
	for {
		crd, err := ri.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("e2eutil: CustomResourceDefinition %s: %v", name, err)
		}
		conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
		for _, c := range conds {
			if m, ok := c.(map[string]any); ok && m["type"] == "Established" && m["status"] == "True" {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("e2eutil: CustomResourceDefinition %s not established: %v", name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
