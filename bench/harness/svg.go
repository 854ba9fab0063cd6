package harness

import (
	"encoding/xml"
	"fmt"
	"math"
	"strings"
	"time"
)

func secondsDuration(s float64) time.Duration {
	return time.Duration(math.Round(s * float64(time.Second)))
}

// SVG draws p50 latency per query at concurrency 1: reference, the uncached
// proxy with push-down off, on, and on with re-associated sums, proxy cold and proxy warm (and the
// compared endpoint), as horizontal bars on a log scale, since warm answers
// are orders of magnitude faster than cold ones.
func (rep *Report) SVG() string {
	type series struct {
		name, phase, target, color string
	}
	cached := rep.cachedTarget()
	bars := []series{{"reference", PhaseUncached, TargetReference, "#4e79a7"}}
	if rep.hasTarget(TargetPushDown, PhaseUncached) {
		bars = append(bars,
			series{"proxy push-down off", PhaseUncached, TargetProxy, "#e15759"},
			series{"proxy push-down on", PhaseUncached, TargetPushDown, "#76b7b2"})
		if rep.hasTarget(TargetReassociate, PhaseUncached) {
			bars = append(bars, series{"proxy push-down on, reassociate", PhaseUncached, TargetReassociate, "#edc948"})
		}
	} else {
		bars = append(bars, series{"proxy uncached", PhaseUncached, TargetProxy, "#e15759"})
	}
	bars = append(bars,
		series{"proxy cold", PhaseCold, cached, "#f28e2b"},
		series{"proxy warm", PhaseWarm, cached, "#59a14f"})
	if rep.Settings.Compare != "" {
		bars = append(bars, series{"compare", PhaseUncached, TargetCompare, "#b07aa1"})
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, q := range rep.Queries {
		for _, s := range bars {
			if r, ok := q.result(s.phase, s.target, 1); ok && r.P50 > 0 {
				lo, hi = math.Min(lo, r.P50), math.Max(hi, r.P50)
			}
		}
	}
	if math.IsInf(lo, 0) {
		lo, hi = 1, 10
	}
	dlo, dhi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if dhi <= dlo {
		dhi = dlo + 1
	}

	const (
		width, left, right = 1100, 330, 70
		top, barH, gap     = 92, 8, 10
		plotW              = width - left - right
	)
	groupH := len(bars)*barH + gap
	height := top + len(rep.Queries)*groupH + 46
	x := func(ms float64) float64 {
		return left + (math.Log10(ms)-dlo)/(dhi-dlo)*plotW
	}

	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="Helvetica, Arial, sans-serif">`+"\n",
		width, height, width, height)
	w(`<rect width="100%%" height="100%%" fill="#ffffff"/>` + "\n")
	w(`<text x="%d" y="26" font-size="17" font-weight="bold">%s</text>`+"\n", 16,
		esc(fmt.Sprintf("p50 latency per query, concurrency 1 (log scale) — %d series, %s, %d shards",
			rep.Dataset.Series, durString(rep.Dataset.Hours*3600), rep.Dataset.Shards)))
	w(`<text x="%d" y="46" font-size="12" fill="#555555">%s</text>`+"\n", 16,
		esc(fmt.Sprintf("%s, %d CPUs; reference: one Prometheus holding all the data; push-down off/on/reassociate: uncached; cold: fresh caching proxy (push-down %s); warm: repeated",
			rep.Started.Format("2006-01-02"), rep.Machine.CPUs, map[bool]string{true: "on", false: "off"}[cached == TargetPushDown])))
	lx := 16
	for _, s := range bars {
		w(`<rect x="%d" y="58" width="14" height="10" fill="%s"/>`, lx, s.color)
		w(`<text x="%d" y="67" font-size="12">%s</text>`+"\n", lx+19, esc(s.name))
		lx += 34 + 7*len(s.name)
	}

	// Decade grid with labels above and below the plot.
	bottom := top + len(rep.Queries)*groupH
	for d := dlo; d <= dhi; d++ {
		gx := x(math.Pow(10, d))
		label := esc(decadeLabel(d))
		w(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#dddddd"/>`+"\n", gx, top-6, gx, bottom)
		w(`<text x="%.1f" y="%d" font-size="11" text-anchor="middle" fill="#555555">%s</text>`+"\n", gx, top-10, label)
		w(`<text x="%.1f" y="%d" font-size="11" text-anchor="middle" fill="#555555">%s</text>`+"\n", gx, bottom+16, label)
	}
	w(`<text x="%d" y="%d" font-size="11" text-anchor="middle" fill="#555555">latency (p50)</text>`+"\n", left+plotW/2, bottom+34)

	for i, q := range rep.Queries {
		y0 := top + i*groupH
		if i%2 == 1 {
			w(`<rect x="0" y="%d" width="%d" height="%d" fill="#f6f6f6"/>`+"\n", y0-gap/2, width, groupH)
		}
		w(`<text x="%d" y="%d" font-size="12" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n",
			left-8, y0+len(bars)*barH/2, esc(q.ID+" "+q.shortTitle()))
		for j, s := range bars {
			r, ok := q.result(s.phase, s.target, 1)
			if !ok || r.P50 <= 0 {
				continue
			}
			y := y0 + j*barH
			bw := math.Max(1, x(r.P50)-left)
			w(`<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"><title>%s</title></rect>`,
				left, y, bw, barH-1, s.color, esc(fmt.Sprintf("%s %s: %s ms", q.ID, s.name, formatMillis(r.P50))))
			w(`<text x="%.1f" y="%d" font-size="8" dominant-baseline="middle" fill="#333333">%s</text>`+"\n",
				left+bw+3, y+barH/2, esc(formatMillis(r.P50)))
		}
	}
	w("</svg>\n")
	return b.String()
}

func decadeLabel(d float64) string {
	ms := math.Pow(10, d)
	if ms >= 1000 {
		return fmt.Sprintf("%g s", ms/1000)
	}
	return fmt.Sprintf("%g ms", ms)
}

func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
