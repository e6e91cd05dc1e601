package upstream

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
)

// Expr is a node of a where tree, the v3 filter grammar:
//
//	bool_filter ::= {"and": [bool_filter+]} | {"or": [bool_filter+]} | {"not": bool_filter} | expr
//	expr        ::= {"field": name, "is": condition} | {"field": name, "list_is": {"any"|"all": cond_filter}}
//
// The concrete types are And, Or, Not, Is and ListIs.
type Expr interface{ isExpr() }

// And holds when every operand holds.
type And []Expr

// Or holds when any operand holds.
type Or []Expr

// Not negates its operand.
type Not struct{ X Expr }

// Is tests the value of a field, or of the field transformed by a
// modifier.
type Is struct {
	Field string
	Cond  Cond
	// Modifier transforms the field's value before the test, e.g.
	// "uppercase"; "" for none. The grammar documents the key but not the
	// set of modifiers; Modifiers lists the ones linkgate knows.
	Modifier string
}

// Modifiers are the where modifiers linkgate knows, each applying to
// strings: the one the filter grammar's example uses and its counterpart.
var Modifiers = map[string]bool{"uppercase": true, "lowercase": true}

// ListIs tests the elements of a list field: any element (or all of them)
// must satisfy Pred.
type ListIs struct {
	Field string
	All   bool
	Pred  Pred
}

func (And) isExpr()    {}
func (Or) isExpr()     {}
func (Not) isExpr()    {}
func (Is) isExpr()     {}
func (ListIs) isExpr() {}

// Pred is a condition filter applied to one list element: a Cond, or
// PredAnd, PredOr, PredNot of conditions.
type Pred interface{ isPred() }

// PredAnd holds when every operand holds.
type PredAnd []Pred

// PredOr holds when any operand holds.
type PredOr []Pred

// PredNot negates its operand.
type PredNot struct{ X Pred }

func (PredAnd) isPred() {}
func (PredOr) isPred()  {}
func (PredNot) isPred() {}
func (Cond) isPred()    {}

// Op is a condition operator.
type Op string

// The operators of the grammar. Empty and IsNull are nullary.
const (
	OpEq           Op = "eq"
	OpNeq          Op = "neq"
	OpGt           Op = "gt"
	OpGte          Op = "gte"
	OpLt           Op = "lt"
	OpLte          Op = "lte"
	OpSubstring    Op = "substring"
	OpISubstring   Op = "isubstring"
	OpPhraseMatch  Op = "phrase_match"
	OpIPhraseMatch Op = "iphrase_match"
	OpPrefix       Op = "prefix"
	OpSuffix       Op = "suffix"
	OpRegex        Op = "regex"
	OpEmpty        Op = "empty"
	OpIsNull       Op = "is_null"
)

var ops = map[Op]bool{
	OpEq: true, OpNeq: true, OpGt: true, OpGte: true, OpLt: true, OpLte: true,
	OpSubstring: true, OpISubstring: true, OpPhraseMatch: true, OpIPhraseMatch: true,
	OpPrefix: true, OpSuffix: true, OpRegex: true, OpEmpty: false, OpIsNull: false,
}

// nullary reports whether the operator takes no value.
func (o Op) nullary() bool { return o == OpEmpty || o == OpIsNull }

// IsTextMatch reports whether the operator matches text.
func (o Op) IsTextMatch() bool {
	switch o {
	case OpSubstring, OpISubstring, OpPhraseMatch, OpIPhraseMatch, OpPrefix, OpSuffix, OpRegex:
		return true
	}
	return false
}

// isOrdering reports whether the operator compares by order.
func (o Op) isOrdering() bool { return o == OpGt || o == OpGte || o == OpLt || o == OpLte }

// Cond is a condition: an operator with a value, or a nullary operator.
// Values are string, int64, float64 or bool.
type Cond struct {
	Op    Op
	Value any
}

// maxWhereDepth bounds the nesting of a where tree so that untrusted input
// cannot exhaust the stack.
const maxWhereDepth = 64

// MarshalWhere encodes a where tree in the documented JSON grammar.
func MarshalWhere(e Expr) ([]byte, error) {
	var buf bytes.Buffer
	if err := encodeExpr(&buf, e); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func encodeExpr(buf *bytes.Buffer, e Expr) error {
	switch e := e.(type) {
	case And:
		return encodeList(buf, "and", len(e), func(i int) error { return encodeExpr(buf, e[i]) })
	case Or:
		return encodeList(buf, "or", len(e), func(i int) error { return encodeExpr(buf, e[i]) })
	case Not:
		buf.WriteString(`{"not":`)
		if err := encodeExpr(buf, e.X); err != nil {
			return err
		}
		buf.WriteByte('}')
	case Is:
		buf.WriteString(`{"field":`)
		writeJSONString(buf, e.Field)
		if e.Modifier != "" {
			buf.WriteString(`,"modifier":`)
			writeJSONString(buf, e.Modifier)
		}
		buf.WriteString(`,"is":`)
		if err := encodeCond(buf, e.Cond); err != nil {
			return err
		}
		buf.WriteByte('}')
	case ListIs:
		buf.WriteString(`{"field":`)
		writeJSONString(buf, e.Field)
		if e.All {
			buf.WriteString(`,"list_is":{"all":`)
		} else {
			buf.WriteString(`,"list_is":{"any":`)
		}
		if err := encodePred(buf, e.Pred); err != nil {
			return err
		}
		buf.WriteString("}}")
	default:
		return fmt.Errorf("where: unknown node %T", e)
	}
	return nil
}

func encodePred(buf *bytes.Buffer, p Pred) error {
	switch p := p.(type) {
	case PredAnd:
		return encodeList(buf, "and", len(p), func(i int) error { return encodePred(buf, p[i]) })
	case PredOr:
		return encodeList(buf, "or", len(p), func(i int) error { return encodePred(buf, p[i]) })
	case PredNot:
		buf.WriteString(`{"not":`)
		if err := encodePred(buf, p.X); err != nil {
			return err
		}
		buf.WriteByte('}')
	case Cond:
		return encodeCond(buf, p)
	default:
		return fmt.Errorf("where: unknown condition node %T", p)
	}
	return nil
}

func encodeList(buf *bytes.Buffer, key string, n int, item func(int) error) error {
	if n == 0 {
		return fmt.Errorf("where: %q needs at least one operand", key)
	}
	buf.WriteString(`{"` + key + `":[`)
	for i := 0; i < n; i++ {
		if i > 0 {
			buf.WriteByte(',')
		}
		if err := item(i); err != nil {
			return err
		}
	}
	buf.WriteString("]}")
	return nil
}

func encodeCond(buf *bytes.Buffer, c Cond) error {
	known, ok := ops[c.Op]
	if !ok && !c.Op.nullary() {
		return fmt.Errorf("where: unknown operator %q", c.Op)
	}
	if !known {
		writeJSONString(buf, string(c.Op))
		return nil
	}
	buf.WriteString(`["` + string(c.Op) + `",`)
	switch v := c.Value.(type) {
	case string:
		writeJSONString(buf, v)
	case int64:
		buf.WriteString(strconv.FormatInt(v, 10))
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("where: %v is not a JSON number", v)
		}
		buf.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
	case bool:
		buf.WriteString(strconv.FormatBool(v))
	default:
		return fmt.Errorf("where: operator %q has a value of unsupported type %T", c.Op, c.Value)
	}
	buf.WriteByte(']')
	return nil
}

func writeJSONString(buf *bytes.Buffer, s string) {
	b, _ := json.Marshal(s) // a string always marshals
	buf.Write(b)
}

// ParseWhere decodes a where tree from its JSON form, checking the grammar
// but not the fields (see Schema.CheckWhere).
func ParseWhere(data []byte) (Expr, error) {
	raw, err := decodeRaw(data)
	if err != nil {
		return nil, fmt.Errorf("where: %w", err)
	}
	return parseExpr(raw, 0)
}

func decodeRaw(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("invalid JSON: trailing data")
	}
	return v, nil
}

func parseExpr(v any, depth int) (Expr, error) {
	if depth > maxWhereDepth {
		return nil, fmt.Errorf("where: nested deeper than %d levels", maxWhereDepth)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("where: expected an object, got %s", jsonType(v))
	}
	if len(obj) == 1 {
		for key, val := range obj {
			switch key {
			case "and", "or":
				items, err := operands(key, val)
				if err != nil {
					return nil, err
				}
				list := make([]Expr, len(items))
				for i, item := range items {
					if list[i], err = parseExpr(item, depth+1); err != nil {
						return nil, err
					}
				}
				if key == "and" {
					return And(list), nil
				}
				return Or(list), nil
			case "not":
				x, err := parseExpr(val, depth+1)
				if err != nil {
					return nil, err
				}
				return Not{X: x}, nil
			}
		}
	}
	return parseFieldExpr(obj, depth)
}

func parseFieldExpr(obj map[string]any, depth int) (Expr, error) {
	field, ok := obj["field"].(string)
	if !ok {
		return nil, errors.New(`where: expected "and", "or", "not", or an object with a string "field"`)
	}
	is, hasIs := obj["is"]
	listIs, hasListIs := obj["list_is"]
	mod, hasMod := obj["modifier"]
	for key := range obj {
		if key != "field" && key != "is" && key != "list_is" && key != "modifier" {
			return nil, fmt.Errorf("where: field %q: unknown key %q", field, key)
		}
	}
	modifier, ok := mod.(string)
	switch {
	case hasMod && (!ok || modifier == ""):
		return nil, fmt.Errorf(`where: field %q: "modifier" must be a non-empty string`, field)
	case hasMod && hasListIs:
		return nil, fmt.Errorf(`where: field %q: "modifier" applies to "is", not to "list_is"`, field)
	}
	switch {
	case hasIs && hasListIs:
		return nil, fmt.Errorf(`where: field %q: "is" and "list_is" are exclusive`, field)
	case hasIs:
		c, err := parseCond(is)
		if err != nil {
			return nil, fmt.Errorf("where: field %q: %w", field, err)
		}
		return Is{Field: field, Cond: c, Modifier: modifier}, nil
	case hasListIs:
		q, ok := listIs.(map[string]any)
		if !ok || len(q) != 1 {
			return nil, fmt.Errorf(`where: field %q: "list_is" must be {"any": …} or {"all": …}`, field)
		}
		for key, val := range q {
			if key != "any" && key != "all" {
				return nil, fmt.Errorf(`where: field %q: "list_is" must be {"any": …} or {"all": …}, not %q`, field, key)
			}
			p, err := parsePred(val, depth+1)
			if err != nil {
				return nil, fmt.Errorf("where: field %q: %w", field, err)
			}
			return ListIs{Field: field, All: key == "all", Pred: p}, nil
		}
	}
	return nil, fmt.Errorf(`where: field %q: needs "is" or "list_is"`, field)
}

func parsePred(v any, depth int) (Pred, error) {
	if depth > maxWhereDepth {
		return nil, fmt.Errorf("nested deeper than %d levels", maxWhereDepth)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return parseCond(v)
	}
	if len(obj) != 1 {
		return nil, errors.New(`a condition filter is a condition or one of {"and": …}, {"or": …}, {"not": …}`)
	}
	for key, val := range obj {
		switch key {
		case "and", "or":
			items, err := operands(key, val)
			if err != nil {
				return nil, err
			}
			list := make([]Pred, len(items))
			for i, item := range items {
				if list[i], err = parsePred(item, depth+1); err != nil {
					return nil, err
				}
			}
			if key == "and" {
				return PredAnd(list), nil
			}
			return PredOr(list), nil
		case "not":
			x, err := parsePred(val, depth+1)
			if err != nil {
				return nil, err
			}
			return PredNot{X: x}, nil
		default:
			return nil, fmt.Errorf("unknown key %q in a condition filter", key)
		}
	}
	panic("unreachable")
}

func operands(key string, val any) ([]any, error) {
	items, ok := val.([]any)
	if !ok || len(items) == 0 {
		return nil, fmt.Errorf("where: %q needs a non-empty array", key)
	}
	return items, nil
}

func parseCond(v any) (Cond, error) {
	switch v := v.(type) {
	case string:
		op := Op(v)
		if !op.nullary() {
			return Cond{}, fmt.Errorf("condition %q: only \"empty\" and \"is_null\" stand alone; others are [operator, value]", v)
		}
		return Cond{Op: op}, nil
	case []any:
		if len(v) != 2 {
			return Cond{}, fmt.Errorf("a condition is [operator, value], got %d elements", len(v))
		}
		name, ok := v[0].(string)
		if !ok {
			return Cond{}, errors.New("a condition's operator must be a string")
		}
		op := Op(name)
		if takesValue, known := ops[op]; !known || !takesValue {
			return Cond{}, fmt.Errorf("unknown operator %q", name)
		}
		val, err := parseValue(v[1])
		if err != nil {
			return Cond{}, fmt.Errorf("operator %q: %w", name, err)
		}
		return Cond{Op: op, Value: val}, nil
	}
	return Cond{}, fmt.Errorf("a condition is [operator, value] or \"empty\" or \"is_null\", got %s", jsonType(v))
}

func parseValue(v any) (any, error) {
	switch v := v.(type) {
	case string, bool:
		return v, nil
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i, nil
		}
		f, err := v.Float64()
		if err != nil {
			return nil, fmt.Errorf("number %s out of range", v)
		}
		return f, nil
	}
	return nil, fmt.Errorf("value must be a string, number or boolean, got %s", jsonType(v))
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return "a string"
	case json.Number, float64:
		return "a number"
	case bool:
		return "a boolean"
	}
	return fmt.Sprintf("%T", v)
}

// whereFields returns the distinct field names a tree mentions, in order of
// first appearance.
func whereFields(e Expr) []string {
	var names []string
	seen := map[string]bool{}
	var walk func(Expr)
	walk = func(e Expr) {
		switch e := e.(type) {
		case And:
			for _, x := range e {
				walk(x)
			}
		case Or:
			for _, x := range e {
				walk(x)
			}
		case Not:
			walk(e.X)
		case Is:
			if !seen[e.Field] {
				seen[e.Field] = true
				names = append(names, e.Field)
			}
		case ListIs:
			if !seen[e.Field] {
				seen[e.Field] = true
				names = append(names, e.Field)
			}
		}
	}
	if e != nil {
		walk(e)
	}
	return names
}
