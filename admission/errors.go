package admission

import (
	"errors"
	"fmt"
	"time"
)

// LimitError says that a request or query went over one of its tenant's
// cost limits. It names the limit and its value and nothing of any backend,
// since the tenant reads it. Answered as 422, like Prometheus' and Mimir's
// query limits.
type LimitError struct {
	// Limit is the configuration key, e.g. max_fetched_series_per_query.
	Limit string
	// Value is the configured value, as written in the configuration.
	Value string
	// What says what went over, e.g. "series fetched from backends".
	What string
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("the query exceeded the limit on %s (limit %s=%s)", e.What, e.Limit, e.Value)
}

// Reason is the value of the reason label of rejections: the limit's key.
func (e *LimitError) Reason() string { return e.Limit }

// Queue rejection reasons.
const (
	ReasonQueueFull    = "queue_full"
	ReasonQueueTimeout = "queue_timeout"
	// ReasonRefusalBackoff: the tenant's recent requests were refused so
	// often that this one would wait too long for its turn (refusals.go).
	ReasonRefusalBackoff = "refusal_backoff"
)

// QueueError says a request got no slot: its tenant's queue was full, it
// waited queue_timeout, or its tenant's refused requests are being paid
// off. Answered as 429 with Retry-After.
type QueueError struct {
	Reason     string
	Msg        string
	RetryAfter time.Duration
}

func (e *QueueError) Error() string { return e.Msg }

// ErrCanceled is returned when the request's own context ended while it
// was waiting for a slot.
var ErrCanceled = errors.New("the request was canceled while waiting for a slot")
