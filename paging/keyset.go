package paging

import (
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/linkgate/linkgate/upstream"
)

// sortKey is one key of a pager's total order.
type sortKey struct {
	field *upstream.Field
	desc  bool
	col   int // position of the field in the plan's upstream records
}

// value reads the key's value from a row, in the types the where tree and
// the token use: string, int64, float64, bool, time.Time or nil.
func (k sortKey) value(row upstream.Record) any { return row[k.col].Any() }

// decode reads a key value from a page token.
func (k sortKey) decode(raw json.RawMessage) (any, error) {
	if string(raw) == "null" {
		return nil, nil
	}
	switch k.field.Kind {
	case upstream.KindString:
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	case upstream.KindInt:
		var i int64
		err := json.Unmarshal(raw, &i)
		return i, err
	case upstream.KindFloat:
		var f float64
		err := json.Unmarshal(raw, &f)
		return f, err
	case upstream.KindBool:
		var b bool
		err := json.Unmarshal(raw, &b)
		return b, err
	case upstream.KindTime, upstream.KindDate:
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		return upstream.ParseTime(s)
	}
	return nil, fmt.Errorf("field %s cannot be a sort key", k.field.Name)
}

// keyLiteral renders a key value as a where literal and in page tokens:
// times as RFC 3339 with nanoseconds, which decode back to the same instant.
func keyLiteral(v any) any {
	if t, ok := v.(time.Time); ok {
		return t.UTC().Format(time.RFC3339Nano)
	}
	return v
}

// keyOf reads the sort key of a row.
func keyOf(keys []sortKey, row upstream.Record) []any {
	vals := make([]any, len(keys))
	for i, k := range keys {
		vals[i] = k.value(row)
	}
	return vals
}

// sameKey reports whether two keys are equal value by value.
func sameKey(a, b []any) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !sameValue(a[i], b[i]) {
			return false
		}
	}
	return true
}

func sameValue(a, b any) bool {
	switch a := a.(type) {
	case time.Time:
		b, ok := b.(time.Time)
		return ok && a.Equal(b)
	case float64:
		b, ok := b.(float64)
		return ok && (a == b || math.IsNaN(a) && math.IsNaN(b))
	case nil:
		return b == nil
	}
	return a == b
}

// atOrAfter is the where tree selecting the rows whose key is at or after
// vals in the order keys define: k1 > v1 OR (k1 = v1 AND (k2 > v2 OR (… kn ≥ vn))).
// Starting at the last key itself, rather than after it, is what lets a page
// boundary fall inside a run of equal keys: the pager skips the rows of the
// run it has already returned. Nulls sort as the smallest value, as the
// upstream orders them. A nil result means every row qualifies.
func atOrAfter(keys []sortKey, vals []any) upstream.Expr {
	last := len(keys) - 1
	rest := after(keys[last], vals[last], true)
	for i := last - 1; i >= 0; i-- {
		rest = anyOf(after(keys[i], vals[i], false), allOf(equalTo(keys[i], vals[i]), rest))
	}
	return rest.expr // never "none": the row at vals itself qualifies
}

// bound is a condition on rows: all of them, none of them, or those
// matching expr.
type bound struct {
	expr      upstream.Expr
	all, none bool
}

var (
	allRows = bound{all: true}
	noRows  = bound{none: true}
)

func match(e upstream.Expr) bound { return bound{expr: e} }

func allOf(a, b bound) bound {
	switch {
	case a.none || b.none:
		return noRows
	case a.all:
		return b
	case b.all:
		return a
	}
	return match(upstream.And{a.expr, b.expr})
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
	return match(upstream.Or{a.expr, b.expr})
}

// after is the condition "k sorts after v", or "at or after" with orEqual.
// Ascending, the order is null < false < true and null < every value;
// descending, it is the reverse.
func after(k sortKey, v any, orEqual bool) bound {
	name := k.field.Name
	is := func(op upstream.Op, val any) bound {
		return match(upstream.Is{Field: name, Cond: upstream.Cond{Op: op, Value: keyLiteral(val)}})
	}
	isNull := match(upstream.Is{Field: name, Cond: upstream.Cond{Op: upstream.OpIsNull}})
	notNull := match(upstream.Not{X: isNull.expr})
	orNull := func(b bound) bound {
		if k.field.Nullable {
			return anyOf(b, isNull)
		}
		return b
	}
	if !k.field.Nullable {
		notNull = allRows
		isNull = noRows
	}
	if b, ok := v.(bool); ok { // booleans have no order operators
		switch {
		case !k.desc && !b && orEqual:
			return notNull
		case !k.desc && !b:
			return is(upstream.OpEq, true)
		case !k.desc && orEqual:
			return is(upstream.OpEq, true)
		case !k.desc:
			return noRows
		case b && orEqual:
			return allRows
		case b:
			return orNull(is(upstream.OpEq, false))
		case orEqual:
			return orNull(is(upstream.OpEq, false))
		default:
			return isNull
		}
	}
	if f, ok := v.(float64); ok {
		// Never eq on a float: the upstream may keep another value than
		// the decimal it wrote (see floatSlack).
		lo, hi := f-floatSlack(f), f+floatSlack(f)
		switch {
		case !k.desc && orEqual:
			return is(upstream.OpGte, lo)
		case !k.desc:
			return is(upstream.OpGt, hi)
		case orEqual:
			return orNull(is(upstream.OpLte, hi))
		default:
			return orNull(is(upstream.OpLt, lo))
		}
	}
	switch {
	case v == nil && !k.desc && orEqual:
		return allRows
	case v == nil && !k.desc:
		return notNull
	case v == nil && orEqual:
		return isNull
	case v == nil:
		return noRows
	case !k.desc && orEqual:
		return is(upstream.OpGte, v)
	case !k.desc:
		return is(upstream.OpGt, v)
	case orEqual:
		return orNull(is(upstream.OpLte, v))
	default:
		return orNull(is(upstream.OpLt, v))
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

func equalTo(k sortKey, v any) bound {
	if f, ok := v.(float64); ok {
		lo, hi := f-floatSlack(f), f+floatSlack(f)
		return allOf(match(upstream.Is{Field: k.field.Name, Cond: upstream.Cond{Op: upstream.OpGte, Value: lo}}),
			match(upstream.Is{Field: k.field.Name, Cond: upstream.Cond{Op: upstream.OpLte, Value: hi}}))
	}
	if v == nil {
		return match(upstream.Is{Field: k.field.Name, Cond: upstream.Cond{Op: upstream.OpIsNull}})
	}
	return match(upstream.Is{Field: k.field.Name, Cond: upstream.Cond{Op: upstream.OpEq, Value: keyLiteral(v)}})
}

// afterAll is the cursor after rows, which follow c: what c.after gives row
// by row, read from the runs of equal keys that end the rows, so that only
// a few keys per page are built.
func (c cursor) afterAll(keys []sortKey, rows []upstream.Record) cursor {
	if len(rows) == 0 {
		return c
	}
	// The runs that end the rows, last first: the cursor's own and its tail.
	type span struct{ start, n int }
	var runs []span
	i := len(rows)
	for len(runs) <= tailRuns && i > 0 {
		j := i - 1
		for j > 0 && sameRecordKey(keys, rows[j-1], rows[i-1]) {
			j--
		}
		runs = append(runs, span{j, i - j})
		i = j
	}
	out := c
	if i > 0 {
		out = cursor{} // rows before the runs read push c out of the tail
	}
	for r := len(runs) - 1; r >= 0; r-- {
		k := keyOf(keys, rows[runs[r].start])
		if runs[r].start == 0 && out.Key != nil && sameKey(k, out.Key) {
			out.Skip += runs[r].n
			continue
		}
		out = out.moved(k, runs[r].n)
	}
	out.Settled = false // rows read since the token: the next page is checked in full
	return out
}

func sameRecordKey(keys []sortKey, a, b upstream.Record) bool {
	for _, k := range keys {
		if !a[k.col].Equal(b[k.col]) {
			return false
		}
	}
	return true
}
