package httpapi

import (
	"bytes"
	"encoding/json"
	"html/template"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

// wantsHTML reports whether the client asked for HTML before JSON, as a
// browser does; curl's */* and API clients get JSON.
func wantsHTML(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		switch mt {
		case "text/html", "application/xhtml+xml":
			return true
		case "application/json":
			return false
		}
	}
	return false
}

// renderHTML executes a page; html/template escapes every value, so label
// values, rules and error messages cannot inject markup.
func renderHTML(c echo.Context, page *template.Template, data any) error {
	var buf bytes.Buffer
	if err := page.Execute(&buf, data); err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	h.Set("X-Content-Type-Options", "nosniff")
	c.Response().WriteHeader(http.StatusOK)
	_, err := c.Response().Write(buf.Bytes())
	return err
}

const pageHead = `{{define "head"}}<!doctype html>
<html><head><meta charset="utf-8"><title>{{.}} · prometheus-multi-tenant-proxy</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}
code{font-size:.9em}
.bad{color:#b00020;font-weight:bold}.ok{color:#1b7f2a}
nav a{margin-right:1em}
</style></head><body>
<nav><a href="/debug/targets">targets</a><a href="/debug/tenants">tenants</a><a href="/metrics">metrics</a></nav>
<h1>{{.}}</h1>{{end}}`

var funcs = template.FuncMap{
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return time.Since(t).Round(time.Millisecond).String() + " ago"
	},
	"ms": func(d time.Duration) string { return d.Round(time.Microsecond).String() },
	"labels": func(m map[string]string) string {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + "=" + m[k]
		}
		return strings.Join(parts, ", ")
	},
}

var indexPage = template.Must(template.New("index").Funcs(funcs).Parse(pageHead + `{{template "head" "Debug"}}
<ul><li><a href="/debug/targets">Backend groups and replicas</a></li>
<li><a href="/debug/tenants">Tenants: MetricAccess objects and compiled rules</a></li>
<li><a href="/metrics">Metrics</a></li></ul></body></html>`))

var targetsPage = template.Must(template.New("targets").Funcs(funcs).Parse(pageHead + `{{template "head" "Backend targets"}}
{{if not .}}<p class="bad">No backend groups discovered.</p>{{else}}
<table><tr><th>Group</th><th>Source</th><th>Labels</th><th>Replica</th><th>Health</th><th>Last check</th><th>Latency</th><th>Last error</th></tr>
{{range $g := .}}{{range $i, $r := $g.Replicas}}<tr>
{{if eq $i 0}}<td rowspan="{{len $g.Replicas}}">{{$g.Group}}</td><td rowspan="{{len $g.Replicas}}">{{$g.Source}}</td><td rowspan="{{len $g.Replicas}}"><code>{{labels $g.Labels}}</code></td>{{end}}
<td><code>{{$r.URL}}</code></td>
<td>{{if $r.Healthy}}<span class="ok">healthy</span>{{else}}<span class="bad">unhealthy</span>{{end}}</td>
<td>{{ago $r.LastCheck}}</td><td>{{ms $r.Latency}}</td><td>{{$r.LastError}}</td></tr>
{{else}}<tr><td>{{$g.Group}}</td><td>{{$g.Source}}</td><td><code>{{labels $g.Labels}}</code></td><td colspan="5" class="bad">no replicas</td></tr>
{{end}}{{end}}</table>{{end}}
</body></html>`))

// tenantsView is /debug/tenants flattened for a table; Raw holds anything
// that is not the tenancy registry's view, shown as JSON.
type tenantsView struct {
	View       *tenancy.DebugView
	Namespaces []namespaceRow
	Raw        string
}

type namespaceRow struct {
	Name string
	tenancy.NamespaceView
}

func tenantsPageData(v any) tenantsView {
	dv, ok := v.(tenancy.DebugView)
	if !ok {
		b, _ := json.MarshalIndent(v, "", "  ")
		return tenantsView{Raw: string(b)}
	}
	out := tenantsView{View: &dv}
	for name, ns := range dv.Namespaces {
		out.Namespaces = append(out.Namespaces, namespaceRow{Name: name, NamespaceView: ns})
	}
	slices.SortFunc(out.Namespaces, func(a, b namespaceRow) int { return strings.Compare(a.Name, b.Name) })
	return out
}

var tenantsPage = template.Must(template.New("tenants").Funcs(funcs).Parse(pageHead + `{{template "head" "Tenants"}}
{{if .View}}{{with .View}}
<p>Generation {{.Generation}} · namespace label <code>{{.NamespaceLabel}}</code> ·
cross-namespace sources {{if .AllowCrossNamespaceSource}}allowed{{else}}refused{{end}} ·
admin namespaces: {{range $i, $n := .AdminNamespaces}}{{if $i}}, {{end}}<code>{{$n}}</code>{{else}}none{{end}}</p>
{{end}}
<h2>Namespaces</h2>
{{if not .Namespaces}}<p>No MetricAccess objects.</p>{{else}}
<table><tr><th>Namespace</th><th>Fingerprint</th><th>Rules (OR)</th><th>Objects</th></tr>
{{range .Namespaces}}<tr><td>{{.Name}}{{if .Admin}} (admin){{end}}</td><td><code>{{.Fingerprint}}</code></td>
<td>{{range .Rules}}<code>{{.}}</code><br>{{else}}<span class="bad">none: requests get 403</span>{{end}}</td>
<td>{{range .Objects}}{{.Name}} <small>({{.Source}}; spec.source <code>{{.Spec.Source}}</code>)</small><br>{{end}}</td></tr>
{{end}}</table>
<h2>Objects</h2>
<table><tr><th>Namespace</th><th>Object</th><th>spec.metrics</th><th>Label selectors</th><th>Rules</th><th>Problems</th></tr>
{{range $ns := .Namespaces}}{{range .Objects}}<tr><td>{{$ns.Name}}</td><td>{{.Name}}<br><small>{{.Source}}</small></td>
<td>{{range .Spec.Metrics}}<code>{{.}}</code><br>{{end}}</td><td><code>{{labels .Spec.LabelSelectors}}</code></td>
<td>{{range .Rules}}<code>{{.}}</code><br>{{end}}</td>
<td>{{range .Problems}}<span class="bad">{{if .Entry}}<code>{{.Entry}}</code>: {{end}}{{.Reason}}</span><br>{{end}}</td></tr>
{{end}}{{end}}</table>{{end}}
{{with .View.SourceProblems}}<h2>Source problems</h2>
<table><tr><th>Source</th><th>Object or file</th><th>Problem</th></tr>
{{range $src, $ps := .}}{{range $ps}}<tr><td>{{$src}}</td><td>{{.Object}}</td><td class="bad">{{.Reason}}</td></tr>{{end}}{{end}}</table>{{end}}
{{else}}<pre>{{.Raw}}</pre>{{end}}
</body></html>`))
