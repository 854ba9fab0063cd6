package httpapi

import (
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/admission"
)

// listingPaths are the routes that list what exists (names, values,
// series, metadata) instead of evaluating a query. Without a time range
// Prometheus reads all time for them, which over remote backends means
// every series a tenant ever had.
var listingPaths = map[string]bool{
	"/api/v1/labels":             true,
	"/api/v1/label/:name/values": true,
	"/api/v1/series":             true,
	"/api/v1/metadata":           true,
	"/api/v1/status/tenant":      true,
}

// rangeKey holds the [start, end] a listing request reads, once resolved.
const rangeKey = "proxy.range"

// listingRange resolves the time range of a listing request: a missing end
// is now, a missing start is end minus the tenant's default_label_window.
// The resolved values are written back into the form, so Prometheus' own
// handlers read the same range. ok is false when the range stays all time
// (no window configured and none asked for).
func listingRange(form url.Values, window time.Duration, now time.Time) (start, end time.Time, ok bool, err error) {
	hasStart, hasEnd := form.Get("start") != "", form.Get("end") != ""
	if !hasStart && !hasEnd && window <= 0 {
		return time.Time{}, time.Time{}, false, nil
	}
	end = now
	if hasEnd {
		if end, err = parseTime(form.Get("end")); err != nil {
			return start, end, false, apiError(http.StatusBadRequest, errorBadData, "invalid parameter \"end\": "+err.Error())
		}
	}
	if !hasStart {
		if window <= 0 {
			// An end alone reads from the beginning, as in Prometheus.
			return time.Time{}, end, false, nil
		}
		start = end.Add(-window)
		form.Set("start", formatTime(start))
	} else if start, err = parseTime(form.Get("start")); err != nil {
		return start, end, false, apiError(http.StatusBadRequest, errorBadData, "invalid parameter \"start\": "+err.Error())
	}
	if !hasEnd {
		form.Set("end", formatTime(end))
	}
	return start, end, true, nil
}

// parseTime reads a time as Prometheus' API does: Unix seconds, possibly
// fractional, or RFC 3339.
func parseTime(s string) (time.Time, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f) > 1<<40 {
			return time.Time{}, strconv.ErrRange
		}
		sec, frac := math.Modf(f)
		return time.Unix(int64(sec), int64(math.Round(frac*1e9))).UTC(), nil
	}
	return time.Parse(time.RFC3339Nano, s)
}

func formatTime(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', 3, 64)
}

// admitListing bounds a listing request's time range before it reads
// anything: the default window when it names none, max_query_length on
// what it names. Prometheus' own minimum and maximum times (what its
// clients send for "all") count as the span they are.
func (s *Server) admitListing(c echo.Context, label string, limits admission.Limits) error {
	if !listingPaths[c.Path()] {
		return nil
	}
	start, end, ok, err := listingRange(c.Request().Form, limits.LabelWindow(), time.Now())
	if err != nil {
		return err
	}
	if !ok {
		return nil
	}
	if err := admission.CheckRange(limits, start, end); err != nil {
		return s.limitError(c, label, err)
	}
	c.Set(rangeKey, [2]time.Time{start, end})
	return nil
}

// requestRange is the range admitListing resolved, in milliseconds; all
// time when there is none.
func requestRange(c echo.Context) (mint, maxt int64) {
	if r, ok := c.Get(rangeKey).([2]time.Time); ok {
		return r[0].UnixMilli(), r[1].UnixMilli()
	}
	return math.MinInt64, math.MaxInt64
}
