package e2eutil

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

func TestKube(t *testing.T) {
	t.Parallel()
	k := StartKube(t)
	c := kubernetes.NewForConfigOrDie(k.RESTConfig(t))
	ctx := context.Background()

	v, err := c.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if want := KubeVersion(t); v.GitVersion != want {
		t.Errorf("server version %s, want %s (the version the binary was built from)", v.GitVersion, want)
	}

	// Objects applied from YAML are there; a pod's status is the test's to write.
	k.Apply(t, []byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: ns}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ns}\nspec:\n  containers: [{name: c, image: i}]\n"))
	pod, err := c.CoreV1().Pods("ns").Get(ctx, "p", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.0.1", PodIPs: []corev1.PodIP{{IP: "127.0.0.1"}}}
	if _, err := c.CoreV1().Pods("ns").UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("pod status with a loopback IP: %v", err)
	}

	// Data survives an API server restart: etcd keeps running.
	k.StopAPIServer()
	if _, err := c.CoreV1().Pods("ns").Get(ctx, "p", metav1.GetOptions{}); err == nil {
		t.Fatal("API server answers after StopAPIServer")
	}
	k.StartAPIServer()
	if _, err := c.CoreV1().Pods("ns").Get(ctx, "p", metav1.GetOptions{}); err != nil {
		t.Fatalf("after StartAPIServer: %v", err)
	}

	// RBAC applies to impersonated users: a ServiceAccount without roles
	// may not list pods.
	sa := kubernetes.NewForConfigOrDie(restConfigOf(t, k.WriteKubeconfig(t, ServiceAccountUser("ns", "nobody"), ServiceAccountGroups("ns")...)))
	if _, err := sa.CoreV1().Pods("ns").List(ctx, metav1.ListOptions{}); err == nil {
		t.Error("a ServiceAccount without roles listed pods")
	}
}
