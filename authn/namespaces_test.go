package authn

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"k8s.io/client-go/rest"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

func TestParseNamespaces(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
		all  bool
		err  bool
	}{
		{in: ""},
		{in: "  "},
		{in: "team-a", want: []string{"team-a"}},
		{in: " team-a ", want: []string{"team-a"}},
		{in: "team-b,team-a", want: []string{"team-a", "team-b"}},
		{in: "team-a , team-b", want: []string{"team-a", "team-b"}},
		{in: "team-a,team-a,team-b", want: []string{"team-a", "team-b"}},
		{in: "*", all: true},
		{in: " * ", all: true},
		{in: "team-a,", err: true},
		{in: ",team-a", err: true},
		{in: "team-a,,team-b", err: true},
		{in: "team-a, ,team-b", err: true},
		{in: "team-a,*", err: true},
		{in: "a,b,c,d", err: true},
		{in: "a,b,c,a,b,c", want: []string{"a", "b", "c"}},
	} {
		got, all, err := ParseNamespaces(c.in, 3)
		if (err != nil) != c.err || all != c.all || !slices.Equal(got, c.want) {
			t.Errorf("%q: %v, all=%v, err=%v; want %v, all=%v, err=%v", c.in, got, all, err, c.want, c.all, c.err)
		}
		if err != nil && !errors.Is(err, ErrBadNamespaces) {
			t.Errorf("%q: %v does not wrap ErrBadNamespaces", c.in, err)
		}
	}
	if _, _, err := ParseNamespaces("a,b,c,d", 3); err == nil || !strings.Contains(err.Error(), "max_namespaces") {
		t.Errorf("too many: %v, want the limit named", err)
	}
}

// TestHeaderIdentifierList: the one trusted header may list namespaces;
// `*` needs someone who knows the caller; a repeated header stays refused.
func TestHeaderIdentifierList(t *testing.T) {
	h := HeaderIdentifier{MaxNamespaces: 2}
	id, err := h.Identify(requestWith(http.Header{TenantHeader: {"team-b, team-a"}}))
	if err != nil || !slices.Equal(id.Namespaces, []string{"team-a", "team-b"}) {
		t.Errorf("list: %v %v", id.Namespaces, err)
	}
	for name, hdr := range map[string]http.Header{
		"star":     {TenantHeader: {"*"}},
		"too many": {TenantHeader: {"a,b,c"}},
		"empty":    {TenantHeader: {"a,"}},
	} {
		if _, err := h.Identify(requestWith(hdr)); !errors.Is(err, ErrBadNamespaces) {
			t.Errorf("%s: err = %v, want ErrBadNamespaces", name, err)
		}
	}
	if _, err := h.Identify(requestWith(http.Header{TenantHeader: {"team-a", "team-b"}})); !errors.Is(err, ErrAmbiguous) {
		t.Errorf("repeated header: err = %v, want ErrAmbiguous", err)
	}
}

// TestReadableNamespacesBoundedAndClosed: more candidates than
// max_namespaces is refused before any review (never cut short), the
// caller's own namespaces cost no review, and an API server that cannot
// answer fails the whole set rather than dropping the namespaces it could
// not check.
func TestReadableNamespacesBoundedAndClosed(t *testing.T) {
	hang := e2eutil.Hang(t)
	cfg := typed(TypeKubernetes, func(c *Config) { c.MaxNamespaces, c.Kubernetes.Timeout = 2, model.Duration(300*time.Millisecond) })
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	idf, err := New(cfg, Options{KubeConfig: &rest.Config{Host: hang.URL}})
	if err != nil {
		t.Fatal(err)
	}
	k := idf.(*KubernetesIdentifier)
	id := Identity{Namespaces: []string{"team-a"}, User: UserInfo{Name: "system:serviceaccount:team-a:grafana"}, key: "k"}

	got, err := k.ReadableNamespaces(context.Background(), id, []string{"team-a"})
	if err != nil || !slices.Equal(got, []string{"team-a"}) || hang.Requests() != 0 {
		t.Errorf("own namespace only: %v %v, %d reviews; want [team-a] and none", got, err, hang.Requests())
	}
	_, err = k.ReadableNamespaces(context.Background(), id, []string{"team-a", "team-b", "team-c", "team-d"})
	if !errors.Is(err, ErrBadNamespaces) || !strings.Contains(err.Error(), "max_namespaces") || hang.Requests() != 0 {
		t.Errorf("three to review, bound 2: %v after %d reviews; want ErrBadNamespaces naming the key, no review", err, hang.Requests())
	}
	got, err = k.ReadableNamespaces(context.Background(), id, []string{"team-a", "team-b"})
	if !errors.Is(err, ErrUnavailable) || got != nil {
		t.Errorf("API server hanging: %v %v, want ErrUnavailable and nothing", got, err)
	}
}
