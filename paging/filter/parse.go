package filter

import (
	"strconv"
	"strings"
	"time"

	"github.com/linkgate/linkgate/upstream"
)

type nodeKind int

const (
	nAnd nodeKind = iota
	nOr
	nNot
	nCond // a condition on a field (or, inside any/all, on the element)
	nList // any/all over a list field; kids[0] is the element condition
)

// node is the parsed filter before it becomes an upstream.Expr. One type
// serves both the top level and the element conditions of any/all, which
// share the grammar but lower to different upstream types (Expr and Pred).
type node struct {
	kind  nodeKind
	pos   int
	kids  []*node
	field string
	cond  upstream.Cond
	all   bool
}

type parser struct {
	src   string
	toks  []token
	i     int
	s     *upstream.Schema
	depth int
	// elem is the list field whose elements the conditions being parsed
	// test (inside any/all), or nil at the top level.
	elem *upstream.Field
}

func (p *parser) peek() token { return p.toks[p.i] }

func (p *parser) next() token {
	t := p.toks[p.i]
	if t.kind != tEOF {
		p.i++
	}
	return t
}

func (p *parser) errAt(pos int, field, format string, args ...any) *Error {
	return newError(p.src, pos, field, format, args...)
}

func isKeyword(t token, kw string) bool { return t.kind == tIdent && strings.EqualFold(t.text, kw) }

func (p *parser) enter(t token) error {
	p.depth++
	if p.depth > MaxDepth {
		return p.errAt(t.pos, "", "the filter nests deeper than %d levels", MaxDepth)
	}
	return nil
}

func (p *parser) leave() { p.depth-- }

func (p *parser) parseFilter() (*node, error) {
	n, err := p.parseOr()
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != tEOF {
		if t.kind == tRParen {
			return nil, p.errAt(t.pos, "", `unexpected ")": no "(" to close`)
		}
		return nil, p.errAt(t.pos, "", "unexpected %s; expected AND, OR or the end of the filter", describe(t))
	}
	return n, nil
}

func (p *parser) parseOr() (*node, error) {
	first, err := p.parseAnd()
	if err != nil {
		return nil, err
	}
	kids := []*node{first}
	for isKeyword(p.peek(), "OR") {
		p.next()
		n, err := p.parseAnd()
		if err != nil {
			return nil, err
		}
		kids = append(kids, n)
	}
	return join(nOr, kids), nil
}

// parseAnd reads conditions joined by AND or, as in AIP-160, by nothing but
// whitespace: `is_dofollow http_code = 200` is `is_dofollow AND http_code =
// 200`. Juxtaposition is safe here because a condition always starts with
// an identifier, "(", NOT or "-", and values never stand alone.
func (p *parser) parseAnd() (*node, error) {
	first, err := p.parseUnary()
	if err != nil {
		return nil, err
	}
	kids := []*node{first}
	for {
		t := p.peek()
		if isKeyword(t, "AND") {
			p.next()
		} else if !startsCondition(t) {
			break
		}
		n, err := p.parseUnary()
		if err != nil {
			return nil, err
		}
		kids = append(kids, n)
	}
	return join(nAnd, kids), nil
}

func startsCondition(t token) bool {
	switch t.kind {
	case tLParen, tMinus:
		return true
	case tIdent:
		return !isKeyword(t, "OR") && !isKeyword(t, "AND")
	}
	return false
}

// join builds an AND or OR of kids, splicing operands that are themselves
// the same operator: (a AND b) AND c is one and with three operands, which
// keeps the tree shallow.
func join(kind nodeKind, kids []*node) *node {
	if len(kids) == 1 {
		return kids[0]
	}
	n := &node{kind: kind, pos: kids[0].pos}
	for _, k := range kids {
		if k.kind == kind {
			n.kids = append(n.kids, k.kids...)
		} else {
			n.kids = append(n.kids, k)
		}
	}
	return n
}

func (p *parser) parseUnary() (*node, error) {
	t := p.peek()
	if isKeyword(t, "NOT") || t.kind == tMinus {
		p.next()
		if err := p.enter(t); err != nil {
			return nil, err
		}
		defer p.leave()
		x, err := p.parseUnary()
		if err != nil {
			return nil, err
		}
		return &node{kind: nNot, pos: t.pos, kids: []*node{x}}, nil
	}
	return p.parsePrimary()
}

func (p *parser) parsePrimary() (*node, error) {
	t := p.peek()
	switch t.kind {
	case tLParen:
		p.next()
		if err := p.enter(t); err != nil {
			return nil, err
		}
		defer p.leave()
		n, err := p.parseOr()
		if err != nil {
			return nil, err
		}
		if c := p.peek(); c.kind != tRParen {
			col := newError(p.src, t.pos, "", "").Column
			return nil, p.errAt(c.pos, "", `expected ")" to close the "(" at column %d, got %s`, col, describe(c))
		}
		p.next()
		return n, nil
	case tIdent:
		if isKeyword(t, "AND") || isKeyword(t, "OR") {
			return nil, p.errAt(t.pos, "", "expected a condition before %s", strings.ToUpper(t.text))
		}
		if p.toks[p.i+1].kind == tLParen {
			return p.parseCall()
		}
		return p.parseComparison()
	}
	return nil, p.errAt(t.pos, "", "expected a condition (a field, a function, NOT or \"(\"), got %s", describe(t))
}

// ref is a field as it is used in a condition: a field of the dataset, or
// "_", the element of the list that any/all is iterating.
type ref struct {
	name string
	pos  int
	kind upstream.Kind
	elem bool // ref is "_"
}

// field resolves an identifier to a field the dataset accepts in where.
func (p *parser) field(t token) (ref, error) {
	if t.kind != tIdent {
		return ref{}, p.errAt(t.pos, "", "expected a field name, got %s", describe(t))
	}
	name := t.text
	if name == "_" {
		if p.elem == nil {
			return ref{}, p.errAt(t.pos, "", "_ stands for a list element and is only allowed inside any() or all()")
		}
		return ref{name: p.elem.Name, pos: t.pos, kind: p.elem.Kind.Elem(), elem: true}, nil
	}
	for _, kw := range []string{"true", "false", "null", "not", "and", "or"} {
		if strings.EqualFold(name, kw) {
			return ref{}, p.errAt(t.pos, "", "expected a field name, got %s", describe(t))
		}
	}
	if p.peek().kind == tLParen {
		// contains(contains(anchor, "a"), "b"): a call where a field must be.
		return ref{}, p.errAt(t.pos, "", "expected a field name, got the function call %s(…): functions take a field, not another function; "+
			"combine conditions with AND or OR, e.g. contains(anchor, \"a\") AND contains(anchor, \"b\")", name)
	}
	if p.elem != nil {
		return ref{}, p.errAt(t.pos, name, "inside any(%s, …) or all(%s, …) a condition tests the element: write _ instead of a field name", p.elem.Name, p.elem.Name)
	}
	f, ok := p.s.Field(name)
	if !ok {
		return ref{}, p.errAt(t.pos, name, "%s", unknownField(p.s, name))
	}
	if !f.Where {
		return ref{}, p.errAt(t.pos, name, "%s cannot filter on this field (it can only be selected)", p.s.Endpoint)
	}
	return ref{name: f.Name, pos: t.pos, kind: f.Kind}, nil
}

func (p *parser) parseComparison() (*node, error) {
	ft := p.next()
	r, err := p.field(ft)
	if err != nil {
		return nil, err
	}
	op := p.peek()
	if op.kind != tOp {
		// A boolean field alone reads as a sentence: is_dofollow AND NOT is_spam.
		if r.kind == upstream.KindBool {
			return p.cond(r, upstream.OpEq, true), nil
		}
		return nil, p.errAt(op.pos, r.name, "a %s needs a comparison such as =, <, : or a function, got %s", r.kind, describe(op))
	}
	p.next()
	v, err := p.parseValue(op)
	if err != nil {
		return nil, err
	}
	return p.compare(r, op, v)
}

type valKind int

const (
	vString valKind = iota
	vInt
	vFloat
	vBool
	vNull
	vDate
)

// value is a literal as written; it gets its upstream type only once the
// field it is compared with is known.
type value struct {
	kind         valKind
	pos          int
	text         string // as written, for messages
	s            string
	i            int64
	f            float64
	b            bool
	starL, starR bool
}

func (v value) describe() string {
	switch v.kind {
	case vString:
		return "the string " + v.text
	case vInt, vFloat:
		return "the number " + v.text
	case vBool:
		return "the boolean " + v.text
	case vNull:
		return "null"
	}
	return "the date " + v.text
}

// parseValue reads the literal after an operator (or a function's comma);
// after names what came before, for the message when it is missing.
func (p *parser) parseValue(after token) (value, error) {
	t := p.next()
	switch t.kind {
	case tString:
		return value{kind: vString, pos: t.pos, text: t.text, s: t.str, starL: t.starL, starR: t.starR}, nil
	case tDate:
		return value{kind: vDate, pos: t.pos, text: t.text, s: t.str}, nil
	case tInt, tFloat:
		return p.number(t.pos, t)
	case tMinus:
		n := p.peek()
		if (n.kind == tInt || n.kind == tFloat) && n.pos == t.pos+1 {
			p.next()
			return p.number(t.pos, n)
		}
	case tIdent:
		switch strings.ToLower(t.text) {
		case "true", "false":
			return value{kind: vBool, pos: t.pos, text: strings.ToLower(t.text), b: strings.EqualFold(t.text, "true")}, nil
		case "null":
			return value{kind: vNull, pos: t.pos, text: "null"}, nil
		}
		return value{}, p.errAt(t.pos, "", "expected a value after %q, got %s; quote text: \"%s\"", after.text, describe(t), t.text)
	}
	return value{}, p.errAt(t.pos, "", "expected a value after %q, got %s", after.text, describe(t))
}

// number converts a numeric token; pos is where the literal starts, which
// is the sign if there is one.
func (p *parser) number(pos int, t token) (value, error) {
	text := p.src[pos : t.pos+len(t.text)]
	if t.kind == tInt {
		i, err := strconv.ParseInt(text, 10, 64)
		if err != nil {
			return value{}, p.errAt(pos, "", "the integer %s is out of range", text)
		}
		return value{kind: vInt, pos: pos, text: text, i: i}, nil
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil {
		return value{}, p.errAt(pos, "", "the number %s is out of range", text)
	}
	return value{kind: vFloat, pos: pos, text: text, f: f}, nil
}

func (p *parser) cond(r ref, op upstream.Op, val any) *node {
	return &node{kind: nCond, pos: r.pos, field: r.name, cond: upstream.Cond{Op: op, Value: val}}
}

func not(n *node) *node { return &node{kind: nNot, pos: n.pos, kids: []*node{n}} }

var orderOps = map[string]upstream.Op{"<": upstream.OpLt, "<=": upstream.OpLte, ">": upstream.OpGt, ">=": upstream.OpGte}

// compare turns `field op value` into a condition.
func (p *parser) compare(r ref, op token, v value) (*node, error) {
	if r.kind.IsList() {
		return p.compareList(r, op, v)
	}
	if v.kind == vNull {
		switch op.text {
		case "=":
			return p.cond(r, upstream.OpIsNull, nil), nil
		case "!=":
			return not(p.cond(r, upstream.OpIsNull, nil)), nil
		}
		return nil, p.errAt(op.pos, r.name, "null can only be compared with = or !=")
	}
	if day, ok := wholeDay(r, v); ok {
		return p.onDay(r, op, day)
	}
	switch op.text {
	case "=", "!=":
		// != is NOT =, whatever the value: a null is not equal to "x", so
		// f != "x" keeps the rows where f is null, as NOT f = "x",
		// f != "*x*" and f !~ "x" do. (The upstream's neq would drop them.)
		n, err := p.equal(r, v)
		if err != nil || op.text == "=" {
			return n, err
		}
		return not(n), nil
	case "<", "<=", ">", ">=":
		if r.kind == upstream.KindBool {
			return nil, p.errAt(op.pos, r.name, "a boolean has no order: use = true or = false")
		}
		val, err := p.literal(r, v)
		if err != nil {
			return nil, err
		}
		return p.cond(r, orderOps[op.text], val), nil
	case ":":
		// AIP-160's "has": text contains the value; any other value equals it.
		if r.kind == upstream.KindString {
			s, err := p.text(r, v)
			if err != nil {
				return nil, err
			}
			return p.cond(r, upstream.OpSubstring, s), nil
		}
		val, err := p.literal(r, v)
		if err != nil {
			return nil, err
		}
		return p.cond(r, upstream.OpEq, val), nil
	case "=~", "!~":
		n, err := p.textMatch(r, upstream.OpRegex, v)
		if err != nil || op.text == "=~" {
			return n, err
		}
		return not(n), nil
	}
	return nil, p.errAt(op.pos, r.name, "unknown operator %q", op.text)
}

// wholeDay reports whether v is a date without a time compared with a
// date-time field: such a comparison is about the whole day, in UTC.
func wholeDay(r ref, v value) (time.Time, bool) {
	if r.kind != upstream.KindTime || (v.kind != vDate && v.kind != vString) || len(v.s) != len(time.DateOnly) {
		return time.Time{}, false
	}
	d, err := time.Parse(time.DateOnly, v.s)
	return d, err == nil
}

// onDay compares a date-time field with a whole day [day, day+1): = and :
// are within the day, != outside it, < and >= compare with its first
// instant, <= and > with its last.
func (p *parser) onDay(r ref, op token, day time.Time) (*node, error) {
	start, next := day.Format(time.DateOnly), day.AddDate(0, 0, 1).Format(time.DateOnly)
	within := func() *node {
		return &node{kind: nAnd, pos: r.pos, kids: []*node{p.cond(r, upstream.OpGte, start), p.cond(r, upstream.OpLt, next)}}
	}
	switch op.text {
	case "=", ":":
		return within(), nil
	case "!=":
		return not(within()), nil
	case "<":
		return p.cond(r, upstream.OpLt, start), nil
	case "<=":
		return p.cond(r, upstream.OpLt, next), nil
	case ">":
		return p.cond(r, upstream.OpGte, next), nil
	case ">=":
		return p.cond(r, upstream.OpGte, start), nil
	}
	return nil, p.errAt(op.pos, r.name, "a date-time is compared with =, !=, <, <=, > or >=, not %q", op.text)
}

// compareList handles a list field outside any/all: only null checks and
// AIP-160's "has" (an element equals the value) make sense on the list as a
// whole.
func (p *parser) compareList(r ref, op token, v value) (*node, error) {
	switch {
	case v.kind == vNull && op.text == "=":
		return p.cond(r, upstream.OpIsNull, nil), nil
	case v.kind == vNull && op.text == "!=":
		return not(p.cond(r, upstream.OpIsNull, nil)), nil
	case op.text == ":":
		er := ref{name: r.name, pos: r.pos, kind: r.kind.Elem(), elem: true}
		el, err := p.equal(er, v)
		if err != nil {
			return nil, err
		}
		return &node{kind: nList, pos: r.pos, field: r.name, kids: []*node{el}}, nil
	}
	return nil, p.errAt(op.pos, r.name, "a %s cannot be compared with %q: use %s:value, any(%s, …) or all(%s, …)", r.kind, op.text, r.name, r.name, r.name)
}

// equal is `field = value`, where a string value with a leading or trailing
// "*" is a wildcard, as in AIP-160: "*seo*" contains, "seo*" starts with,
// "*seo" ends with. The upstream has no glob, so only the ends are special.
func (p *parser) equal(r ref, v value) (*node, error) {
	if r.kind == upstream.KindString && v.kind == vString && (v.starL || v.starR) {
		core := v.s
		if v.starL {
			core = core[1:]
		}
		if v.starR {
			core = core[:len(core)-1]
		}
		if core == "" {
			return nil, p.errAt(v.pos, r.name, `a wildcard needs some text besides "*"; to test for a value, write %s != null or NOT empty(%s)`, fieldText(r), fieldText(r))
		}
		op := upstream.OpSubstring
		switch {
		case !v.starL:
			op = upstream.OpPrefix
		case !v.starR:
			op = upstream.OpSuffix
		}
		return p.cond(r, op, core), nil
	}
	if v3, ok := upstream.V3Value(r.name, v.s); ok && v.kind == vString {
		return nil, p.errAt(v.pos, r.name, "%q is the Ahrefs v2 value; v3 calls it %q", v.s, v3)
	}
	val, err := p.literal(r, v)
	if err != nil {
		return nil, err
	}
	return p.cond(r, upstream.OpEq, val), nil
}

func fieldText(r ref) string {
	if r.elem {
		return "_"
	}
	return r.name
}

// literal converts v to the type of r's values, or says why it cannot.
func (p *parser) literal(r ref, v value) (any, error) {
	bad := func() error {
		hint := ""
		if v.kind == vString && r.kind != upstream.KindString {
			if _, err := strconv.ParseFloat(v.s, 64); err == nil {
				hint = "; write numbers without quotes"
			} else if strings.EqualFold(v.s, "true") || strings.EqualFold(v.s, "false") {
				hint = "; write true or false without quotes"
			}
		}
		if v.kind == vDate && r.kind == upstream.KindString {
			hint = "; quote text"
		}
		return p.errAt(v.pos, r.name, "needs %s, got %s%s", article(r.kind), v.describe(), hint)
	}
	switch r.kind {
	case upstream.KindString:
		if v.kind == vString {
			return v.s, nil
		}
	case upstream.KindInt:
		if v.kind == vInt {
			return v.i, nil
		}
	case upstream.KindFloat:
		// An integer is a fine value for a number field; it stays an integer
		// in the JSON, which means the same.
		switch v.kind {
		case vInt:
			return v.i, nil
		case vFloat:
			return v.f, nil
		}
	case upstream.KindBool:
		if v.kind == vBool {
			return v.b, nil
		}
	case upstream.KindTime, upstream.KindDate:
		if v.kind == vString || v.kind == vDate {
			if _, err := upstream.ParseTime(v.s); err != nil {
				return nil, p.errAt(v.pos, r.name, "needs a date (YYYY-MM-DD) or an RFC 3339 date-time, got %s", v.describe())
			}
			return v.s, nil
		}
	}
	return nil, bad()
}

func article(k upstream.Kind) string {
	switch k {
	case upstream.KindInt:
		return "an integer"
	case upstream.KindBool:
		return "a boolean (true or false)"
	case upstream.KindTime:
		return "a date-time"
	}
	return "a " + k.String()
}

// text checks that r holds text and v is a string.
func (p *parser) text(r ref, v value) (string, error) {
	if v.kind != vString {
		return "", p.errAt(v.pos, r.name, "needs a quoted string, got %s", v.describe())
	}
	return v.s, nil
}

// textMatch is a text operator (substring, prefix, regex, …) on r.
func (p *parser) textMatch(r ref, op upstream.Op, v value) (*node, error) {
	if r.kind != upstream.KindString {
		return nil, p.errAt(r.pos, r.name, "%s applies to text, and this field is %s", opVerb(op), article(r.kind))
	}
	s, err := p.text(r, v)
	if err != nil {
		return nil, err
	}
	if op == upstream.OpRegex {
		if err := checkRE2(s); err != nil {
			return nil, p.errAt(v.pos, r.name, "%s", err)
		}
	}
	return p.cond(r, op, s), nil
}

func opVerb(op upstream.Op) string {
	if op == upstream.OpRegex {
		return "a regular expression"
	}
	return string(op)
}
