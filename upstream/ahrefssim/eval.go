package ahrefssim

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/linkgate/linkgate/upstream"
)

// pred is a compiled where node.
type pred func(r *row) bool

// compiled is a where tree ready to run: its fields resolved to getters,
// its regular expressions and dates parsed once per request.
type compiled struct {
	eval      pred
	ord       *ordering
	linkLevel bool // mentions a per-link field (matters for refdomains)
}

// compileWhere compiles a where tree that upstream.ParseQuery has already
// type-checked; the checks here only guard the simulator against trees built
// in-process that skipped it.
func compileWhere(ep upstream.Endpoint, e upstream.Expr, ord *ordering) (*compiled, error) {
	c := &compiled{ord: ord}
	if e == nil {
		c.eval = func(*row) bool { return true }
		return c, nil
	}
	s, err := upstream.SchemaOf(ep)
	if err != nil {
		return nil, err
	}
	if err := s.CheckWhere(e); err != nil {
		return nil, err
	}
	p, err := c.expr(ep, s, e)
	if err != nil {
		return nil, err
	}
	c.eval = p
	return c, nil
}

func (c *compiled) expr(ep upstream.Endpoint, s *upstream.Schema, e upstream.Expr) (pred, error) {
	switch e := e.(type) {
	case upstream.And:
		ps, err := c.list(ep, s, e)
		if err != nil {
			return nil, err
		}
		return func(r *row) bool {
			for _, p := range ps {
				if !p(r) {
					return false
				}
			}
			return true
		}, nil
	case upstream.Or:
		ps, err := c.list(ep, s, e)
		if err != nil {
			return nil, err
		}
		return func(r *row) bool {
			for _, p := range ps {
				if p(r) {
					return true
				}
			}
			return false
		}, nil
	case upstream.Not:
		p, err := c.expr(ep, s, e.X)
		if err != nil {
			return nil, err
		}
		return func(r *row) bool { return !p(r) }, nil
	case upstream.Is:
		g, f, err := c.field(ep, s, e.Field)
		if err != nil {
			return nil, err
		}
		test, err := condTest(f.Kind, e.Cond, c.ord)
		if err != nil {
			return nil, &upstream.InvalidError{Param: "where", Field: e.Field, Problem: err.Error()}
		}
		if e.Modifier != "" {
			g = modified(g, e.Modifier)
		}
		return func(r *row) bool { return test(g(r)) }, nil
	case upstream.ListIs:
		g, f, err := c.field(ep, s, e.Field)
		if err != nil {
			return nil, err
		}
		elem, err := predTest(f.Kind.Elem(), e.Pred, c.ord)
		if err != nil {
			return nil, &upstream.InvalidError{Param: "where", Field: e.Field, Problem: err.Error()}
		}
		all := e.All
		return func(r *row) bool {
			v := g(r)
			n := len(v.ss) + len(v.ns)
			// all over an empty list holds (vacuous truth); any does not.
			for k := range n {
				var ev val
				if v.k == vStrs {
					ev = vs(v.ss[k])
				} else {
					ev = vi(v.ns[k])
				}
				if elem(ev) != all {
					return !all
				}
			}
			return all
		}, nil
	}
	return nil, fmt.Errorf("where: unknown node %T", e)
}

func (c *compiled) list(ep upstream.Endpoint, s *upstream.Schema, es []upstream.Expr) ([]pred, error) {
	ps := make([]pred, len(es))
	for k, x := range es {
		p, err := c.expr(ep, s, x)
		if err != nil {
			return nil, err
		}
		ps[k] = p
	}
	return ps, nil
}

func (c *compiled) field(ep upstream.Endpoint, s *upstream.Schema, name string) (getter, *upstream.Field, error) {
	f, ok := s.Field(name)
	g, link := getterFor(ep, name)
	if !ok || g == nil {
		return nil, nil, &upstream.InvalidError{Param: "where", Field: name, Problem: "not supported by the simulator"}
	}
	if ep == upstream.RefDomains && link {
		c.linkLevel = true
		// A link column of a referring domain is read from the link the
		// domain is being tested with.
		return func(r *row) val {
			if !r.hasLink {
				return vnull()
			}
			return g(r)
		}, f, nil
	}
	return g, f, nil
}

// modified applies a where modifier (upstream.Modifiers, checked before) to
// a string field's values.
func modified(g getter, modifier string) getter {
	change := strings.ToUpper
	if modifier == "lowercase" {
		change = strings.ToLower
	}
	return func(r *row) val {
		v := g(r)
		if v.k == vStr {
			v.s = change(v.s)
		}
		return v
	}
}

type valTest func(v val) bool

func predTest(k upstream.Kind, p upstream.Pred, ord *ordering) (valTest, error) {
	switch p := p.(type) {
	case upstream.PredAnd:
		ts, err := predTests(k, p, ord)
		if err != nil {
			return nil, err
		}
		return func(v val) bool {
			for _, t := range ts {
				if !t(v) {
					return false
				}
			}
			return true
		}, nil
	case upstream.PredOr:
		ts, err := predTests(k, p, ord)
		if err != nil {
			return nil, err
		}
		return func(v val) bool {
			for _, t := range ts {
				if t(v) {
					return true
				}
			}
			return false
		}, nil
	case upstream.PredNot:
		t, err := predTest(k, p.X, ord)
		if err != nil {
			return nil, err
		}
		return func(v val) bool { return !t(v) }, nil
	case upstream.Cond:
		return condTest(k, p, ord)
	}
	return nil, fmt.Errorf("unknown condition node %T", p)
}

func predTests(k upstream.Kind, ps []upstream.Pred, ord *ordering) ([]valTest, error) {
	ts := make([]valTest, len(ps))
	for i, p := range ps {
		t, err := predTest(k, p, ord)
		if err != nil {
			return nil, err
		}
		ts[i] = t
	}
	return ts, nil
}

// condTest compiles one condition on a value of kind k. Every comparison
// with a value is false for a null field (even neq), which agrees with
// nulls sorting below every value only as far as a where can see: use
// is_null to find them.
func condTest(k upstream.Kind, c upstream.Cond, ord *ordering) (valTest, error) {
	switch c.Op {
	case upstream.OpIsNull:
		return func(v val) bool { return v.k == vNull }, nil
	case upstream.OpEmpty:
		return func(v val) bool {
			switch v.k {
			case vStr:
				return v.s == ""
			case vStrs, vInts:
				return len(v.ss)+len(v.ns) == 0
			}
			return false
		}, nil
	}
	if c.Op.IsTextMatch() {
		s, ok := c.Value.(string)
		if !ok {
			return nil, fmt.Errorf("%s needs a string", c.Op)
		}
		m, err := textMatcher(c.Op, s)
		if err != nil {
			return nil, err
		}
		return func(v val) bool { return v.k == vStr && m(v.s) }, nil
	}
	ref, err := refValue(k, c.Value)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.Op, err)
	}
	var ok func(int) bool
	switch c.Op {
	case upstream.OpEq:
		ok = func(x int) bool { return x == 0 }
	case upstream.OpNeq:
		ok = func(x int) bool { return x != 0 }
	case upstream.OpGt:
		ok = func(x int) bool { return x > 0 }
	case upstream.OpGte:
		ok = func(x int) bool { return x >= 0 }
	case upstream.OpLt:
		ok = func(x int) bool { return x < 0 }
	case upstream.OpLte:
		ok = func(x int) bool { return x <= 0 }
	default:
		return nil, fmt.Errorf("unknown operator %q", c.Op)
	}
	return func(v val) bool { return v.k != vNull && ok(ord.whereCompare(v, ref)) }, nil
}

// refValue converts a where value to the field's runtime kind, so that the
// comparison uses the same order as order_by.
func refValue(k upstream.Kind, x any) (val, error) {
	switch k {
	case upstream.KindString:
		if s, ok := x.(string); ok {
			return vs(s), nil
		}
	case upstream.KindInt:
		if n, ok := x.(int64); ok {
			return vi(n), nil
		}
	case upstream.KindFloat:
		switch n := x.(type) {
		case int64:
			return vf(float64(n)), nil
		case float64:
			return vf(n), nil
		}
	case upstream.KindBool:
		if b, ok := x.(bool); ok {
			return vb(b), nil
		}
	case upstream.KindTime, upstream.KindDate:
		if s, ok := x.(string); ok {
			t, err := upstream.ParseTime(s)
			if err != nil {
				return val{}, err
			}
			return vtu(t.Unix()), nil
		}
	}
	return val{}, fmt.Errorf("value %v does not suit a %s", x, k)
}

func textMatcher(op upstream.Op, s string) (func(string) bool, error) {
	switch op {
	case upstream.OpSubstring:
		return func(v string) bool { return strings.Contains(v, s) }, nil
	case upstream.OpISubstring:
		ls := strings.ToLower(s)
		return func(v string) bool { return strings.Contains(strings.ToLower(v), ls) }, nil
	case upstream.OpPrefix:
		return func(v string) bool { return strings.HasPrefix(v, s) }, nil
	case upstream.OpSuffix:
		return func(v string) bool { return strings.HasSuffix(v, s) }, nil
	case upstream.OpRegex:
		re, err := regexp.Compile(s)
		if err != nil {
			return nil, fmt.Errorf("invalid RE2 regular expression: %v", err)
		}
		return re.MatchString, nil
	case upstream.OpPhraseMatch, upstream.OpIPhraseMatch:
		// A phrase matches a run of whole words: the phrase's words, in
		// order, with word boundaries on both sides.
		fold := op == upstream.OpIPhraseMatch
		phrase := tokens(s, fold)
		return func(v string) bool { return containsRun(tokens(v, fold), phrase) }, nil
	}
	return nil, fmt.Errorf("unknown operator %q", op)
}

func tokens(s string, fold bool) []string {
	if fold {
		s = strings.ToLower(s)
	}
	return strings.FieldsFunc(s, func(r rune) bool {
		return !(r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r > 127)
	})
}

func containsRun(hay, needle []string) bool {
	if len(needle) == 0 {
		return true
	}
outer:
	for i := 0; i+len(needle) <= len(hay); i++ {
		for k, w := range needle {
			if hay[i+k] != w {
				continue outer
			}
		}
		return true
	}
	return false
}
