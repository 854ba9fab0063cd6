package engine

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/plan"
	"github.com/ethos-io/prometheus-multi-tenant-proxy/remote"
)

// partLabel marks, in a folded query's answer, which part a series
// answers. Names beginning with "__" are reserved; no stored series has it.
const partLabel = "__proxy_part__"

// foldedQuery is everything a plan asks of one group in one PromQL query,
// so that a pushed query costs each group one round trip however many
// fragments and probes it has: each part labelled by label_replace with
// its own partLabel value, the parts joined by `or` (their label sets
// differ in partLabel, so `or` keeps them all).
//
// A probe asks whether some series matching a selector has samples in the
// window the query reads. absent_over_time answers it without returning
// the series: the part is there when nothing matched. Its absence (found,
// or a part the backend did not answer) refuses the group, so anything
// unexpected errs on the side of evaluating in the proxy.
type foldedQuery struct {
	query string
	// fragments is the number of fragment parts, f0 … f<n-1>, in the
	// order given to foldGroup.
	fragments int
	// probes names the parts of the disjointness probe (plan.GroupQuery.Probe).
	probes []string
	// stored names, per mixed probe, the parts of its Stored side.
	stored [][]string
	// probesApart: the probes could not be folded (no bounded window, or a
	// selector PromQL refuses); they are asked on the series endpoint.
	probesApart bool
}

// foldGroup builds the query for one group from its fragments' queries
// (each a vector expression, in plan order: the planner pushes
// aggregations), the probe sets and the mixed probes' Stored sets, over
// the window [mint, maxt] the query reads. A single fragment without
// probes is sent as it is. Nothing is parsed here: the parts are the
// planner's text and selectors checked by allSelectable, and a backend
// refusing the text refuses the group (the query is then evaluated in the
// proxy).
func foldGroup(fragments []string, probe [][]*labels.Matcher, mixed []plan.MixedProbe, mint, maxt int64) foldedQuery {
	fq := foldedQuery{fragments: len(fragments)}
	type part struct{ name, expr string }
	var parts []part
	for i, q := range fragments {
		parts = append(parts, part{"f" + strconv.Itoa(i), q})
	}
	var probeParts []part
	window, bounded := probeRange(mint, maxt)
	absent := func(set []*labels.Matcher) string {
		vs := &parser.VectorSelector{LabelMatchers: set}
		return fmt.Sprintf("absent_over_time(%s[%s] @ %s)", vs.String(), window, at(maxt))
	}
	for i, set := range probe {
		name := "p" + strconv.Itoa(i)
		fq.probes = append(fq.probes, name)
		probeParts = append(probeParts, part{name, absent(set)})
	}
	for k, mp := range mixed {
		var names []string
		for i, set := range mp.Stored {
			name := "m" + strconv.Itoa(k) + "s" + strconv.Itoa(i)
			names = append(names, name)
			probeParts = append(probeParts, part{name, absent(set)})
		}
		fq.stored = append(fq.stored, names)
	}
	if len(probeParts) > 0 && (!bounded || !allSelectable(probe) || !allSelectable(storedSets(mixed))) {
		fq.probesApart = true
		probeParts = nil
	}
	if fq.probesApart {
		fq.probes, fq.stored = nil, nil
	}
	parts = append(parts, probeParts...)
	if len(parts) == 1 && len(fragments) == 1 {
		fq.query = fragments[0]
		return fq
	}
	var b strings.Builder
	for i, p := range parts {
		if i > 0 {
			b.WriteString(" or ")
		}
		fmt.Fprintf(&b, "label_replace(%s, %q, %q, \"\", \"\")", p.expr, partLabel, p.name)
	}
	fq.query = b.String()
	return fq
}

// allSelectable reports whether PromQL accepts each set as a selector: at
// least one matcher must not match the empty string. Others are asked on
// the series endpoint, which takes any.
func allSelectable(sets [][]*labels.Matcher) bool {
	for _, set := range sets {
		if !slices.ContainsFunc(set, func(m *labels.Matcher) bool { return !m.Matches("") }) {
			return false
		}
	}
	return true
}

func storedSets(mixed []plan.MixedProbe) [][]*labels.Matcher {
	var out [][]*labels.Matcher
	for _, mp := range mixed {
		out = append(out, mp.Stored...)
	}
	return out
}

// probeRange is the range of a probe's selector that, evaluated at maxt,
// covers [mint, maxt]: one millisecond more, since a range selector leaves
// its start out (Prometheus 3; 2.x keeps it, and reads one more
// millisecond, which can only refuse more).
func probeRange(mint, maxt int64) (string, bool) {
	if mint == math.MinInt64 || maxt == math.MaxInt64 || maxt < mint {
		return "", false
	}
	return model.Duration(time.Duration(maxt-mint+1) * time.Millisecond).String(), true
}

// at is the @ modifier's timestamp: seconds with the milliseconds exact.
func at(ms int64) string {
	return strconv.FormatFloat(float64(ms)/1000, 'f', 3, 64)
}

// foldedAnswer is a folded query's answer taken apart.
type foldedAnswer struct {
	fragments []*remote.QueryAnswer
	// probeFound: a probe selector matched a series (or its part is missing).
	probeFound bool
	// storedFound, per mixed probe: its Stored side matched a series.
	storedFound []bool
}

// split sorts the answer's series into their parts. A series of no part
// the query asked for means the backend did not answer what was sent.
func (fq foldedQuery) split(ans *remote.QueryAnswer) (foldedAnswer, error) {
	out := foldedAnswer{fragments: make([]*remote.QueryAnswer, fq.fragments), storedFound: make([]bool, len(fq.stored))}
	for i := range out.fragments {
		out.fragments[i] = &remote.QueryAnswer{Histograms: ans.Histograms, Warnings: ans.Warnings}
	}
	if fq.fragments == 1 && len(fq.probes) == 0 && len(fq.stored) == 0 {
		out.fragments[0].Series = ans.Series
		return out, nil
	}
	present := map[string]bool{}
	for _, s := range ans.Series {
		name := s.Labels.Get(partLabel)
		if name == "" {
			return foldedAnswer{}, fmt.Errorf("%w: a series without %s in the answer", errNotExact, partLabel)
		}
		present[name] = true
		if name[0] != 'f' {
			continue
		}
		i, err := strconv.Atoi(name[1:])
		if err != nil || i < 0 || i >= fq.fragments {
			return foldedAnswer{}, fmt.Errorf("%w: part %q is not one asked for", errNotExact, name)
		}
		b := labels.NewBuilder(s.Labels)
		b.Del(partLabel)
		s.Labels = b.Labels()
		out.fragments[i].Series = append(out.fragments[i].Series, s)
	}
	for _, name := range fq.probes {
		if !present[name] {
			out.probeFound = true
		}
	}
	for k, names := range fq.stored {
		for _, name := range names {
			if !present[name] {
				out.storedFound[k] = true
			}
		}
	}
	return out, nil
}

// groupJob is everything a plan asks of one group: the fragments that
// name it (their queries in plan order), the spans their selectors read,
// and their probes, merged.
type groupJob struct {
	group   plan.Group
	frags   []*plan.Fragment
	queries []string
	spans   [][2]int64
	probe   [][]*labels.Matcher
	mixed   []plan.MixedProbe
}

// groupJobs gathers a plan's group queries by group, in plan order.
// Probes of several fragments are asked once, over the window of all of
// them: a wider window can only refuse more.
func groupJobs(pl *plan.Plan, r evalRange, lookback time.Duration) ([]*groupJob, error) {
	var jobs []*groupJob
	byGroup := map[string]*groupJob{}
	seen := map[string]bool{}
	key := func(ms []*labels.Matcher) string { return (&parser.VectorSelector{LabelMatchers: ms}).String() }
	for _, f := range pl.Fragments {
		// A fragment's group queries differ only in their selectors'
		// matchers (each group's form of the tenant's rules), never in
		// ranges, offsets, @ or subqueries: one computation of the spans
		// holds for all of them.
		var spans [][2]int64
		for _, gq := range f.Queries {
			if gq.Skipped != "" {
				continue
			}
			if spans == nil {
				var err error
				if spans, err = selectorSpans(gq.Query, r, lookback); err != nil {
					return nil, fmt.Errorf("%w: fragment %s: %w", errNotExact, f.ID, err)
				}
			}
			j := byGroup[gq.Group.Name]
			if j == nil {
				j = &groupJob{group: gq.Group}
				byGroup[gq.Group.Name] = j
				jobs = append(jobs, j)
			}
			j.frags = append(j.frags, f)
			j.queries = append(j.queries, gq.Query)
			j.spans = append(j.spans, spans...)
			for _, set := range gq.Probe {
				if k := gq.Group.Name + "|p|" + key(set); !seen[k] {
					seen[k] = true
					j.probe = append(j.probe, set)
				}
			}
			for _, mp := range gq.Mixed {
				i := slices.IndexFunc(j.mixed, func(x plan.MixedProbe) bool { return x.Label == mp.Label })
				if i < 0 {
					j.mixed = append(j.mixed, plan.MixedProbe{Label: mp.Label})
					i = len(j.mixed) - 1
				}
				for side, sets := range [][][]*labels.Matcher{mp.Stored, mp.Lacking} {
					for _, set := range sets {
						k := fmt.Sprintf("%s|m|%s|%d|%s", gq.Group.Name, mp.Label, side, key(set))
						if seen[k] {
							continue
						}
						seen[k] = true
						if side == 0 {
							j.mixed[i].Stored = append(j.mixed[i].Stored, set)
						} else {
							j.mixed[i].Lacking = append(j.mixed[i].Lacking, set)
						}
					}
				}
			}
		}
	}
	return jobs, nil
}

// mixedFound asks the series endpoint both sides of a mixed probe.
func mixedFound(ctx context.Context, c *remote.Client, mint, maxt int64, mp plan.MixedProbe) (bool, error) {
	for _, sets := range [][][]*labels.Matcher{mp.Stored, mp.Lacking} {
		f, _, err := c.SeriesLimit(ctx, mint, maxt, sets, 1)
		if err != nil || len(f) == 0 {
			return false, err
		}
	}
	return true, nil
}

// mixedOrder returns the group's mixed probes with the side to fold into
// the query first (as Stored). A mixed probe refuses only where both
// sides find series, so either side may be folded and the other asked
// only when the folded one finds some. The folded side is read in full
// over the query's window (absent_over_time decodes its samples), the
// other costs a round trip when asked: the cheap order is the one whose
// folded side is empty. Where the group's series store its value of the
// label (written by the scrape, not added as an external label), that is
// the Lacking side; where none does, the Stored side. The order is
// learned per group and label from the last answer; it changes what is
// read and asked, never what is proven.
func (p *PushDown) mixedOrder(group string, mixed []plan.MixedProbe) []plan.MixedProbe {
	return foldOrder(mixed, func(label string) bool {
		v, ok := p.foldLacking.Load(mixedKey(group, label))
		return ok && v.(bool)
	})
}

// foldOrder returns mixed with Stored and Lacking swapped in the probes on
// the labels lackingFirst names.
func foldOrder(mixed []plan.MixedProbe, lackingFirst func(label string) bool) []plan.MixedProbe {
	var out []plan.MixedProbe
	for k, mp := range mixed {
		if lackingFirst(mp.Label) {
			if out == nil {
				out = slices.Clone(mixed)
			}
			out[k].Stored, out[k].Lacking = mp.Lacking, mp.Stored
		}
	}
	if out == nil {
		return mixed
	}
	return out
}

// foldedFound notes that the folded side of the group's mixed probe on
// label found series: the next query folds the other side.
func (p *PushDown) foldedFound(group, label string) {
	key := mixedKey(group, label)
	v, _ := p.foldLacking.Load(key)
	swapped, _ := v.(bool)
	p.foldLacking.Store(key, !swapped)
}

func mixedKey(group, label string) string { return group + "\x00" + label }
