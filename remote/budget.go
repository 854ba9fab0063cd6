package remote

import (
	"context"
	"encoding/binary"
	"io"
	"math"
	"net/http"
	"strings"
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
	// AddSamples counts samples of a backend's evaluated answer (push-down)
	// as they are decoded.
	AddSamples(n int) error
	// Err is the limit the budget already failed with, or nil.
	Err() error
}

// CallGate is a Budget that also bounds the calls in flight of a query.
type CallGate interface {
	// AcquireCall waits until one more call may start and returns the
	// function that ends it; it fails only when ctx ends first.
	AcquireCall(ctx context.Context) (release func(), err error)
}

// AcquireCall waits, when the query's budget bounds its calls in flight,
// until one more backend call may start; call release when it ends.
func AcquireCall(ctx context.Context) (release func(), err error) {
	if g, ok := budgetFrom(ctx).(CallGate); ok {
		return g.AcquireCall(ctx)
	}
	return func() {}, nil
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

// BudgetFrom is the budget requests run with ctx are charged to, or nil.
func BudgetFrom(ctx context.Context) Budget { return budgetFrom(ctx) }

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
		// A SAMPLES answer is one snappy block, decoded whole after it is
		// read: its decoded size, which the block states up front, is
		// charged too, before the memory is spent.
		sampled := strings.HasPrefix(resp.Header.Get("Content-Type"), "application/x-protobuf")
		resp.Body = &chargedBody{ReadCloser: resp.Body, budget: b, sampled: sampled}
	}
	return resp, nil
}

type chargedBody struct {
	io.ReadCloser
	budget Budget
	err    error
	// sampled: the decoded length is still to be read from the block's
	// first bytes (a uvarint), gathered in head.
	sampled bool
	head    []byte
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
		if berr := c.chargeDecoded(p[:n]); berr != nil {
			c.err = berr
			return 0, berr
		}
	}
	return n, err
}

func (c *chargedBody) chargeDecoded(p []byte) error {
	if !c.sampled {
		return nil
	}
	c.head = append(c.head, p[:min(len(p), binary.MaxVarintLen64-len(c.head))]...)
	decoded, k := binary.Uvarint(c.head)
	switch {
	case k == 0 && len(c.head) < binary.MaxVarintLen64:
		return nil // the length's bytes are still arriving
	case k <= 0:
		c.sampled = false // not a length: the decoder refuses the block
		return nil
	}
	c.sampled = false
	return c.budget.AddBytes(int(min(decoded, math.MaxInt32)))
}
