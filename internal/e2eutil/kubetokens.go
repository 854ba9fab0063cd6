package e2eutil

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// EnsureNamespace creates the namespace unless it exists.
func (k *Kube) EnsureNamespace(t testing.TB, name string) {
	t.Helper()
	c := kubernetes.NewForConfigOrDie(k.RESTConfig(t))
	_, err := c.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("e2eutil: namespace %s: %v", name, err)
	}
}

// ServiceAccountToken creates the ServiceAccount (and its namespace) unless
// they exist, and returns a token for it from the TokenRequest API, as
// `kubectl create token NAME -n NS --audience=...` does: no controller is
// needed. An empty audiences list means the API server's own.
func (k *Kube) ServiceAccountToken(t testing.TB, namespace, name string, audiences ...string) string {
	t.Helper()
	k.EnsureNamespace(t, namespace)
	c := kubernetes.NewForConfigOrDie(k.RESTConfig(t))
	ctx := context.Background()
	_, err := c.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("e2eutil: ServiceAccount %s/%s: %v", namespace, name, err)
	}
	seconds := int64(time.Hour / time.Second)
	tr, err := c.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: &seconds},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("e2eutil: token for %s/%s: %v", namespace, name, err)
	}
	return tr.Status.Token
}

// SignServiceAccountToken signs claims as the API server signs
// ServiceAccount tokens (with its own key, or with another key when forged
// is true): how a test makes an expired token, which the TokenRequest API
// never hands out, or a forgery.
func (k *Kube) SignServiceAccountToken(t testing.TB, claims jwt.MapClaims, forged bool) string {
	t.Helper()
	var key *rsa.PrivateKey
	if forged {
		var err error
		if key, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			t.Fatalf("e2eutil: %v", err)
		}
	} else {
		b, err := os.ReadFile(k.saKey)
		if err != nil {
			t.Fatalf("e2eutil: %v", err)
		}
		block, _ := pem.Decode(b)
		if block == nil {
			t.Fatalf("e2eutil: %s holds no PEM block", k.saKey)
		}
		if key, err = x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
			t.Fatalf("e2eutil: %v", err)
		}
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(key)
	if err != nil {
		t.Fatalf("e2eutil: %v", err)
	}
	return tok
}

// ServiceAccountClaims are the claims of a ServiceAccount token of the test
// API server, valid from iat to exp.
func ServiceAccountClaims(namespace, name, uid string, audiences []string, iat, exp time.Time) jwt.MapClaims {
	return jwt.MapClaims{
		"iss": ServiceAccountIssuer,
		"sub": ServiceAccountUser(namespace, name),
		"aud": audiences,
		"iat": iat.Unix(), "nbf": iat.Unix(), "exp": exp.Unix(),
		"kubernetes.io": map[string]any{
			"namespace":      namespace,
			"serviceaccount": map[string]any{"name": name, "uid": uid},
		},
	}
}

// ServiceAccountUID returns the uid of an existing ServiceAccount.
func (k *Kube) ServiceAccountUID(t testing.TB, namespace, name string) string {
	t.Helper()
	c := kubernetes.NewForConfigOrDie(k.RESTConfig(t))
	sa, err := c.CoreV1().ServiceAccounts(namespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("e2eutil: ServiceAccount %s/%s: %v", namespace, name, err)
	}
	return string(sa.UID)
}

// KubectlBinary returns the kubectl built next to kube-apiserver (the same
// Kubernetes version), or fails the test saying how to build it.
// Override: KUBECTL.
func KubectlBinary(t testing.TB) string {
	t.Helper()
	dir := KubeAssetsDir(t)
	return lookBinary(t, "KUBECTL", filepath.Join(dir, "kubectl"), "run `make k8s-tools` (builds kubectl "+KubeVersion(t)+" into "+dir+")")
}
