package tenancy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/bench/datagen"
)

const docA = `apiVersion: observability.ethos.io/v1alpha1
kind: MetricAccess
metadata:
  name: a
  namespace: team-a
spec:
  source: team-a
  metrics: [up]
`

const docB = `apiVersion: observability.ethos.io/v1alpha1
kind: MetricAccess
metadata:
  name: b
  namespace: team-b
  labels: {owner: b}
spec:
  source: team-b
  metrics:
    - memory_.*
    - '{job="team-b-api"}'
  labelSelectors:
    cluster: cluster-a
`

func TestParseFile(t *testing.T) {
	tests := []struct {
		name      string
		data      string
		wantNames []string
		wantErrs  int  // problems with single documents
		fileErr   bool // the file as a whole is unusable
	}{
		{name: "one document", data: docA, wantNames: []string{"team-a/a"}},
		{name: "several documents", data: docA + "---\n" + docB, wantNames: []string{"team-a/a", "team-b/b"}},
		{name: "leading, trailing and empty documents", data: "---\n" + docA + "---\n---\n# nothing\n---\n" + docB + "---\n", wantNames: []string{"team-a/a", "team-b/b"}},
		{name: "empty file", data: ""},
		{
			name:      "wrong kind is skipped",
			data:      strings.Replace(docA, "kind: MetricAccess", "kind: ConfigMap", 1) + "---\n" + docB,
			wantNames: []string{"team-b/b"}, wantErrs: 1,
		},
		{
			name:      "wrong apiVersion is skipped",
			data:      docB + "---\n" + strings.Replace(docA, "v1alpha1", "v1", 1),
			wantNames: []string{"team-b/b"}, wantErrs: 1,
		},
		{
			name:      "misspelt field is refused, not ignored",
			data:      strings.Replace(docB, "labelSelectors:", "labelSelector:", 1) + "---\n" + docA,
			wantNames: []string{"team-a/a"}, wantErrs: 1,
		},
		{
			name:     "wrong field type",
			data:     strings.Replace(docA, "metrics: [up]", "metrics: {up: 1}", 1),
			wantErrs: 1,
		},
		{
			name:     "a document that is a scalar",
			data:     "hello\n---\n" + docA,
			wantErrs: 1, wantNames: []string{"team-a/a"},
		},
		{name: "broken YAML", data: docA + "---\nspec: [unclosed\n", fileErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs, problems, err := parseFile("f.yaml", []byte(tc.data))
			if (err != nil) != tc.fileErr {
				t.Fatalf("err = %v, want file error %v", err, tc.fileErr)
			}
			var names []string
			for _, o := range objs {
				names = append(names, o.Key())
			}
			if !slices.Equal(names, tc.wantNames) {
				t.Errorf("objects %v, want %v", names, tc.wantNames)
			}
			if len(problems) != tc.wantErrs {
				t.Errorf("problems %v, want %d", problems, tc.wantErrs)
			}
			for _, p := range problems {
				if !errors.Is(p, ErrInvalidDocument) || !strings.HasPrefix(p.Object, "f.yaml#") {
					t.Errorf("problem %#v", p)
				}
			}
		})
	}

	objs, _, _ := parseFile("f.yaml", []byte(docB))
	b := objs[0]
	if b.Spec.Source != "team-b" || !slices.Equal(b.Spec.Metrics, []string{"memory_.*", `{job="team-b-api"}`}) ||
		b.Spec.LabelSelectors["cluster"] != "cluster-a" || b.Labels["owner"] != "b" ||
		b.APIVersion != APIVersion() || b.Kind != Kind {
		t.Errorf("decoded %+v", b)
	}
}

// TestExamples checks that examples/tenants grants exactly what it says.
func TestExamples(t *testing.T) {
	files, err := filepath.Glob("../examples/tenants/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example files: %v", err)
	}
	r := newTestRegistry(t, Config{AdminNamespaces: []string{"monitoring"}})
	var all []*MetricAccess
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, problems, err := parseFile(f, data)
		if err != nil || len(problems) > 0 {
			t.Fatalf("%s: %v %v", f, err, problems)
		}
		all = append(all, objs...)
	}
	r.Update("examples", all)
	for ns, view := range r.Debug().Namespaces {
		for _, o := range view.Objects {
			if len(o.Problems) > 0 {
				t.Errorf("%s/%s: %v", ns, o.Name, o.Problems)
			}
		}
	}

	// Every series of the generated test data, and who may see it.
	visible := func(l labels.Labels) []string {
		ns, metric := l.Get("namespace"), l.Get("__name__")
		var who []string
		switch ns {
		case "team-a":
			if strings.HasPrefix(metric, "http_") {
				who = append(who, "team-a")
			}
		case "team-b":
			if metric == "memory_usage_bytes" || metric == "node_cpu_seconds_total" {
				who = append(who, "team-b")
			}
		case "team-c":
			if l.Get("cluster") == "cluster-a" && (l.Get("job") == "api" || metric == "up") {
				who = append(who, "team-c")
			}
		}
		return append(who, "monitoring")
	}
	tenants := []string{"team-a", "team-b", "team-c", "monitoring", "nobody"}
	seen := map[string]int{}
	datagen.ForEachSeries(datagen.DefaultConfig(), func(series labels.Labels) {
		want := visible(series)
		for _, tenant := range tenants {
			p, err := r.Policy(tenant)
			got := err == nil && p.Matches(series)
			if got != slices.Contains(want, tenant) {
				t.Errorf("tenant %s sees %v: %v, want %v", tenant, series, got, !got)
			}
			if got {
				seen[tenant]++
			}
		}
	})
	for _, tenant := range []string{"team-a", "team-b", "team-c"} {
		if seen[tenant] < 20 {
			t.Errorf("tenant %s sees %d series of the test data; the example should grant a real share", tenant, seen[tenant])
		}
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	// Write then rename, as editors and ConfigMap updates do, so that a
	// scan never sees half a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// runFileSource starts a FileSource and returns a function that waits up to 5s
// for an update whose object keys are want.
func runFileSource(t *testing.T, globs []string, interval time.Duration) (*FileSource, func(want ...string)) {
	t.Helper()
	fs := NewFileSource(globs, interval, quietLogger())
	updates := make(chan []string, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		fs.Run(ctx, func(objs []*MetricAccess) {
			var keys []string
			for _, o := range objs {
				keys = append(keys, o.Key())
			}
			updates <- keys
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return fs, func(want ...string) {
		t.Helper()
		timeout := time.After(5 * time.Second)
		var last []string
		for {
			select {
			case got := <-updates:
				if slices.Equal(got, want) {
					return
				}
				last = got
			case <-timeout:
				t.Fatalf("no update with %v within 5s (last %v)", want, last)
			}
		}
	}
}

func TestFileSourceChanges(t *testing.T) {
	for _, tc := range []struct {
		name     string
		interval time.Duration
	}{
		{"file events", time.Hour}, // only fsnotify can see the changes in time
		{"events and polling", 200 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			a := filepath.Join(dir, "a.yaml")
			b := filepath.Join(dir, "b.yaml")
			writeFile(t, a, docA)
			writeFile(t, filepath.Join(dir, "ignored.txt"), docB)

			_, wait := runFileSource(t, []string{filepath.Join(dir, "*.yaml")}, tc.interval)
			wait("team-a/a")

			writeFile(t, b, docB) // create
			wait("team-a/a", "team-b/b")

			writeFile(t, a, strings.ReplaceAll(docA, "name: a", "name: a2")) // modify
			wait("team-a/a2", "team-b/b")

			if err := os.Remove(b); err != nil { // delete
				t.Fatal(err)
			}
			wait("team-a/a2")
		})
	}
}

func TestFileSourcePolling(t *testing.T) {
	// A directory that does not exist yet cannot be watched: polling finds it.
	dir := filepath.Join(t.TempDir(), "later")
	_, wait := runFileSource(t, []string{filepath.Join(dir, "*.yaml")}, 100*time.Millisecond)
	wait()
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "a.yaml"), docA)
	wait("team-a/a")
}

func TestFileSourceBadFiles(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.yaml")
	b := filepath.Join(dir, "b.yaml")
	writeFile(t, a, docA)
	writeFile(t, b, docB)
	fs, wait := runFileSource(t, []string{filepath.Join(dir, "*.yaml")}, 100*time.Millisecond)
	wait("team-a/a", "team-b/b")

	// b breaks: its last good content stays, a is untouched, b is reported.
	writeFile(t, b, "spec: [unclosed\n")
	waitFor(t, func() bool {
		ps := fs.Problems()
		return len(ps) == 1 && errors.Is(ps[0], ErrInvalidFile) && ps[0].Object == b
	})
	writeFile(t, a, strings.ReplaceAll(docA, "name: a", "name: a2"))
	wait("team-a/a2", "team-b/b")

	// A new file that is broken from the start grants nothing.
	writeFile(t, filepath.Join(dir, "c.yaml"), "kind: [")
	waitFor(t, func() bool { return len(fs.Problems()) == 2 })

	// b repaired with other content, c removed: problems clear.
	writeFile(t, b, strings.ReplaceAll(docB, "name: b", "name: b2"))
	wait("team-a/a2", "team-b/b2")
	if err := os.Remove(filepath.Join(dir, "c.yaml")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(fs.Problems()) == 0 })
}

func TestFileSourceWithRegistry(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.yaml"), docA)
	r := newTestRegistry(t, Config{Files: []string{filepath.Join(dir, "*.yaml")}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx, "files", NewFileSource([]string{filepath.Join(dir, "*.yaml")}, 100*time.Millisecond, quietLogger()))
	}()
	defer func() { cancel(); <-done }()

	waitFor(t, func() bool { _, err := r.Policy("team-a"); return err == nil && r.Ready() })
	if err := os.Remove(filepath.Join(dir, "a.yaml")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, err := r.Policy("team-a"); return errors.Is(err, ErrNoAccess) })
}
