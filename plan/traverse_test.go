package plan

import (
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
)

// TestWithChildren: the copy has the same text, shares no changed node
// with the query, and every expression below reaches f once.
func TestWithChildren(t *testing.T) {
	q := `-sum by (a) (rate(x[5m])) / on (a) group_left (b) topk(3, (y offset 1m)) + max_over_time(z[1h:5m]) or label_replace(w, "c", "$1", "d", "(.*)")`
	expr, err := parser.NewParser(parser.Options{}).ParseExpr(q)
	if err != nil {
		t.Fatal(err)
	}
	visited := 0
	var copyAll func(parser.Expr) parser.Expr
	copyAll = func(e parser.Expr) parser.Expr {
		visited++
		return mapChildren(e, copyAll)
	}
	out := copyAll(expr)
	if out.String() != expr.String() {
		t.Errorf("copy reads %s, want %s", out, expr)
	}
	if out == expr {
		t.Error("the root was not copied")
	}
	var inQuery int
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		if _, ok := n.(parser.Expr); ok {
			if _, inRange := n.(*parser.VectorSelector); !inRange || !underRange(expr, n) {
				inQuery++
			}
		}
		return nil
	})
	if visited != inQuery {
		t.Errorf("f saw %d expressions, the query has %d (range selectors' selectors not counted)", visited, inQuery)
	}
	// The original tree is untouched by a rewrite that replaces selectors.
	before := expr.String()
	var rename func(parser.Expr) parser.Expr
	rename = func(e parser.Expr) parser.Expr {
		if vs, ok := e.(*parser.VectorSelector); ok {
			c := *vs
			c.Name = "renamed"
			return &c
		}
		return mapChildren(e, rename)
	}
	_ = rename(expr)
	if expr.String() != before {
		t.Errorf("the query changed under a rewrite: %s", expr)
	}
	if _, err := withChildren(&parser.MatrixSelector{VectorSelector: &parser.VectorSelector{Name: "m"}}, func(parser.Expr) (parser.Expr, error) {
		t.Error("a range selector's selector was visited")
		return nil, nil
	}); err != nil {
		t.Error(err)
	}
}

// underRange reports whether selector n is the selector of a range selector in expr.
func underRange(expr parser.Expr, n parser.Node) bool {
	found := false
	parser.Inspect(expr, func(m parser.Node, _ []parser.Node) error {
		if ms, ok := m.(*parser.MatrixSelector); ok && ms.VectorSelector == n {
			found = true
		}
		return nil
	})
	return found
}
