package engine

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/remote"
)

// A pushed range query is evaluated by the backend's own engine, which the
// proxy cannot pause: once sent, it runs to its end on the backend's cores
// whatever the proxy's time sharing decides. While the request is ahead of
// another tenant's (admission's Turn.Contended), it is therefore sent in
// pieces of consecutive steps, each sized to take about pieceTarget of
// backend time, and the request yields between pieces, so a neighbour's
// short query waits at most for one piece, not for a long query's whole
// evaluation. Level with its neighbours, or alone, a query goes in one
// piece.
//
// Each step of a range query is evaluated on its own (range selectors,
// lookback and subquery steps are fixed by the step's time, subqueries
// aligned to absolute multiples of their step), so the pieces, on the
// query's own step grid, answer exactly what one call would. Only `@
// start()` and `@ end()` name the query's range; a query using them goes
// whole.
const (
	pieceTarget = 20 * time.Millisecond
	// firstPieceSteps is the first piece's size, before any piece has been
	// timed: small enough to be short on the heaviest data, large enough
	// that a dashboard's range query (a few hundred steps at most) goes in
	// one or two.
	firstPieceSteps = 64
)

// pieceSizing is how a request's pushed range queries are cut: while
// contended, a first piece of first steps, each next one sized to take
// target by the previous one's time per step.
type pieceSizing struct {
	contended func() bool
	first     int64
	target    time.Duration
}

type piecesKey struct{}

// WithContention makes pushed range queries run with ctx ask contended
// whether the request is ahead of another tenant's, and go in pieces while
// it is (see pieceTarget).
func WithContention(ctx context.Context, contended func() bool) context.Context {
	if contended == nil {
		return ctx
	}
	return withPieces(ctx, pieceSizing{contended: contended, first: firstPieceSteps, target: pieceTarget})
}

func withPieces(ctx context.Context, s pieceSizing) context.Context {
	return context.WithValue(ctx, piecesKey{}, s)
}

// queryInPieces evaluates p with eval (a backend's Query), in pieces while
// the request is contended, and returns the answers merged as one call
// would have answered, with the number of pieces evaluated.
func queryInPieces(ctx context.Context, p remote.QueryParams, eval func(context.Context, remote.QueryParams) (*remote.QueryAnswer, error)) (*remote.QueryAnswer, int, error) {
	sizing, _ := ctx.Value(piecesKey{}).(pieceSizing)
	step := p.Step.Milliseconds()
	if step <= 0 || sizing.contended == nil || (p.End-p.Start)/step < sizing.first || namesQueryRange(p.Query) {
		ans, err := eval(ctx, p)
		return ans, 1, err
	}
	yield := yieldFrom(ctx)
	var (
		merged pieceMerger
		pieces int
		steps  = max(1, sizing.first)
	)
	for start := p.Start; start <= p.End; {
		if !sizing.contended() {
			steps = (p.End-start)/step + 1
		}
		piece := p
		piece.Start, piece.End = start, min(start+(steps-1)*step, p.End)
		began := time.Now()
		ans, err := eval(ctx, piece)
		if err != nil {
			return nil, pieces, err
		}
		took := time.Since(began)
		pieces++
		merged.add(ans)
		sent := (piece.End-piece.Start)/step + 1
		start = piece.End + step
		if start > p.End {
			break
		}
		if yield != nil {
			if err := yield(ctx); err != nil {
				return nil, pieces, err
			}
		}
		// The next piece sized by this one's time per step (without a
		// target, every piece has the first's size).
		if sizing.target > 0 {
			perStep := max(took/time.Duration(sent), time.Nanosecond)
			steps = max(1, int64(sizing.target/perStep))
		}
	}
	return merged.out, pieces, nil
}

// namesQueryRange reports whether query may use `@ start()` or `@ end()`,
// whose time is the query's range, not the step's. A label value holding
// the text only sends the query whole.
func namesQueryRange(query string) bool {
	return strings.Contains(query, "start()") || strings.Contains(query, "end()")
}

// pieceMerger joins the pieces' answers: a series' later points after its
// earlier ones (pieces come in time order).
type pieceMerger struct {
	out   *remote.QueryAnswer
	index map[string]int
}

func (m *pieceMerger) add(piece *remote.QueryAnswer) {
	if m.out == nil {
		m.out = piece
		return
	}
	if m.index == nil {
		m.index = make(map[string]int, len(m.out.Series))
		for i, s := range m.out.Series {
			m.index[s.Labels.String()] = i
		}
	}
	into := m.out
	for _, s := range piece.Series {
		key := s.Labels.String()
		if i, ok := m.index[key]; ok {
			into.Series[i].T = append(into.Series[i].T, s.T...)
			into.Series[i].F = append(into.Series[i].F, s.F...)
			continue
		}
		m.index[key] = len(into.Series)
		into.Series = append(into.Series, s)
	}
	into.Histograms = into.Histograms || piece.Histograms
	for _, w := range piece.Warnings {
		if !slices.Contains(into.Warnings, w) {
			into.Warnings = append(into.Warnings, w)
		}
	}
	if into.SamplesRead < 0 || piece.SamplesRead < 0 {
		into.SamplesRead = -1
	} else {
		into.SamplesRead += piece.SamplesRead
	}
}
