package operations

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image/png"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/e2e/e2eproxy"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil"
)

// cdp is a minimal Chrome DevTools protocol client for one page target.
type cdp struct {
	t    testing.TB
	ws   *websocket.Conn
	next int
}

func (c *cdp) call(method string, params any, result any) {
	c.t.Helper()
	c.next++
	id := c.next
	if err := websocket.JSON.Send(c.ws, map[string]any{"id": id, "method": method, "params": params}); err != nil {
		c.t.Fatalf("cdp %s: %v", method, err)
	}
	for {
		var msg struct {
			ID     int             `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		_ = c.ws.SetReadDeadline(time.Now().Add(30 * time.Second))
		if err := websocket.JSON.Receive(c.ws, &msg); err != nil {
			c.t.Fatalf("cdp %s: %v", method, err)
		}
		if msg.ID != id {
			continue // an event
		}
		if msg.Error != nil {
			c.t.Fatalf("cdp %s: %s", method, msg.Error.Message)
		}
		if result != nil {
			if err := json.Unmarshal(msg.Result, result); err != nil {
				c.t.Fatalf("cdp %s: %v", method, err)
			}
		}
		return
	}
}

// eval runs JavaScript in the page and decodes its (JSON-able) value.
func (c *cdp) eval(js string, into any) {
	c.t.Helper()
	var res struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	c.call("Runtime.evaluate", map[string]any{"expression": js, "returnByValue": true, "awaitPromise": true}, &res)
	if res.ExceptionDetails != nil {
		c.t.Fatalf("page script %q: %s", js, res.ExceptionDetails.Text)
	}
	if into != nil {
		if err := json.Unmarshal(res.Result.Value, into); err != nil {
			c.t.Fatalf("page script %q: %v: %s", js, err, res.Result.Value)
		}
	}
}

func (c *cdp) waitTrue(what, js string) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var ok bool
		c.eval("Boolean("+js+")", &ok)
		if ok {
			return
		}
		if time.Now().After(deadline) {
			var body string
			c.eval("document.body ? document.body.innerText : ''", &body)
			c.t.Fatalf("page: %s did not happen within 30s; page text:\n%s", what, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// typeInto focuses the element and types text as keyboard input would.
func (c *cdp) typeInto(id, text string) {
	c.t.Helper()
	c.eval(fmt.Sprintf("document.getElementById(%q).focus()", id), nil)
	c.call("Input.insertText", map[string]any{"text": text}, nil)
}

// click sends a real mouse click to the middle of the element.
func (c *cdp) click(id string) {
	c.t.Helper()
	var box struct{ X, Y float64 }
	c.eval(fmt.Sprintf("(() => { const e = document.getElementById(%q); e.scrollIntoView(); const r = e.getBoundingClientRect(); return {X: r.x + r.width/2, Y: r.y + r.height/2}; })()", id), &box)
	for _, typ := range []string{"mousePressed", "mouseReleased"} {
		c.call("Input.dispatchMouseEvent", map[string]any{"type": typ, "x": box.X, "y": box.Y, "button": "left", "clickCount": 1}, nil)
	}
}

func chromiumBinary(t testing.TB) string {
	t.Helper()
	for _, name := range []string{os.Getenv("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no headless browser: install Debian's chromium (make deps does: scripts/apt-install-no-start.sh chromium) or set CHROMIUM")
	return ""
}

// startBrowser starts headless chromium and connects to its first page.
func startBrowser(t *testing.T) *cdp {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, chromiumBinary(t), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
		"--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "--remote-allow-origins=*",
		"--user-data-dir="+filepath.Join(dir, "profile"), "--window-size=1200,1800", "about:blank")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("chromium: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("chromium output:\n%s", e2eproxy.Clip(logs.Bytes()))
		}
	})
	var port string
	e2eproxy.WaitFor(t, 30*time.Second, "chromium's DevToolsActivePort", func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "profile", "DevToolsActivePort"))
		if err != nil {
			return false
		}
		port, _, _ = strings.Cut(string(b), "\n")
		return port != ""
	})
	var wsURL string
	e2eproxy.WaitFor(t, 30*time.Second, "a chromium page target", func() bool {
		resp, err := http.Get("http://127.0.0.1:" + port + "/json/list")
		if err != nil {
			return false
		}
		defer func() { _ = resp.Body.Close() }()
		var targets []struct{ Type, WebSocketDebuggerURL string }
		if json.NewDecoder(resp.Body).Decode(&targets) != nil {
			return false
		}
		for _, tg := range targets {
			if tg.Type == "page" {
				wsURL = tg.WebSocketDebuggerURL
				return true
			}
		}
		return false
	})
	ws, err := websocket.Dial(wsURL, "", "http://127.0.0.1/")
	if err != nil {
		t.Fatalf("chromium devtools: %v", err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	return &cdp{t: t, ws: ws}
}

// artifactDir is where the page's screenshot is kept after the test: a
// gitignored folder of the repository (or $TEST_ARTIFACTS).
func artifactDir(t testing.TB) string {
	dir := os.Getenv("TEST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(e2eutil.RepoRoot(t), ".artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// testBrowserPage drives the page at / in headless chromium as team-a:
// type the token, see who we are, our rules and metric names, run a range
// query and read the table and the graph. Nothing of team-b may show.
func testBrowserPage(t *testing.T, w *alertingWorld) {
	c := startBrowser(t)
	c.call("Page.enable", nil, nil)
	c.call("Page.navigate", map[string]any{"url": w.proxy.URL + "/"}, nil)
	c.waitTrue("page loaded", `document.readyState === "complete" && document.getElementById("token")`)
	c.typeInto("token", w.tokens["team-a"])
	c.click("signin")
	c.waitTrue("who-am-I shown", `document.getElementById("whoami").innerText.includes("team-a")`)
	c.waitTrue("metric names listed", `document.querySelectorAll("#metrics li").length > 0`)

	var page struct {
		Who, Rules string
		Metrics    []string
	}
	c.eval(`({Who: document.getElementById("whoami").innerText, Rules: document.getElementById("rules").innerText,
		Metrics: [...document.querySelectorAll("#metrics li")].map(e => e.textContent)})`, &page)
	if !strings.Contains(page.Who, "jwt") || !strings.Contains(page.Who, "user-team-a") {
		t.Errorf("who am I does not say how team-a authenticated:\n%s", page.Who)
	}
	if !strings.Contains(page.Rules, `namespace="team-a"`) || !strings.Contains(page.Rules, "{bad") {
		t.Errorf("rules table lacks team-a's rules or the invalid entry with its reason:\n%s", page.Rules)
	}
	_, body := w.get(t, w.proxy.URL, "/api/v1/status/tenant", nil, w.tokens["team-a"])
	var st struct {
		Data struct {
			MetricNames []string `json:"metricNames"`
		} `json:"data"`
	}
	_ = json.Unmarshal(body, &st)
	if !slices.Equal(page.Metrics, st.Data.MetricNames) || !slices.Contains(page.Metrics, "app_queue_depth") {
		t.Errorf("page lists metric names %v, status says %v", page.Metrics, st.Data.MetricNames)
	}

	const query = "app_queue_depth"
	c.typeInto("query", query)
	c.eval(`document.getElementById("range").value = "900"`, nil)
	// Ten seconds back, so that no sample of the window arrives between the
	// page's query and the test's own.
	end := time.Now().Unix() - 10
	c.eval(fmt.Sprintf(`document.getElementById("end").value = "%d"`, end), nil)
	c.click("run")
	c.waitTrue("query answered", `document.body.dataset.query === "done" || document.body.dataset.query === "failed"`)

	var shown struct {
		Rows   []string
		Points []string
		Graph  []struct{ Name, Points string }
		Error  string
		Text   string
	}
	c.eval(`({Rows: [...document.querySelectorAll("#result tbody tr.series")].map(r => r.cells[0].textContent),
		Points: [...document.querySelectorAll("#result tbody tr.series")].map(r => r.dataset.points),
		Graph: [...document.querySelectorAll("#graph .series")].map(e => ({Name: e.dataset.name, Points: e.dataset.points})),
		Error: document.getElementById("error").hidden ? "" : document.getElementById("error").textContent,
		Text: document.body.innerText})`, &shown)
	if shown.Error != "" {
		t.Fatalf("page shows an error: %s", shown.Error)
	}

	// What the API answers the same query with, with the same token.
	step := int(math.Round(900.0 / 250)) // as the page picks it
	_, body = w.get(t, w.proxy.URL, "/api/v1/query_range", url.Values{"query": {query}, "start": {strconv.FormatInt(end-900, 10)}, "end": {strconv.FormatInt(end, 10)}, "step": {strconv.Itoa(step)}}, w.tokens["team-a"])
	var qr struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Values [][2]any          `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &qr); err != nil || len(qr.Data.Result) < 2 {
		t.Fatalf("query_range for the page: %v %s", err, e2eproxy.Clip(body))
	}
	var want, wantPoints []string
	for _, s := range qr.Data.Result {
		var parts []string
		for k, v := range s.Metric {
			if k != "__name__" {
				parts = append(parts, k+"="+strconv.Quote(v))
			}
		}
		sort.Strings(parts)
		want = append(want, s.Metric["__name__"]+"{"+strings.Join(parts, ", ")+"}")
		wantPoints = append(wantPoints, strconv.Itoa(len(s.Values)))
	}
	if !slices.Equal(shown.Rows, want) || !slices.Equal(shown.Points, wantPoints) {
		t.Errorf("table shows %v (points %v), the API answers %v (points %v)", shown.Rows, shown.Points, want, wantPoints)
	}
	if len(shown.Graph) != len(want) {
		t.Errorf("graph draws %d series, want %d", len(shown.Graph), len(want))
	}
	for i, g := range shown.Graph {
		if i < len(want) && (g.Name != want[i] || g.Points != wantPoints[i]) {
			t.Errorf("graph series %d is %s with %s points, want %s with %s", i, g.Name, g.Points, want[i], wantPoints[i])
		}
		if n, _ := strconv.Atoi(g.Points); n < 2 {
			t.Errorf("graph series %s has %s points: not a line", g.Name, g.Points)
		}
	}
	for _, foreign := range []string{"team-b", "team-c", "pager", "shared", "TeamBQueueHuge"} {
		if strings.Contains(shown.Text, foreign) {
			t.Errorf("team-a's page shows %q:\n%s", foreign, shown.Text)
		}
	}

	var shot struct{ Data string }
	c.call("Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true}, &shot)
	img, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(img))
	if err != nil || cfg.Width < 800 || cfg.Height < 600 {
		t.Errorf("screenshot is not a page-sized PNG: %v %dx%d", err, cfg.Width, cfg.Height)
	}
	path := filepath.Join(artifactDir(t), "page-team-a.png")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the page: %s (%d bytes)", path, len(img))
}

// testTenantStatus: /api/v1/status/tenant tells a tenant about itself only.
func testTenantStatus(t *testing.T, w *alertingWorld) {
	// The oracle's metric names: those of the reference's series team-a sees.
	_, body := w.get(t, w.reference.URL, "/api/v1/series", url.Values{"match[]": {`{__name__=~".+"}`}}, "")
	var series struct {
		Data []map[string]string `json:"data"`
	}
	_ = json.Unmarshal(body, &series)
	names := map[string]bool{}
	for _, s := range series.Data {
		if visibleTo["team-a"](s) {
			names[s["__name__"]] = true
		}
	}
	var want []string
	for n := range names {
		want = append(want, n)
	}
	sort.Strings(want)

	code, body := w.get(t, w.proxy.URL, "/api/v1/status/tenant", nil, w.tokens["team-a"])
	var st struct {
		Status string
		Data   struct {
			Namespace      string
			Authentication string
			Subject        string
			Admin          bool
			Rules          []string
			Objects        []struct {
				Name     string
				Problems []struct{ Entry, Reason string }
			}
			MetricNames []string `json:"metricNames"`
			Links       []string
		}
	}
	if err := json.Unmarshal(body, &st); err != nil || code != 200 {
		t.Fatalf("status/tenant: HTTP %d %v %s", code, err, body)
	}
	d := st.Data
	if d.Namespace != "team-a" || d.Authentication != "jwt" || d.Subject != "jwt:user-team-a" || d.Admin || len(d.Links) != 0 {
		t.Errorf("who am I: %s", body)
	}
	if len(d.Rules) != 3 || len(d.Objects) != 1 || len(d.Objects[0].Problems) != 1 || d.Objects[0].Problems[0].Entry != "{bad" || d.Objects[0].Problems[0].Reason == "" {
		t.Errorf("rules and problems: %s", body)
	}
	if !slices.Equal(d.MetricNames, want) || len(want) < 2 {
		t.Errorf("metric names %v, oracle %v", d.MetricNames, want)
	}
	for _, foreign := range []string{"team-b", "pager", "team-c"} {
		if strings.Contains(string(body), foreign) {
			t.Errorf("team-a's status mentions %q: %s", foreign, body)
		}
	}
	_, body = w.get(t, w.proxy.URL, "/api/v1/status/tenant", nil, w.tokens["admin"])
	if !strings.Contains(string(body), `"/debug/targets"`) {
		t.Errorf("an admin gets no links to /debug: %s", body)
	}
	if code, _ := w.get(t, w.proxy.URL, "/api/v1/status/tenant", nil, ""); code != 401 {
		t.Errorf("status/tenant without credentials: HTTP %d, want 401", code)
	}
	// The page itself needs no credentials: it asks for them.
	resp, err := http.Get(w.proxy.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || resp.Header.Get("Content-Security-Policy") == "" {
		t.Errorf("GET /: HTTP %d %s, CSP %q", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Security-Policy"))
	}
}
