package app

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"

	config_util "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

// The documentation is checked against the code: docs/configuration.md has
// one reference row per key of Config, with the default an empty file
// gets; every relative link of the Markdown files leads somewhere; every
// `make <target>` they mention is a target of the Makefile.

// docsModule is the module path: structs of its packages are configuration
// sections whose keys are listed one by one; structs from elsewhere
// (Prometheus' HTTP client and TLS configurations) are one key each.
const docsModule = "github.com/ethos-io/prometheus-multi-tenant-proxy"

// docsKey is one key of the configuration file.
type docsKey struct {
	// path is dotted; "[]" follows a list of mappings
	// (discovery.static[].name) and "<>" stands for the names of a mapping
	// from names to mappings (limits.tenants.<>).
	path string
	// value is the key's value in the default configuration; invalid for
	// the keys of list entries, of which the default configuration has none.
	value reflect.Value
}

func docsLocalStruct(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && strings.HasPrefix(t.PkgPath(), docsModule)
}

// docsConfigKeys appends every key of the struct type t under prefix,
// depth first in field order: the order of the reference tables. v is the
// struct's value, or invalid.
func docsConfigKeys(prefix string, t reflect.Type, v reflect.Value, out *[]docsKey) {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := strings.Split(f.Tag.Get("yaml"), ",")
		name := tag[0]
		if name == "-" {
			continue
		}
		var fv reflect.Value
		if v.IsValid() {
			fv = v.Field(i)
		}
		if slices.Contains(tag[1:], "inline") && f.Type.Kind() == reflect.Struct {
			docsConfigKeys(prefix, f.Type, fv, out)
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name) // what the YAML decoder uses
		}
		path := name
		if prefix != "" {
			path = prefix + "." + name
		}
		ft := f.Type
		switch {
		case docsLocalStruct(ft):
			docsConfigKeys(path, ft, fv, out)
		case ft.Kind() == reflect.Pointer && docsLocalStruct(ft.Elem()):
			var ev reflect.Value
			if fv.IsValid() && !fv.IsNil() {
				ev = fv.Elem()
			}
			docsConfigKeys(path, ft.Elem(), ev, out)
		case ft.Kind() == reflect.Slice && docsLocalStruct(ft.Elem()):
			*out = append(*out, docsKey{path: path, value: fv})
			docsConfigKeys(path+"[]", ft.Elem(), reflect.Value{}, out)
		case ft.Kind() == reflect.Map && docsLocalStruct(ft.Elem()):
			*out = append(*out, docsKey{path: path + ".<>", value: fv})
		default:
			*out = append(*out, docsKey{path: path, value: fv})
		}
	}
}

// docsPlaceholder makes <namespace>, <name>, … one form.
var docsPlaceholder = regexp.MustCompile(`<[^<>]*>`)

func docsNormalize(path string) string { return docsPlaceholder.ReplaceAllString(path, "<>") }

var (
	docsDurationType   = reflect.TypeFor[model.Duration]()
	docsHTTPClientType = reflect.TypeFor[config_util.HTTPClientConfig]()
	docsTLSType        = reflect.TypeFor[config_util.TLSConfig]()
)

// docsRender writes a default the way the reference tables do: durations
// as Prometheus writes them, "" for the empty string, [] and {} for empty
// lists and mappings, lists of strings in flow style.
func docsRender(v reflect.Value) (string, error) {
	switch v.Type() {
	case docsDurationType:
		return v.Interface().(model.Duration).String(), nil
	case docsHTTPClientType:
		switch {
		case v.IsZero():
			return "{}", nil
		case reflect.DeepEqual(v.Interface(), config_util.DefaultHTTPClientConfig):
			return "{follow_redirects: true, enable_http2: true}", nil
		}
		return "", fmt.Errorf("no way to write the HTTP client configuration %+v", v.Interface())
	case docsTLSType:
		if v.IsZero() {
			return "{}", nil
		}
		return "", fmt.Errorf("no way to write the TLS configuration %+v", v.Interface())
	}
	switch v.Kind() {
	case reflect.Bool:
		return strconv.FormatBool(v.Bool()), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(v.Int(), 10), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.FormatUint(v.Uint(), 10), nil
	case reflect.Float32, reflect.Float64:
		return strconv.FormatFloat(v.Float(), 'g', -1, 64), nil
	case reflect.String:
		if v.String() == "" {
			return `""`, nil
		}
		return v.String(), nil
	case reflect.Slice:
		if v.Len() == 0 {
			return "[]", nil
		}
		if v.Type().Elem().Kind() == reflect.String {
			items := make([]string, v.Len())
			for i := range v.Len() {
				items[i] = v.Index(i).String()
			}
			return "[" + strings.Join(items, ", ") + "]", nil
		}
	case reflect.Map:
		if v.Len() == 0 {
			return "{}", nil
		}
	case reflect.Pointer:
		if v.IsNil() {
			return "{}", nil
		}
		return docsRender(v.Elem())
	}
	return "", fmt.Errorf("no way to write a %s default: %v", v.Type(), v.Interface())
}

// docsRow is one row of the reference tables.
type docsRow struct {
	line             int
	path, typ, deflt string
}

// docsRowRE matches a table row whose first cell is one code span; the
// second and third cells are the type and the default.
var docsRowRE = regexp.MustCompile("^\\|\\s*`([^`]+)`\\s*\\|([^|]*)\\|([^|]*)\\|")

// docsReference reads the rows under "## Reference" of docs/configuration.md,
// up to the next level-2 heading.
func docsReference(t *testing.T) []docsRow {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e2eutil.RepoRoot(t), "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	var rows []docsRow
	in := false
	for n, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "## ") {
			in = strings.TrimSpace(line) == "## Reference"
			continue
		}
		if !in {
			continue
		}
		if m := docsRowRE.FindStringSubmatch(line); m != nil {
			rows = append(rows, docsRow{line: n + 1, path: m[1], typ: strings.TrimSpace(m[2]), deflt: strings.TrimSpace(m[3])})
		}
	}
	if len(rows) == 0 {
		t.Fatal(`docs/configuration.md: no reference rows under "## Reference"`)
	}
	return rows
}

// docsDefaultKeys lists the keys of Config with their values in the
// configuration an empty file means (LoadConfig with no file).
func docsDefaultKeys(t *testing.T) []docsKey {
	t.Helper()
	cfg := DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the default configuration does not validate: %v", err)
	}
	var keys []docsKey
	docsConfigKeys("", reflect.TypeOf(cfg), reflect.ValueOf(cfg), &keys)
	return keys
}

// TestConfigReferenceListsEveryKey: a row for every key of the
// configuration, none for a key that does not exist, each key once, in the
// order of the structs' fields.
func TestConfigReferenceListsEveryKey(t *testing.T) {
	keys := docsDefaultKeys(t)
	index := map[string]int{}
	for i, k := range keys {
		index[k.path] = i
	}
	seen := map[string]int{}
	last := -1
	for _, r := range docsReference(t) {
		p := docsNormalize(r.path)
		if l, dup := seen[p]; dup {
			t.Errorf("docs/configuration.md:%d: %s has a row already (line %d)", r.line, r.path, l)
			continue
		}
		seen[p] = r.line
		i, ok := index[p]
		if !ok {
			t.Errorf("docs/configuration.md:%d: %s is not a key of the configuration", r.line, r.path)
			continue
		}
		if i < last {
			t.Errorf("docs/configuration.md:%d: %s is out of order: the reference follows the order of the configuration structs' fields", r.line, r.path)
		}
		last = i
	}
	for _, k := range keys {
		if _, ok := seen[k.path]; !ok {
			t.Errorf("docs/configuration.md has no reference row for %s", k.path)
		}
	}
}

// docsCodeSpan is the first code span of a table cell.
var docsCodeSpan = regexp.MustCompile("`([^`]*)`")

// TestConfigReferenceDefaults: every row's default is the one the code
// gives (the value after DefaultConfig and Validate, as an empty file
// gets). Keys of list entries are not compared: the default configuration
// has no entries.
func TestConfigReferenceDefaults(t *testing.T) {
	byPath := map[string]docsKey{}
	for _, k := range docsDefaultKeys(t) {
		byPath[k.path] = k
	}
	for _, r := range docsReference(t) {
		k, ok := byPath[docsNormalize(r.path)]
		if !ok || !k.value.IsValid() {
			continue // an unknown key is TestConfigReferenceListsEveryKey's
		}
		want, err := docsRender(k.value)
		if err != nil {
			t.Errorf("docs/configuration.md:%d: %s: %v", r.line, r.path, err)
			continue
		}
		got := r.deflt
		if m := docsCodeSpan.FindStringSubmatch(got); m != nil {
			got = m[1]
		}
		if got != want {
			t.Errorf("docs/configuration.md:%d: %s: the reference says the default is %s, the code's is %s", r.line, r.path, got, want)
		}
	}
}

// docsMarkdownFiles are the files whose links and make targets are checked.
func docsMarkdownFiles(t *testing.T, root string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no docs/*.md")
	}
	for _, name := range []string{"README.md", "CONTRIBUTING.md", "CHANGELOG.md"} {
		files = append(files, filepath.Join(root, name))
	}
	return files
}

// docsSplitFences returns a Markdown text's lines outside fenced code
// blocks (joined) and the lines inside them.
func docsSplitFences(text string) (prose string, code []string) {
	var out []string
	fenced := false
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			out = append(out, "") // keep line numbers
			continue
		}
		if fenced {
			code = append(code, line)
			out = append(out, "")
			continue
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n"), code
}

// docsSlug is the anchor GitHub gives a heading: lower case, letters,
// digits, '-' and '_' kept, spaces turned into '-', the rest dropped.
func docsSlug(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// docsAnchors lists the anchors of a Markdown file's headings, numbered
// as GitHub numbers repeated ones.
func docsAnchors(text string) map[string]bool {
	prose, _ := docsSplitFences(text)
	anchors := map[string]bool{}
	count := map[string]int{}
	for _, line := range strings.Split(prose, "\n") {
		level := len(line) - len(strings.TrimLeft(line, "#"))
		if level < 1 || level > 6 || !strings.HasPrefix(line[level:], " ") {
			continue
		}
		s := docsSlug(strings.TrimSpace(line[level:]))
		if n := count[s]; n > 0 {
			anchors[s+"-"+strconv.Itoa(n)] = true
		} else {
			anchors[s] = true
		}
		count[s]++
	}
	return anchors
}

var (
	// docsInlineCode is a code span (it may run over a line break);
	// Markdown makes no links inside one.
	docsInlineCode = regexp.MustCompile("`[^`]*`")
	docsLink       = regexp.MustCompile(`\[[^\]]*\]\(([^()\s]+)(?:\s+"[^"]*")?\)`)
	docsScheme     = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)
)

// TestDocsRelativeLinks: every relative link of README.md, CONTRIBUTING.md,
// CHANGELOG.md and docs/*.md names a file or directory that exists, and
// its #anchor, in a Markdown file, a heading there.
func TestDocsRelativeLinks(t *testing.T) {
	root := e2eutil.RepoRoot(t)
	anchorsOf := map[string]map[string]bool{}
	anchors := func(path string) (map[string]bool, error) {
		if a, ok := anchorsOf[path]; ok {
			return a, nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		anchorsOf[path] = docsAnchors(string(b))
		return anchorsOf[path], nil
	}
	for _, file := range docsMarkdownFiles(t, root) {
		rel, _ := filepath.Rel(root, file)
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		prose, _ := docsSplitFences(string(b))
		prose = docsInlineCode.ReplaceAllString(prose, "``")
		for _, m := range docsLink.FindAllStringSubmatch(prose, -1) {
			target := m[1]
			if docsScheme.MatchString(target) || strings.HasPrefix(target, "//") {
				continue // http:, https:, mailto:
			}
			path, frag, _ := strings.Cut(target, "#")
			dest := file
			if path != "" {
				dest = filepath.Join(filepath.Dir(file), filepath.FromSlash(path))
				if _, err := os.Stat(dest); err != nil {
					t.Errorf("%s: link %s: %s does not exist", rel, target, path)
					continue
				}
			}
			if frag == "" || !strings.HasSuffix(dest, ".md") {
				continue
			}
			a, err := anchors(dest)
			if err != nil {
				t.Errorf("%s: link %s: %v", rel, target, err)
				continue
			}
			if !a[frag] {
				t.Errorf("%s: link %s: no heading with the anchor #%s", rel, target, frag)
			}
		}
	}
}

var (
	// docsMakeSpan is `make <target>` in a code span of prose (the span may
	// break the line after "make"); docsMakeLine a command line in a fenced
	// block.
	docsMakeSpan = regexp.MustCompile("`make\\s+([A-Za-z0-9][A-Za-z0-9_.-]*)")
	docsMakeLine = regexp.MustCompile(`^\s*(?:\$\s+)?make\s+([A-Za-z0-9][A-Za-z0-9_.-]*)`)
	// docsMakeRule is a rule line of the Makefile: targets, a colon, and no
	// '=' after it (that would be an assignment, :=).
	docsMakeRule = regexp.MustCompile(`(?m)^([A-Za-z0-9][A-Za-z0-9_./-]*(?:[ \t]+[A-Za-z0-9][A-Za-z0-9_./-]*)*)[ \t]*:(?:[^=]|$)`)
)

// TestDocsMakeTargets: every `make <target>` that README.md,
// CONTRIBUTING.md, CHANGELOG.md and docs/*.md mention is a target of the
// Makefile.
func TestDocsMakeTargets(t *testing.T) {
	root := e2eutil.RepoRoot(t)
	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	targets := map[string]bool{}
	for _, m := range docsMakeRule.FindAllStringSubmatch(string(mk), -1) {
		for _, name := range strings.Fields(m[1]) {
			targets[name] = true
		}
	}
	for _, name := range []string{"demo", "test"} {
		if !targets[name] {
			t.Fatalf("Makefile: no target %q found; the rule parser is wrong", name)
		}
	}
	for _, file := range docsMarkdownFiles(t, root) {
		rel, _ := filepath.Rel(root, file)
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		prose, code := docsSplitFences(string(b))
		var mentioned []string
		for _, m := range docsMakeSpan.FindAllStringSubmatch(prose, -1) {
			mentioned = append(mentioned, m[1])
		}
		for _, line := range code {
			if m := docsMakeLine.FindStringSubmatch(line); m != nil {
				mentioned = append(mentioned, m[1])
			}
		}
		for _, name := range mentioned {
			if !targets[name] {
				t.Errorf("%s mentions `make %s`; the Makefile has no such target", rel, name)
			}
		}
	}
}
