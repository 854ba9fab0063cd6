package httpapi

import (
	"errors"
	"net/http"
	"runtime"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/engine"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/redact"
)

func goVersion() string { return runtime.Version() }

func (s *Server) health(c echo.Context) error {
	groups := s.opts.Backends.Groups()
	replicas, healthy := 0, 0
	for _, g := range groups {
		for _, r := range g.Replicas {
			replicas++
			if r.Healthy() {
				healthy++
			}
		}
	}
	return writeJSON(c, http.StatusOK, map[string]any{
		"status":           "ok",
		"version":          s.opts.Version,
		"uptime_seconds":   int(time.Since(s.started).Seconds()),
		"groups":           len(groups),
		"replicas":         replicas,
		"healthy_replicas": healthy,
	})
}

// ready answers 200 once discovery has delivered and every extra condition
// holds; otherwise 503 with the reason.
func (s *Server) ready(c echo.Context) error {
	var reasons []string
	if s.draining.Load() {
		reasons = append(reasons, "shutting down")
	}
	if !s.opts.Backends.Synced() {
		reasons = append(reasons, "backend discovery has not synced yet")
	} else if len(s.opts.Backends.Groups()) == 0 {
		reasons = append(reasons, "no backends discovered")
	}
	if s.opts.Ready != nil {
		if err := s.opts.Ready.Ready(); err != nil {
			reasons = append(reasons, err.Error())
		}
	}
	if len(reasons) > 0 {
		return writeJSON(c, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "reasons": reasons})
	}
	return writeJSON(c, http.StatusOK, map[string]any{"status": "ready"})
}

func (s *Server) debugTargets(c echo.Context) error {
	st := s.opts.Backends.Status()
	for i := range st {
		for j := range st[i].Replicas {
			st[i].Replicas[j].URL = redact.URL(st[i].Replicas[j].URL)
		}
	}
	if wantsHTML(c.Request()) {
		return renderHTML(c, targetsPage, st)
	}
	return writeJSON(c, http.StatusOK, st)
}

func (s *Server) debugTenants(c echo.Context) error {
	var v any = map[string]any{"tenancy": "disabled: no tenant source configured, every request sees everything"}
	if s.opts.Tenants != nil {
		v = s.opts.Tenants.Debug()
	}
	if wantsHTML(c.Request()) {
		return renderHTML(c, tenantsPage, tenantsPageData(v))
	}
	return writeJSON(c, http.StatusOK, withLimits(v, s.limitsDebug()))
}

func (s *Server) debugIndex(c echo.Context) error {
	if wantsHTML(c.Request()) {
		return renderHTML(c, indexPage, nil)
	}
	return writeJSON(c, http.StatusOK, map[string]any{"endpoints": []string{"/debug/targets", "/debug/tenants", "/metrics", "/health", "/ready"}})
}

type successBody struct {
	Status   string   `json:"status"`
	Data     any      `json:"data"`
	Warnings []string `json:"warnings,omitempty"`
	Infos    []string `json:"infos,omitempty"`
}

func success(c echo.Context, data any, warns annotations.Annotations) error {
	w, i := warns.AsStrings("", 10, 10)
	return writeJSON(c, http.StatusOK, successBody{Status: "success", Data: data, Warnings: w, Infos: i})
}

// metadata answers /api/v1/metadata from every backend's metadata, merged.
func (s *Server) metadata(c echo.Context) error {
	form := c.Request().Form
	limit, err := intParam(form.Get("limit"), "limit")
	if err != nil {
		return err
	}
	perMetric, err := intParam(form.Get("limit_per_metric"), "limit_per_metric")
	if err != nil {
		return err
	}
	mint, maxt := requestRange(c)
	md, warns, err := s.opts.Fanout.Metadata(c.Request().Context(), mint, maxt, form.Get("metric"), limit, perMetric)
	if err != nil {
		if ue := (*engine.UnavailableError)(nil); errors.As(err, &ue) {
			return apiError(http.StatusServiceUnavailable, errorUnavailable, err.Error())
		}
		return apiError(422, errorExec, err.Error())
	}
	return success(c, md, warns)
}

func intParam(v, name string) (int, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, apiError(http.StatusBadRequest, errorBadData, "invalid parameter \""+name+"\": "+err.Error())
	}
	return n, nil
}
