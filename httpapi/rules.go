package httpapi

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/prometheus/util/annotations"
	v1 "github.com/prometheus/prometheus/web/api/v1"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/engine"
)

// rules answers /api/v1/rules from every group's rules, merged and filtered
// for the tenant (engine.RuleVisible).
func (s *Server) rules(c echo.Context) error {
	form := c.Request().Form
	flt := engine.RulesFilter{
		Type:       strings.ToLower(form.Get("type")),
		RuleNames:  form["rule_name[]"],
		RuleGroups: form["rule_group[]"],
		Files:      form["file[]"],
		NextToken:  form.Get("group_next_token"),
	}
	if flt.Type != "" && flt.Type != "alert" && flt.Type != "record" {
		return apiError(http.StatusBadRequest, errorBadData, fmt.Sprintf("invalid parameter \"type\": not supported value %q", flt.Type))
	}
	if v := form.Get("exclude_alerts"); v != "" {
		b, err := strconv.ParseBool(strings.ToLower(v))
		if err != nil {
			return apiError(http.StatusBadRequest, errorBadData, "invalid parameter \"exclude_alerts\": "+err.Error())
		}
		flt.ExcludeAlerts = b
	}
	if v := form.Get("group_limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return apiError(http.StatusBadRequest, errorBadData, "invalid parameter \"group_limit\": group_limit needs to be greater than 0")
		}
		flt.GroupLimit = n
	} else if flt.NextToken != "" {
		return apiError(http.StatusBadRequest, errorBadData, "invalid parameter \"group_next_token\": group_limit needs to be present in order to paginate over the groups")
	}
	p := engine.Parser()
	for _, m := range form["match[]"] {
		ms, err := p.ParseMetricSelector(m)
		if err != nil {
			return apiError(http.StatusBadRequest, errorBadData, fmt.Sprintf("invalid parameter \"match[]\": %v", err))
		}
		flt.Match = append(flt.Match, ms)
	}
	res, warns, err := s.opts.Fanout.Rules(c.Request().Context(), flt)
	if err != nil {
		if errors.Is(err, engine.ErrBadNextToken) {
			return apiError(http.StatusBadRequest, errorBadData, "invalid parameter \"group_next_token\": "+err.Error())
		}
		return fanoutError(err)
	}
	return promSuccess(c, res, warns)
}

// alerts answers /api/v1/alerts with the alerts the tenant may see
// (engine.AlertVisible).
func (s *Server) alerts(c echo.Context) error {
	res, warns, err := s.opts.Fanout.Alerts(c.Request().Context())
	if err != nil {
		return fanoutError(err)
	}
	return promSuccess(c, res, warns)
}

func fanoutError(err error) error {
	if ue := (*engine.UnavailableError)(nil); errors.As(err, &ue) {
		return apiError(http.StatusServiceUnavailable, errorUnavailable, err.Error())
	}
	return apiError(422, errorExec, err.Error())
}

// promSuccess writes data with Prometheus' own JSON codec, so times and
// labels are encoded exactly as Prometheus encodes them.
func promSuccess(c echo.Context, data any, warns annotations.Annotations) error {
	w, i := warns.AsStrings("", 10, 10)
	b, err := v1.JSONCodec{}.Encode(&v1.Response{Status: "success", Data: data, Warnings: w, Infos: i})
	if err != nil {
		return apiError(http.StatusInternalServerError, errorInternal, "encoding answer: "+err.Error())
	}
	c.Response().Header().Set(echo.HeaderContentType, "application/json")
	c.Response().WriteHeader(http.StatusOK)
	_, err = c.Response().Write(b)
	return err
}

// exemplars runs Prometheus' own /query_exemplars handler over the fan-out
// (engine.Fanout.ExemplarQuerier). Its querier interface cannot return
// warnings, so the fan-out leaves them in the context and they are added
// to the handler's success answer here.
func (s *Server) exemplars(c echo.Context) error {
	var warns annotations.Annotations
	r := c.Request()
	r = r.WithContext(engine.WithWarnings(r.Context(), &warns))
	// The answer is amended below, so it must come uncompressed.
	r.Header = r.Header.Clone()
	r.Header.Del("Accept-Encoding")
	rec := &bufferedResponse{header: http.Header{}, code: http.StatusOK}
	s.promAPI.ServeHTTP(rec, r)
	body := rec.body.Bytes()
	if w, i := warns.AsStrings("", 10, 10); rec.code == http.StatusOK && (len(w) > 0 || len(i) > 0) {
		body = appendWarnings(body, w, i)
	}
	for k, v := range rec.header {
		c.Response().Header()[k] = v
	}
	c.Response().Header().Del("Content-Length")
	c.Response().WriteHeader(rec.code)
	_, err := c.Response().Write(body)
	return err
}

// bufferedResponse keeps a handler's answer so it can be amended.
type bufferedResponse struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header         { return b.header }
func (b *bufferedResponse) WriteHeader(code int)        { b.code = code }
func (b *bufferedResponse) Write(p []byte) (int, error) { return b.body.Write(p) }

// appendWarnings adds "warnings" and "infos" to a JSON object answer.
func appendWarnings(body []byte, warns, infos []string) []byte {
	body = bytes.TrimRight(body, " \n")
	if len(body) == 0 || body[len(body)-1] != '}' {
		return body
	}
	b, err := v1.JSONCodec{}.Encode(&v1.Response{Warnings: warns, Infos: infos})
	if err != nil || len(b) < 2 {
		return body
	}
	// b is {"status":"","warnings":[...]...}; keep what follows "status".
	extra := b[bytes.IndexByte(b, ',')+1 : len(b)-1]
	out := append([]byte{}, body[:len(body)-1]...)
	out = append(out, ',')
	out = append(out, extra...)
	return append(out, '}')
}
