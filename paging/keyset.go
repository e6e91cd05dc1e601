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
