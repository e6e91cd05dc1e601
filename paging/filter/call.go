package filter

import (
	"fmt"
	"regexp"
	"regexp/syntax"
	"sort"
	"strings"

	"github.com/linkgate/linkgate/internal/suggest"
	"github.com/linkgate/linkgate/upstream"
)

// textFuncs are the functions `name(field, "text")`. The canonical names
// are the upstream operators' (so the mapping is obvious to anyone who knows
// the Ahrefs API); the CEL spellings are accepted too because that is what
// people reach for first.
var textFuncs = map[string]upstream.Op{
	"contains":    upstream.OpSubstring,
	"icontains":   upstream.OpISubstring,
	"prefix":      upstream.OpPrefix,
	"startswith":  upstream.OpPrefix,
	"starts_with": upstream.OpPrefix,
	"suffix":      upstream.OpSuffix,
	"endswith":    upstream.OpSuffix,
	"ends_with":   upstream.OpSuffix,
	"phrase":      upstream.OpPhraseMatch,
	"iphrase":     upstream.OpIPhraseMatch,
	"regex":       upstream.OpRegex,
	"matches":     upstream.OpRegex,
}

const funcList = "contains, icontains, prefix, suffix, phrase, iphrase, regex, empty, is_null, any, all"

// parseCall reads `name(args)`. Function names are case-insensitive, like
// the keywords.
func (p *parser) parseCall() (*node, error) {
	nt := p.next()
	open := p.next() // "("
	name := strings.ToLower(nt.text)
	switch {
	case textFuncs[name] != "":
		r, err := p.field(p.next())
		if err != nil {
			return nil, err
		}
		if r.kind.IsList() {
			return nil, p.errAt(r.pos, r.name, "%s tests text, and this field is a %s: test its elements with any(%s, %s(_, …))", nt.text, r.kind, r.name, name)
		}
		comma, err := p.expect(tComma, nt.text+"(field, value)")
		if err != nil {
			return nil, err
		}
		v, err := p.parseValue(comma)
		if err != nil {
			return nil, err
		}
		n, err := p.textMatch(r, textFuncs[name], v)
		if err != nil {
			return nil, err
		}
		_, err = p.expect(tRParen, nt.text+"(field, value)")
		return n, err
	case name == "empty" || name == "is_null":
		r, err := p.field(p.next())
		if err != nil {
			return nil, err
		}
		if name == "empty" && r.kind != upstream.KindString && !r.kind.IsList() {
			return nil, p.errAt(r.pos, r.name, "empty applies to text and lists, and this field is %s", article(r.kind))
		}
		if _, err := p.expect(tRParen, nt.text+"(field)"); err != nil {
			return nil, err
		}
		return p.cond(r, upstream.Op(name), nil), nil
	case name == "any" || name == "all":
		return p.parseQuantifier(nt, open, name == "all")
	}
	return nil, p.errAt(nt.pos, "", "unknown function %q; the functions are %s", nt.text, funcList)
}

// parseQuantifier reads any(list, cond) or all(list, cond). Inside cond the
// element is written "_"; a lone literal is shorthand for _ = literal.
func (p *parser) parseQuantifier(nt, open token, all bool) (*node, error) {
	if p.elem != nil {
		return nil, p.errAt(nt.pos, "", "%s() cannot be nested inside any() or all()", nt.text)
	}
	if err := p.enter(open); err != nil {
		return nil, err
	}
	defer p.leave()
	ft := p.next()
	r, err := p.field(ft)
	if err != nil {
		return nil, err
	}
	if !r.kind.IsList() {
		return nil, p.errAt(r.pos, r.name, "%s() needs a list field, and this field is %s", nt.text, article(r.kind))
	}
	if _, err := p.expect(tComma, nt.text+"(field, condition)"); err != nil {
		return nil, err
	}
	f, _ := p.s.Field(r.name)
	p.elem = f
	defer func() { p.elem = nil }()

	var el *node
	if t := p.peek(); isLiteral(t) && p.toks[p.i+1].kind != tOp {
		v, err := p.parseValue(t)
		if err != nil {
			return nil, err
		}
		if el, err = p.equal(ref{name: r.name, pos: v.pos, kind: r.kind.Elem(), elem: true}, v); err != nil {
			return nil, err
		}
	} else if el, err = p.parseOr(); err != nil {
		return nil, err
	}
	if _, err := p.expect(tRParen, nt.text+"(field, condition)"); err != nil {
		return nil, err
	}
	return &node{kind: nList, pos: nt.pos, field: r.name, all: all, kids: []*node{el}}, nil
}

func isLiteral(t token) bool {
	switch t.kind {
	case tString, tInt, tFloat, tDate:
		return true
	case tIdent:
		return isKeyword(t, "true") || isKeyword(t, "false") || isKeyword(t, "null")
	}
	return false
}

func (p *parser) expect(kind tokKind, form string) (token, error) {
	t := p.next()
	if t.kind != kind {
		want := map[tokKind]string{tComma: `","`, tRParen: `")"`}[kind]
		return t, p.errAt(t.pos, "", "expected %s in %s, got %s", want, form, describe(t))
	}
	return t, nil
}

// checkRE2 compiles a regular expression the way the upstream will (RE2, of
// which Go's regexp is an implementation), so that a bad one is rejected
// before it costs anything.
func checkRE2(s string) error {
	if _, err := regexp.Compile(s); err != nil {
		if se, ok := err.(*syntax.Error); ok {
			return fmt.Errorf("invalid regular expression (RE2): %s: `%s`", se.Code, se.Expr)
		}
		return fmt.Errorf("invalid regular expression (RE2): %v", err)
	}
	return nil
}

// lowerExpr turns a top-level node into the upstream tree. depth is the
// node's depth below the root, bounded like upstream.ParseWhere bounds it.
func (p *parser) lowerExpr(n *node, depth int) (upstream.Expr, error) {
	if depth > maxTreeDepth {
		return nil, p.errAt(n.pos, "", "the filter nests AND and OR too deeply for the upstream (%d levels); remove parentheses or split it", maxTreeDepth)
	}
	switch n.kind {
	case nAnd, nOr:
		list := make([]upstream.Expr, len(n.kids))
		for i, k := range n.kids {
			x, err := p.lowerExpr(k, depth+1)
			if err != nil {
				return nil, err
			}
			list[i] = x
		}
		if n.kind == nAnd {
			return upstream.And(list), nil
		}
		return upstream.Or(list), nil
	case nNot:
		x, err := p.lowerExpr(n.kids[0], depth+1)
		if err != nil {
			return nil, err
		}
		return upstream.Not{X: x}, nil
	case nCond:
		return upstream.Is{Field: n.field, Cond: n.cond}, nil
	}
	pred, err := p.lowerPred(n.kids[0], depth+1)
	if err != nil {
		return nil, err
	}
	return upstream.ListIs{Field: n.field, All: n.all, Pred: pred}, nil
}

func (p *parser) lowerPred(n *node, depth int) (upstream.Pred, error) {
	if depth > maxTreeDepth {
		return nil, p.errAt(n.pos, "", "the filter nests AND and OR too deeply for the upstream (%d levels); remove parentheses or split it", maxTreeDepth)
	}
	switch n.kind {
	case nAnd, nOr:
		list := make([]upstream.Pred, len(n.kids))
		for i, k := range n.kids {
			x, err := p.lowerPred(k, depth+1)
			if err != nil {
				return nil, err
			}
			list[i] = x
		}
		if n.kind == nAnd {
			return upstream.PredAnd(list), nil
		}
		return upstream.PredOr(list), nil
	case nNot:
		x, err := p.lowerPred(n.kids[0], depth+1)
		if err != nil {
			return nil, err
		}
		return upstream.PredNot{X: x}, nil
	}
	// The parser only builds conditions inside any/all (nested any/all is
	// rejected there), so n is a condition.
	return n.cond, nil
}

// unknownField explains a name the dataset does not have: the datasets
// that do have it, or the nearest name it does have.
func unknownField(s *upstream.Schema, name string) string {
	if col, ok := upstream.V3Name(s, name); ok {
		return upstream.V2Hint(col)
	}
	var others []string
	for _, ep := range upstream.Endpoints() {
		if o, err := upstream.SchemaOf(ep); err == nil && ep != s.Endpoint {
			if f, ok := o.Field(name); ok && f.Where {
				others = append(others, string(ep))
			}
		}
	}
	if len(others) > 0 {
		return fmt.Sprintf("not a field of %s (only of %s)", s.Endpoint, strings.Join(others, " and "))
	}
	msg := fmt.Sprintf("unknown field of %s", s.Endpoint)
	if best := nearest(s, name); best != "" {
		msg += fmt.Sprintf("; did you mean %q?", best)
	}
	return msg
}

// nearest is the filterable field closest to name by edit distance, if one
// is close enough to be a plausible typo.
func nearest(s *upstream.Schema, name string) string {
	var names []string
	for _, f := range s.Fields() {
		if f.Where {
			names = append(names, f.Name)
		}
	}
	sort.Strings(names)
	return suggest.Nearest(strings.ToLower(name), names, len(name)/3+2)
}
