package upstream

import (
	"math"
	"time"
)

// SeekKey is one key of a keyset order: a field and its direction.
type SeekKey struct {
	Field *Field
	Desc  bool
}

// KeyLiteral renders a key value as a where literal, and for page tokens:
// times as RFC 3339 with nanoseconds, which decode back to the same instant.
func KeyLiteral(v any) any {
	if t, ok := v.(time.Time); ok {
		return t.UTC().Format(time.RFC3339Nano)
	}
	return v
}

// Seek is the where tree selecting the rows whose key is at or after
// vals in the order keys define: k1 > v1 OR (k1 = v1 AND (k2 > v2 OR (… kn ≥ vn))).
// Starting at the last key itself, rather than after it, is what lets a page
// boundary fall inside a run of equal keys: the pager skips the rows of the
// run it has already returned. Nulls sort as the smallest value, as the
// upstream orders them (Value.Compare). A nil result means every row
// qualifies. Values are of the types Value.Any returns.
func Seek(keys []SeekKey, vals []any) Expr {
	last := len(keys) - 1
	rest := after(keys[last], vals[last], true)
	for i := last - 1; i >= 0; i-- {
		rest = anyOf(after(keys[i], vals[i], false), allOf(equalTo(keys[i], vals[i]), rest))
	}
	return rest.expr // never "none": the row at vals itself qualifies
}

// SeekBefore is the where tree selecting the rows whose key sorts strictly
// before vals in the order keys define: the complement of Seek, written as
// a seek in the reverse order so that it reads as a bound on the first key.
// ok is false when no row can sort before vals.
func SeekBefore(keys []SeekKey, vals []any) (e Expr, ok bool) {
	rev := func(k SeekKey) SeekKey { return SeekKey{Field: k.Field, Desc: !k.Desc} }
	last := len(keys) - 1
	rest := after(rev(keys[last]), vals[last], false)
	for i := last - 1; i >= 0; i-- {
		rest = anyOf(after(rev(keys[i]), vals[i], false), allOf(equalTo(keys[i], vals[i]), rest))
	}
	return rest.expr, !rest.none
}

// bound is a condition on rows: all of them, none of them, or those
// matching expr.
type bound struct {
	expr      Expr
	all, none bool
}

var (
	allRows = bound{all: true}
	noRows  = bound{none: true}
)

func match(e Expr) bound { return bound{expr: e} }

func allOf(a, b bound) bound {
	switch {
	case a.none || b.none:
		return noRows
	case a.all:
		return b
	case b.all:
		return a
	}
	return match(And{a.expr, b.expr})
}

func anyOf(a, b bound) bound {
	switch {
	case a.all || b.all:
		return allRows
	case a.none:
		return b
	case b.none:
		return a
	}
	return match(Or{a.expr, b.expr})
}

// after is the condition "k sorts after v", or "at or after" with orEqual.
// Ascending, the order is null < false < true and null < every value;
// descending, it is the reverse.
func after(k SeekKey, v any, orEqual bool) bound {
	name := k.Field.Name
	is := func(op Op, val any) bound {
		return match(Is{Field: name, Cond: Cond{Op: op, Value: KeyLiteral(val)}})
	}
	isNull := match(Is{Field: name, Cond: Cond{Op: OpIsNull}})
	notNull := match(Not{X: isNull.expr})
	orNull := func(b bound) bound {
		if k.Field.Nullable {
			return anyOf(b, isNull)
		}
		return b
	}
	if !k.Field.Nullable {
		notNull = allRows
		isNull = noRows
	}
	if b, ok := v.(bool); ok { // booleans have no order operators
		switch {
		case !k.Desc && !b && orEqual:
			return notNull
		case !k.Desc && !b:
			return is(OpEq, true)
		case !k.Desc && orEqual:
			return is(OpEq, true)
		case !k.Desc:
			return noRows
		case b && orEqual:
			return allRows
		case b:
			return orNull(is(OpEq, false))
		case orEqual:
			return orNull(is(OpEq, false))
		default:
			return isNull
		}
	}
	if f, ok := v.(float64); ok {
		// Never eq on a float: the upstream may keep another value than
		// the decimal it wrote (see floatSlack).
		lo, hi := f-floatSlack(f), f+floatSlack(f)
		switch {
		case !k.Desc && orEqual:
			return is(OpGte, lo)
		case !k.Desc:
			return is(OpGt, hi)
		case orEqual:
			return orNull(is(OpLte, hi))
		default:
			return orNull(is(OpLt, lo))
		}
	}
	switch {
	case v == nil && !k.Desc && orEqual:
		return allRows
	case v == nil && !k.Desc:
		return notNull
	case v == nil && orEqual:
		return isNull
	case v == nil:
		return noRows
	case !k.Desc && orEqual:
		return is(OpGte, v)
	case !k.Desc:
		return is(OpGt, v)
	case orEqual:
		return orNull(is(OpLte, v))
	default:
		return orNull(is(OpLt, v))
	}
}

// floatSlack is how far the value an upstream keeps may lie from the
// decimal it writes in JSON: a 32-bit float shown as 97.3 is 97.30000305,
// which ["eq", 97.3] misses. A float key is compared as the interval of this
// half-width around the value shown, which holds the value kept as long as
// the upstream writes seven significant digits or more and no two values it
// keeps that close apart show differently. Should they, the page checks
// (reread) see rows come back or go missing at the boundary and stop.
func floatSlack(f float64) float64 { return math.Abs(f) * 1e-6 }

func equalTo(k SeekKey, v any) bound {
	if f, ok := v.(float64); ok {
		lo, hi := f-floatSlack(f), f+floatSlack(f)
		return allOf(match(Is{Field: k.Field.Name, Cond: Cond{Op: OpGte, Value: lo}}),
			match(Is{Field: k.Field.Name, Cond: Cond{Op: OpLte, Value: hi}}))
	}
	if v == nil {
		return match(Is{Field: k.Field.Name, Cond: Cond{Op: OpIsNull}})
	}
	return match(Is{Field: k.Field.Name, Cond: Cond{Op: OpEq, Value: KeyLiteral(v)}})
}
