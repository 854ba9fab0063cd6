// The proxy's page for people: who am I, my rules, my metric names, and a
// query box with a table and a graph. Plain DOM and SVG; every call goes to
// this proxy's own API with the credentials typed in (kept for this tab only).
"use strict";

const $ = (id) => document.getElementById(id);
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

function headers() {
  const h = {};
  const tok = sessionStorage.getItem("token") || "";
  const ns = sessionStorage.getItem("namespace") || "";
  if (tok) h["Authorization"] = "Bearer " + tok;
  if (ns) h["X-Tenant-Namespace"] = ns;
  return h;
}

async function api(path, params) {
  const opts = { headers: headers() };
  if (params) {
    opts.method = "POST";
    opts.headers["Content-Type"] = "application/x-www-form-urlencoded";
    opts.body = new URLSearchParams(params).toString();
  }
  const resp = await fetch(path, opts);
  let body;
  try { body = await resp.json(); } catch (e) { throw new Error(path + ": HTTP " + resp.status); }
  if (body.status !== "success") throw new Error(body.error || ("HTTP " + resp.status));
  return body;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function showError(err) {
  $("error").textContent = err ? String(err.message || err) : "";
  $("error").hidden = !err;
}

function row(tbody, cells, cls) {
  const tr = el("tr", undefined, cls);
  for (const c of cells) tr.appendChild(el("td", c));
  tbody.appendChild(tr);
  return tr;
}

async function loadStatus() {
  const st = (await api("/api/v1/status/tenant")).data;
  const who = $("whoami");
  who.replaceChildren();
  const facts = [
    ["namespace", st.namespace || (st.admin ? "(all: admin)" : "")],
    ["authenticated by", st.authentication],
    ["subject", st.subject || ""],
    ["admin", st.admin ? "yes" : "no"],
    ["tenancy", st.tenancy ? "on" : "off: every request sees everything"],
  ];
  for (const [k, v] of facts) { who.appendChild(el("dt", k)); who.appendChild(el("dd", v)); }
  const links = $("links");
  links.replaceChildren();
  for (const l of st.links || []) {
    const a = el("a", l); a.href = l;
    const li = el("li"); li.appendChild(a); links.appendChild(li);
  }
  const tb = $("rules").tBodies[0];
  tb.replaceChildren();
  for (const o of st.objects) {
    for (const r of o.rules) row(tb, [o.name, "", r, ""], "rule");
    for (const p of o.problems) row(tb, [o.name, p.entry || "(whole object)", "", p.reason], "problem");
  }
  if (st.objects.length === 0) {
    for (const r of st.rules) row(tb, ["", "", r, ""], "rule");
    if (st.rules.length === 0) row(tb, ["", "", st.admin ? "everything (admin)" : "nothing", ""]);
  }
  const ul = $("metrics");
  ul.replaceChildren();
  for (const n of st.metricNames) ul.appendChild(el("li", n));
  $("metric-count").textContent = "(" + st.metricNames.length + (st.metricNamesTruncated ? "+" : "") + ")";
}

function seriesName(metric) {
  const name = metric.__name__ || "";
  const rest = Object.keys(metric).filter((k) => k !== "__name__").sort()
    .map((k) => k + "=" + JSON.stringify(metric[k]));
  return name + "{" + rest.join(", ") + "}";
}

async function runQuery() {
  const q = $("query").value.trim();
  if (!q) return;
  const rangeSec = Number($("range").value);
  const endText = $("end").value.trim();
  const end = endText === "" || endText === "now" ? Date.now() / 1000 : Number(endText);
  let body;
  if (rangeSec > 0) {
    const step = Math.max(1, Math.round(rangeSec / 250));
    body = await api("/api/v1/query_range", { query: q, start: String(end - rangeSec), end: String(end), step: String(step) });
  } else {
    body = await api("/api/v1/query", { query: q, time: String(end) });
  }
  const w = (body.warnings || []).concat(body.infos || []);
  $("warnings").textContent = w.join("; ");
  $("warnings").hidden = w.length === 0;
  render(body.data, rangeSec > 0 ? [end - rangeSec, end] : null);
}

function render(data, window) {
  const tb = $("result").tBodies[0];
  tb.replaceChildren();
  let series = [];
  if (data.resultType === "matrix") {
    series = data.result.map((s) => ({ name: seriesName(s.metric), points: s.values.map(([t, v]) => [t, Number(v)]) }));
  } else if (data.resultType === "vector") {
    series = data.result.map((s) => ({ name: seriesName(s.metric), points: [[s.value[0], Number(s.value[1])]] }));
  } else if (data.resultType === "scalar" || data.resultType === "string") {
    series = [{ name: data.resultType, points: [[data.result[0], Number(data.result[1])]] }];
  }
  series.forEach((s, i) => {
    const last = s.points.length ? s.points[s.points.length - 1][1] : NaN;
    const tr = row(tb, [s.name, String(last)], "series");
    const sw = el("span", undefined, "swatch");
    sw.style.background = COLORS[i % COLORS.length];
    tr.firstChild.prepend(sw);
    tr.dataset.points = String(s.points.length);
  });
  if (series.length === 0) row(tb, ["no data", ""]);
  drawGraph(series, window);
}

const SVGNS = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const e = document.createElementNS(SVGNS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  return e;
}

function drawGraph(series, window) {
  const g = $("graph");
  g.replaceChildren();
  const W = 900, H = 300, L = 60, R = 10, T = 10, B = 25;
  const pts = series.flatMap((s) => s.points).filter((p) => isFinite(p[1]));
  if (pts.length === 0) return;
  let [x0, x1] = window || [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  let y0 = Math.min(0, ...pts.map((p) => p[1])), y1 = Math.max(...pts.map((p) => p[1]));
  if (y1 === y0) y1 = y0 + 1;
  const sx = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
  const sy = (y) => H - B - (y - y0) / (y1 - y0) * (H - T - B);
  g.appendChild(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#999", class: "axis" }));
  g.appendChild(svg("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#999", class: "axis" }));
  const label = (x, y, text, anchor) => { const t = svg("text", { x, y, "text-anchor": anchor }); t.textContent = text; g.appendChild(t); };
  label(L - 4, T + 10, fmt(y1), "end");
  label(L - 4, H - B, fmt(y0), "end");
  label(L, H - 8, new Date(x0 * 1000).toISOString().slice(0, 19) + "Z", "start");
  label(W - R, H - 8, new Date(x1 * 1000).toISOString().slice(0, 19) + "Z", "end");
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const ok = s.points.filter((p) => isFinite(p[1]));
    if (ok.length === 1) {
      g.appendChild(svg("circle", { cx: sx(ok[0][0]), cy: sy(ok[0][1]), r: 3, fill: color, class: "series", "data-name": s.name, "data-points": 1 }));
      return;
    }
    const d = ok.map((p, j) => (j ? "L" : "M") + sx(p[0]).toFixed(1) + " " + sy(p[1]).toFixed(1)).join(" ");
    g.appendChild(svg("path", { d, fill: "none", stroke: color, "stroke-width": 1.5, class: "series", "data-name": s.name, "data-points": ok.length }));
  });
}

function fmt(v) { return Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-2 && v !== 0) ? v.toExponential(2) : String(Math.round(v * 1000) / 1000); }

async function refresh() {
  showError(null);
  try { await loadStatus(); } catch (e) { showError(e); }
}

document.addEventListener("DOMContentLoaded", () => {
  $("token").value = sessionStorage.getItem("token") || "";
  $("namespace").value = sessionStorage.getItem("namespace") || "";
  $("auth").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem("token", $("token").value.trim());
    sessionStorage.setItem("namespace", $("namespace").value.trim());
    refresh();
  });
  $("queryform").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showError(null);
    document.body.dataset.query = "running";
    try { await runQuery(); document.body.dataset.query = "done"; } catch (e) { showError(e); document.body.dataset.query = "failed"; }
  });
  refresh();
});
