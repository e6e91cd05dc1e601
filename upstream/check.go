package upstream

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// InvalidError reports a query the API would reject. It names the parameter
// and, where there is one, the field.
type InvalidError struct {
	Param   string // select, where, order_by, target, mode, ...
	Field   string // the Ahrefs field, if the problem is about one
	Problem string
}

func (e *InvalidError) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: field %q: %s", e.Param, e.Field, e.Problem)
	}
	return fmt.Sprintf("%s: %s", e.Param, e.Problem)
}

func invalid(param, field, format string, args ...any) *InvalidError {
	return &InvalidError{Param: param, Field: field, Problem: fmt.Sprintf(format, args...)}
}

// CheckWhere checks a where tree against the endpoint's catalog: every field
// exists and may be filtered, every operator suits the field's type, and every
// value has the field's type.
func (s *Schema) CheckWhere(e Expr) error {
	switch e := e.(type) {
	case nil:
		return nil
	case And:
		return s.checkAll(e)
	case Or:
		return s.checkAll(e)
	case Not:
		return s.CheckWhere(e.X)
	case Is:
		f, err := s.whereField(e.Field)
		if err != nil {
			return err
		}
		if f.Kind.IsList() && e.Cond.Op != OpEmpty && e.Cond.Op != OpIsNull {
			return invalid("where", f.Name, "is a %s: test its elements with list_is, or use empty", f.Kind)
		}
		if e.Modifier != "" {
			if !Modifiers[e.Modifier] {
				return invalid("where", f.Name, "unknown modifier %q", e.Modifier)
			}
			if f.Kind != KindString {
				return invalid("where", f.Name, "modifier %s applies to strings, not to a %s", e.Modifier, f.Kind)
			}
		}
		return checkCond(f, f.Kind, e.Cond)
	case ListIs:
		f, err := s.whereField(e.Field)
		if err != nil {
			return err
		}
		if !f.Kind.IsList() {
			return invalid("where", f.Name, "is a %s, not a list: use is instead of list_is", f.Kind)
		}
		return checkPred(f, e.Pred)
	}
	return invalid("where", "", "unknown node %T", e)
}

func (s *Schema) checkAll(list []Expr) error {
	if len(list) == 0 {
		return invalid("where", "", "and/or needs at least one operand")
	}
	for _, x := range list {
		if err := s.CheckWhere(x); err != nil {
			return err
		}
	}
	return nil
}

func (s *Schema) whereField(name string) (*Field, error) {
	f, ok := s.Field(name)
	if !ok {
		return nil, invalid("where", name, "unknown field of %s", s.Endpoint)
	}
	if !f.Where {
		return nil, invalid("where", name, "cannot be used in where")
	}
	return f, nil
}

func checkPred(f *Field, p Pred) error {
	switch p := p.(type) {
	case PredAnd:
		for _, x := range p {
			if err := checkPred(f, x); err != nil {
				return err
			}
		}
		return nil
	case PredOr:
		for _, x := range p {
			if err := checkPred(f, x); err != nil {
				return err
			}
		}
		return nil
	case PredNot:
		return checkPred(f, p.X)
	case Cond:
		return checkCond(f, f.Kind.Elem(), p)
	}
	return invalid("where", f.Name, "unknown condition node %T", p)
}

// checkCond checks one condition against a value of kind k (the field's kind,
// or its element kind inside list_is).
func checkCond(f *Field, k Kind, c Cond) error {
	switch {
	case c.Op == OpIsNull:
		return nil
	case c.Op == OpEmpty:
		if k != KindString && !k.IsList() {
			return invalid("where", f.Name, "empty applies to strings and lists, not to a %s", k)
		}
		return nil
	case c.Op.IsTextMatch():
		if k != KindString {
			return invalid("where", f.Name, "%s applies to strings, not to a %s", c.Op, k)
		}
		s, ok := c.Value.(string)
		if !ok {
			return invalid("where", f.Name, "%s needs a string value, got %s", c.Op, valueType(c.Value))
		}
		if c.Op == OpRegex {
			if _, err := regexp.Compile(s); err != nil {
				return invalid("where", f.Name, "invalid RE2 regular expression: %v", err)
			}
		}
		return nil
	case c.Op.isOrdering() && k == KindBool:
		return invalid("where", f.Name, "%s does not apply to a boolean", c.Op)
	case c.Op == OpEq || c.Op == OpNeq || c.Op.isOrdering():
		return checkValue(f, k, c)
	}
	return invalid("where", f.Name, "unknown operator %q", c.Op)
}

// loosen rewrites the value forms the API accepts beyond a field's own type
// into that type: 1 and 0 for booleans and numeric strings for numbers, as
// the Ahrefs web app itself writes them (["eq",1], ["gte","500"]). Values
// that fit neither form are left for CheckWhere to refuse.
func (s *Schema) loosen(e Expr) Expr {
	switch e := e.(type) {
	case And:
		out := make(And, len(e))
		for i, x := range e {
			out[i] = s.loosen(x)
		}
		return out
	case Or:
		out := make(Or, len(e))
		for i, x := range e {
			out[i] = s.loosen(x)
		}
		return out
	case Not:
		return Not{X: s.loosen(e.X)}
	case Is:
		if f, ok := s.Field(e.Field); ok && e.Modifier == "" {
			e.Cond.Value = loosen(f.Kind, e.Cond.Value)
		}
		return e
	case ListIs:
		if f, ok := s.Field(e.Field); ok {
			e.Pred = loosenPred(f.Kind.Elem(), e.Pred)
		}
		return e
	}
	return e
}

func loosenPred(k Kind, p Pred) Pred {
	switch p := p.(type) {
	case PredAnd:
		out := make(PredAnd, len(p))
		for i, x := range p {
			out[i] = loosenPred(k, x)
		}
		return out
	case PredOr:
		out := make(PredOr, len(p))
		for i, x := range p {
			out[i] = loosenPred(k, x)
		}
		return out
	case PredNot:
		return PredNot{X: loosenPred(k, p.X)}
	case Cond:
		p.Value = loosen(k, p.Value)
		return p
	}
	return p
}

func loosen(k Kind, v any) any {
	switch k {
	case KindBool:
		if n, ok := v.(int64); ok && (n == 0 || n == 1) {
			return n == 1
		}
	case KindInt:
		if s, ok := v.(string); ok {
			if n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64); err == nil {
				return n
			}
		}
	case KindFloat:
		if s, ok := v.(string); ok {
			if f, err := strconv.ParseFloat(strings.TrimSpace(s), 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
				return f
			}
		}
	}
	return v
}

func checkValue(f *Field, k Kind, c Cond) error {
	ok := false
	switch k {
	case KindString:
		_, ok = c.Value.(string)
	case KindInt:
		_, ok = c.Value.(int64)
	case KindFloat:
		switch c.Value.(type) {
		case int64, float64:
			ok = true
		}
	case KindBool:
		_, ok = c.Value.(bool)
	case KindTime, KindDate:
		s, isString := c.Value.(string)
		if isString {
			if _, err := ParseTime(s); err != nil {
				return invalid("where", f.Name, "%s needs a date (YYYY-MM-DD) or an RFC 3339 date-time, got %q", c.Op, s)
			}
			ok = true
		}
	}
	if !ok {
		return invalid("where", f.Name, "%s needs a %s value, got %s", c.Op, k, valueType(c.Value))
	}
	return nil
}

func valueType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "no value"
	}
	return fmt.Sprintf("%T", v)
}

// ParseTime reads the date and date-time forms the API uses: RFC 3339 with
// or without fractional seconds, a date-time without a zone (taken as UTC),
// or a bare YYYY-MM-DD date (midnight UTC).
func ParseTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", time.DateOnly} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a date or date-time", s)
}
