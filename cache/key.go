package cache

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"time"

	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/tenancy"
)

const (
	digestLen = sha256.Size
	keyPrefix = "pmqc:"
	// keySchema changes whenever the meaning of a key or value changes, so
	// that old entries simply stop being found.
	keySchema = "1"
)

type digest [digestLen]byte

// keyFields accumulates length-prefixed fields; no two field lists give the
// same bytes, so no two keys collide short of a hash collision.
type keyFields []byte

func (k keyFields) str(s string) keyFields {
	k = binary.AppendUvarint(k, uint64(len(s)))
	return append(k, s...)
}

func (k keyFields) int(v int64) keyFields {
	return binary.AppendVarint(k, v)
}

func (k keyFields) digest() digest { return sha256.Sum256(k) }

// storeKey names an entry: the deployment's cache.key_prefix, then the hash.
// No part of it is a {hash tag}, so a Redis Cluster spreads the extents of
// one dashboard over all its slots; every operation is on one key, so none
// needs two keys in one slot.
func (e *Engine) storeKey(d digest) string {
	return e.keyPrefix + keyPrefix + hex.EncodeToString(d[:])
}

// tenantField identifies what the request may see. Unrestricted requests
// all see the same data, so they share entries; a restricted policy is
// named by its fingerprint, never by its namespace, so a changed rule set
// gets fresh keys.
func tenantField(p *tenancy.Policy) (string, bool) {
	if p.Unrestricted() {
		return "*", true
	}
	if p.Fingerprint == "" {
		return "", false
	}
	return "fp:" + p.Fingerprint, true
}

// optsFields adds the per-query options that change answers.
func optsFields(k keyFields, opts promql.QueryOpts) keyFields {
	var lookback time.Duration
	startTS := int64(0) // engine default
	if opts != nil {
		lookback = opts.LookbackDelta()
		if p := opts.UseStartTimestamps(); p != nil {
			startTS = 1
			if *p {
				startTS = 2
			}
		}
	}
	if lookback < 0 {
		lookback = 0 // the engine treats every non-positive value as its default
	}
	return k.int(int64(lookback)).int(startTS)
}

// shape is what the cache needs to know about a query's expression.
type shape struct {
	normalized string
	// rangeDependent: the answer at one step depends on the query's start,
	// end or length (@ start(), @ end(), start(), end(), range(), step()),
	// so the query cannot be split.
	rangeDependent bool
	// smoothed selectors read up to a lookback delta past the evaluation
	// time, further than freshness can be judged from here.
	smoothed bool
	// offsetExpr: an offset given as an expression, known only after the
	// engine's preprocessing.
	offsetExpr bool
	// lead is how far past the evaluation time the query may read (negative
	// offsets, added up along the tree as an upper bound), in ms.
	lead int64
	// atMax is the latest fixed @ timestamp in ms, math.MinInt64 if none.
	atMax int64
}

var queryContextFuncs = map[string]bool{"start": true, "end": true, "range": true, "step": true}

func inspect(expr parser.Expr) shape {
	s := shape{atMax: math.MinInt64}
	node := func(startOrEnd parser.ItemType, ts *int64, off time.Duration, offExpr *parser.DurationExpr) {
		if startOrEnd != 0 {
			s.rangeDependent = true
		}
		if ts != nil && *ts > s.atMax {
			s.atMax = *ts
		}
		if off < 0 {
			s.lead += int64(-off / time.Millisecond)
		}
		if offExpr != nil {
			s.offsetExpr = true
			s.rangeDependent = s.rangeDependent || usesRange(offExpr)
		}
	}
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			node(n.StartOrEnd, n.Timestamp, n.OriginalOffset, n.OriginalOffsetExpr)
			s.smoothed = s.smoothed || n.Smoothed
		case *parser.SubqueryExpr:
			node(n.StartOrEnd, n.Timestamp, n.OriginalOffset, n.OriginalOffsetExpr)
			s.rangeDependent = s.rangeDependent || usesRange(n.RangeExpr) || usesRange(n.StepExpr)
		case *parser.MatrixSelector:
			s.rangeDependent = s.rangeDependent || usesRange(n.RangeExpr)
		case *parser.Call:
			if n.Func != nil && queryContextFuncs[n.Func.Name] {
				s.rangeDependent = true
			}
		case *parser.DurationExpr:
			s.rangeDependent = s.rangeDependent || usesRange(n)
		}
		return nil
	})
	return s
}

// usesRange reports whether a duration expression calls range(), whose value
// is the query's length.
func usesRange(e parser.Expr) bool {
	d, ok := e.(*parser.DurationExpr)
	if !ok || d == nil {
		return false
	}
	return d.Op == parser.RANGE || usesRange(d.LHS) || usesRange(d.RHS)
}

// resolveOffsets redoes the lead and @ bounds of s from an expression that
// went through the engine's preprocessing, where offset expressions have
// become plain offsets.
func resolveOffsets(s *shape, p parser.Parser, qs string, start, end time.Time, step time.Duration) bool {
	expr, err := p.ParseExpr(qs)
	if err != nil {
		return false
	}
	expr, err = promql.PreprocessExpr(expr, start, end, step)
	if err != nil {
		return false
	}
	r := inspect(expr)
	s.lead, s.atMax, s.offsetExpr = r.lead, max(s.atMax, r.atMax), false
	return true
}
