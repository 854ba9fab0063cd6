package plan

import (
	"fmt"

	"github.com/prometheus/prometheus/promql/parser"
)

// withChildren is n with each child expression replaced by f's answer for
// it: a shallow copy, so the query's own tree is never changed. A range
// selector is a leaf (its selector is not an expression of its own here).
// The rewrites of the planner are this plus their own cases.
func withChildren(n parser.Expr, f func(parser.Expr) (parser.Expr, error)) (parser.Expr, error) {
	var err error
	apply := func(dst *parser.Expr, src parser.Expr) {
		if err == nil && src != nil {
			*dst, err = f(src)
		}
	}
	switch e := n.(type) {
	case *parser.AggregateExpr:
		c := *e
		apply(&c.Expr, e.Expr)
		apply(&c.Param, e.Param)
		return &c, err
	case *parser.BinaryExpr:
		c := *e
		apply(&c.LHS, e.LHS)
		apply(&c.RHS, e.RHS)
		return &c, err
	case *parser.Call:
		c := *e
		c.Args = make(parser.Expressions, len(e.Args))
		for i, a := range e.Args {
			apply(&c.Args[i], a)
		}
		return &c, err
	case *parser.ParenExpr, *parser.UnaryExpr, *parser.SubqueryExpr, *parser.StepInvariantExpr:
		inner, _ := wrapped(n)
		out, err := f(inner)
		if err != nil {
			return nil, err
		}
		return rewrapped(n, out), nil
	case *parser.VectorSelector, *parser.MatrixSelector, *parser.NumberLiteral, *parser.StringLiteral, *parser.DurationExpr:
		return n, nil
	}
	return nil, fmt.Errorf("plan: unknown node %T", n)
}

// mapChildren is withChildren for a rewrite that cannot fail.
func mapChildren(n parser.Expr, f func(parser.Expr) parser.Expr) parser.Expr {
	out, err := withChildren(n, func(e parser.Expr) (parser.Expr, error) { return f(e), nil })
	if err != nil {
		panic(err) // a node type the parser added: the planner must learn it
	}
	return out
}

// wrapped is the one expression a wrapper stands for: parentheses, a
// unary minus, a subquery or the engine's step-invariant marker. Each
// answers the series of its inside (a subquery at other instants), so what
// holds of the labels of one holds of the other.
func wrapped(n parser.Expr) (parser.Expr, bool) {
	switch e := n.(type) {
	case *parser.ParenExpr:
		return e.Expr, true
	case *parser.UnaryExpr:
		return e.Expr, true
	case *parser.SubqueryExpr:
		return e.Expr, true
	case *parser.StepInvariantExpr:
		return e.Expr, true
	}
	return nil, false
}

// rewrapped is a copy of wrapper w around inner.
func rewrapped(w, inner parser.Expr) parser.Expr {
	switch e := w.(type) {
	case *parser.ParenExpr:
		c := *e
		c.Expr = inner
		return &c
	case *parser.UnaryExpr:
		c := *e
		c.Expr = inner
		return &c
	case *parser.SubqueryExpr:
		c := *e
		c.Expr = inner
		return &c
	case *parser.StepInvariantExpr:
		c := *e
		c.Expr = inner
		return &c
	}
	panic(fmt.Sprintf("plan: %T is not a wrapper", w))
}
