package remote

import (
	"context"
	"io"
	"net/http"
)

// Budget is charged with what one query reads from backends, across all
// its calls and groups, while the answers are decoded. A non-nil error
// stops the read at once; the budget is expected to cancel the query's
// context itself, so that the other groups' reads stop too.
type Budget interface {
	// AddSeries counts one series by the hash of its labels.
	AddSeries(hash uint64) error
	// AddBytes counts bytes of a remote-read answer as they arrive.
	AddBytes(n int) error
	// CheckSpan refuses a read of [mint, maxt] before it is sent.
	CheckSpan(mint, maxt int64) error
}

type budgetKey struct{}

// WithBudget makes every read of requests run with the returned context
// charge b.
func WithBudget(ctx context.Context, b Budget) context.Context {
	return context.WithValue(ctx, budgetKey{}, b)
}

func budgetFrom(ctx context.Context) Budget {
	b, _ := ctx.Value(budgetKey{}).(Budget)
	return b
}

type chargeBytesKey struct{}

// budgetTransport charges the bytes of remote-read answers to the query's
// budget as the library reads them: a streamed answer is decoded frame by
// frame, so the proxy holds no more than the budget allows, and a
// non-streamed one is refused as soon as its body passes the limit rather
// than after it has been read whole.
type budgetTransport struct{ next http.RoundTripper }

func (t budgetTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	if b, ok := req.Context().Value(chargeBytesKey{}).(Budget); ok {
		resp.Body = &chargedBody{ReadCloser: resp.Body, budget: b}
	}
	return resp, nil
}

type chargedBody struct {
	io.ReadCloser
	budget Budget
	err    error
}

func (c *chargedBody) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.ReadCloser.Read(p)
	if n > 0 {
		if berr := c.budget.AddBytes(n); berr != nil {
			c.err = berr
			return 0, berr
		}
	}
	return n, err
}
