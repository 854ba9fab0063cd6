package remote

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"time"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	v1 "github.com/prometheus/prometheus/web/api/v1"
)

// ruleGroupJSON is one group of /api/v1/rules as a backend sends it; its
// rules are decoded by their "type" into Prometheus' own v1 types.
type ruleGroupJSON struct {
	Name           string            `json:"name"`
	File           string            `json:"file"`
	Rules          []json.RawMessage `json:"rules"`
	Interval       float64           `json:"interval"`
	Limit          int               `json:"limit"`
	EvaluationTime float64           `json:"evaluationTime"`
	LastEvaluation time.Time         `json:"lastEvaluation"`
}

// Rules asks /api/v1/rules for every rule group with its alerts. Filters
// are applied by the caller, so backends of any version answer alike.
// Each rule is a v1.AlertingRule or a v1.RecordingRule.
func (c *Client) Rules(ctx context.Context) ([]*v1.RuleGroup, Warnings, error) {
	var data struct {
		Groups []ruleGroupJSON `json:"groups"`
	}
	w, err := c.apiGet(ctx, "/api/v1/rules", nil, &data)
	if err != nil {
		return nil, w, err
	}
	out := make([]*v1.RuleGroup, 0, len(data.Groups))
	for _, g := range data.Groups {
		rg := &v1.RuleGroup{Name: g.Name, File: g.File, Interval: g.Interval, Limit: g.Limit,
			EvaluationTime: g.EvaluationTime, LastEvaluation: g.LastEvaluation, Rules: make([]v1.Rule, 0, len(g.Rules))}
		for _, raw := range g.Rules {
			r, err := decodeRule(raw)
			if err != nil {
				return nil, w, fmt.Errorf("backend %s: /api/v1/rules: group %q: %w: %w", c.URL(), g.Name, ErrBadResponse, err)
			}
			rg.Rules = append(rg.Rules, r)
		}
		out = append(out, rg)
	}
	return out, w, nil
}

func decodeRule(raw json.RawMessage) (v1.Rule, error) {
	var kind struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(raw, &kind); err != nil {
		return nil, err
	}
	switch kind.Type {
	case "alerting":
		var r v1.AlertingRule
		if err := json.Unmarshal(raw, &r); err != nil {
			return nil, err
		}
		return &r, nil
	case "recording":
		var r v1.RecordingRule
		if err := json.Unmarshal(raw, &r); err != nil {
			return nil, err
		}
		return &r, nil
	default:
		return nil, fmt.Errorf("rule of unknown type %q", kind.Type)
	}
}

// Alerts asks /api/v1/alerts for every active alert.
func (c *Client) Alerts(ctx context.Context) ([]*v1.Alert, Warnings, error) {
	var data v1.AlertDiscovery
	w, err := c.apiGet(ctx, "/api/v1/alerts", nil, &data)
	return data.Alerts, w, err
}

// exemplarJSON is one exemplar as Prometheus' API encodes it: the value as
// a string, the timestamp in seconds.
type exemplarJSON struct {
	Labels    map[string]string `json:"labels"`
	Value     string            `json:"value"`
	Timestamp json.Number       `json:"timestamp"`
}

// Exemplars asks /api/v1/query_exemplars for the exemplars of series
// matching any of the matcher sets, between mint and maxt (milliseconds).
func (c *Client) Exemplars(ctx context.Context, mint, maxt int64, matcherSets [][]*labels.Matcher) ([]exemplar.QueryResult, Warnings, error) {
	var data []struct {
		SeriesLabels map[string]string `json:"seriesLabels"`
		Exemplars    []exemplarJSON    `json:"exemplars"`
	}
	p := timeRange(mint, maxt, url.Values{"query": {ExemplarQuery(matcherSets)}})
	w, err := c.apiCall(ctx, "/api/v1/query_exemplars", p, &data)
	if err != nil {
		return nil, w, err
	}
	out := make([]exemplar.QueryResult, 0, len(data))
	for _, d := range data {
		r := exemplar.QueryResult{SeriesLabels: labels.FromMap(d.SeriesLabels), Exemplars: make([]exemplar.Exemplar, 0, len(d.Exemplars))}
		for _, e := range d.Exemplars {
			v, err := strconv.ParseFloat(e.Value, 64)
			if err != nil {
				return nil, w, fmt.Errorf("backend %s: /api/v1/query_exemplars: %w: value %q", c.URL(), ErrBadResponse, e.Value)
			}
			ts, err := e.Timestamp.Float64()
			if err != nil {
				return nil, w, fmt.Errorf("backend %s: /api/v1/query_exemplars: %w: timestamp %q", c.URL(), ErrBadResponse, e.Timestamp)
			}
			r.Exemplars = append(r.Exemplars, exemplar.Exemplar{Labels: labels.FromMap(e.Labels), Value: v, Ts: int64(math.Round(ts * 1000)), HasTs: true})
		}
		out = append(out, r)
	}
	return out, w, nil
}

// ExemplarQuery is the PromQL a backend's exemplar endpoint is asked: each
// matcher set as a selector, joined by "or" (the endpoint only extracts the
// selectors of the expression).
func ExemplarQuery(matcherSets [][]*labels.Matcher) string {
	q := ""
	for i, ms := range matcherSets {
		if i > 0 {
			q += " or "
		}
		q += Selector(ms)
	}
	return q
}
