package engine

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/remote"
)

// stepAnswers answers a range query as a backend would over data where
// series "a" has a point at every step, "b" only at even steps and "c"
// only after 40 steps: pieces must join into the one call's answer.
func stepAnswers(calls *[]remote.QueryParams) func(context.Context, remote.QueryParams) (*remote.QueryAnswer, error) {
	return func(_ context.Context, p remote.QueryParams) (*remote.QueryAnswer, error) {
		*calls = append(*calls, p)
		ans := &remote.QueryAnswer{SamplesRead: 0}
		for _, name := range []string{"a", "b", "c"} {
			s := remote.QuerySeries{Labels: labels.FromStrings("s", name)}
			for t := p.Start; t <= p.End; t += p.Step.Milliseconds() {
				k := t / p.Step.Milliseconds()
				if name == "b" && k%2 == 1 || name == "c" && k < 40 {
					continue
				}
				s.T, s.F = append(s.T, t), append(s.F, float64(k))
				ans.SamplesRead += 3
			}
			if len(s.T) > 0 {
				ans.Series = append(ans.Series, s)
			}
		}
		return ans, nil
	}
}

func TestQueryInPieces(t *testing.T) {
	p := remote.QueryParams{Query: "q", Start: 0, End: 99 * 15_000, Step: 15 * time.Second}
	var calls []remote.QueryParams
	whole, n, err := queryInPieces(context.Background(), p, stepAnswers(&calls))
	if err != nil || n != 1 || len(calls) != 1 {
		t.Fatalf("without contention: %d pieces, %d calls, %v; want one", n, len(calls), err)
	}

	for _, first := range []int64{1, 7, 33, 64} {
		calls = nil
		yields := 0
		ctx := WithYield(context.Background(), func(context.Context) error { yields++; return nil })
		ctx = withPieces(ctx, pieceSizing{contended: func() bool { return true }, first: first})
		got, n, err := queryInPieces(ctx, p, stepAnswers(&calls))
		if err != nil {
			t.Fatal(err)
		}
		want := int((100 + first - 1) / first)
		if n != want || len(calls) != want || yields != want-1 {
			t.Errorf("pieces of %d steps: %d pieces, %d calls, %d yields; want %d, %d, %d", first, n, len(calls), yields, want, want, want-1)
		}
		for i, c := range calls {
			if c.Start%p.Step.Milliseconds() != 0 || c.End < c.Start || i > 0 && c.Start != calls[i-1].End+p.Step.Milliseconds() {
				t.Errorf("pieces of %d steps: piece %d [%d, %d] is off the step grid or leaves a gap", first, i, c.Start, c.End)
			}
		}
		if calls[len(calls)-1].End != p.End {
			t.Errorf("pieces of %d steps: last piece ends at %d, want %d", first, calls[len(calls)-1].End, p.End)
		}
		if !reflect.DeepEqual(got, whole) {
			t.Errorf("pieces of %d steps answer\n%+v\nwant\n%+v", first, got, whole)
		}
	}

	// Contention ending mid-query sends the rest at once.
	calls = nil
	contended := 2
	ctx := withPieces(context.Background(), pieceSizing{contended: func() bool { contended--; return contended >= 0 }, first: 10})
	got, n, err := queryInPieces(ctx, p, stepAnswers(&calls))
	if err != nil || n != 3 || !reflect.DeepEqual(got, whole) {
		t.Errorf("contention ending after two pieces: %d pieces (%v), want 3 and the whole answer", n, err)
	}

	// Without a time per step to go by, each next piece is sized to the
	// target by the previous one's time: a backend answering at once gets
	// the rest in one piece.
	calls = nil
	ctx = withPieces(context.Background(), pieceSizing{contended: func() bool { return true }, first: 5, target: time.Hour})
	if _, n, _ := queryInPieces(ctx, p, stepAnswers(&calls)); n != 2 {
		t.Errorf("a fast backend with an hour's target: %d pieces, want 2", n)
	}

	// @ start() and @ end() name the query's range: such a query goes whole.
	calls = nil
	ctx = withPieces(context.Background(), pieceSizing{contended: func() bool { return true }, first: 5})
	q := p
	q.Query = "m @ end()"
	if _, n, _ := queryInPieces(ctx, q, stepAnswers(&calls)); n != 1 {
		t.Errorf("%s: %d pieces, want 1", q.Query, n)
	}
}
