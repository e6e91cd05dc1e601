package paging

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/linkgate/linkgate/upstream"
)

// Paging trusts the upstream for every comparison it cannot make itself.
// Ahrefs does not say how it collates text or compares a float with the
// decimal it wrote, so the pager never orders two strings on its own: a
// page resumes from a key the upstream returned, and rows are told apart
// by that key's exact values. What the pager can check, it checks on every
// page, and a page that contradicts the order asked for, or the rows the
// upstream returned before, stops the run before any of its rows is used:
//
//   - rows come in the order asked as far as numbers, instants, booleans
//     and nulls tell (text decides nothing: its order is the upstream's);
//   - a page asked from key K starts with the rows of earlier pages the
//     upstream holds equal to K, in the order it returned them (the cursor
//     remembers the last few runs of keys), then the rows at K already
//     returned, then, when the page before showed the row after them, that
//     row. Anything else would skip or repeat rows;
//   - when the continuation's where compares text, the row the upstream
//     holds just before the page's key (asked in the reverse order, one
//     row) is the row it returned last before it (beforeCheck): a row its
//     order_by sorts after the key but its where compares before it would
//     be missing from the page itself, where no check of the page sees it.

// run is a run of consecutive rows returned with one sort key, by the
// hash of that key's exact values.
type run struct {
	ID uint64 `json:"h,string"`
	N  int    `json:"n"`
}

// tailRuns is how many runs of keys before its own a cursor remembers: as
// many keys as the upstream may hold equal to the cursor's own while they
// differ by their bytes (a caseless collation's "A" and "a").
const tailRuns = 4

// tailLook is how many rows after the cursor's own are looked at for a row
// of the tail coming again.
const tailLook = 16

// moved is the cursor at key k with skip rows of it returned, after the
// rows of c: c's own run joins the tail.
func (c cursor) moved(k []any, skip int) cursor {
	tail := c.Tail
	if c.Skip > 0 {
		tail = make([]run, 0, tailRuns)
		if n := len(c.Tail); n >= tailRuns {
			tail = append(tail, c.Tail[n-tailRuns+1:]...)
		} else {
			tail = append(tail, c.Tail...)
		}
		tail = append(tail, run{ID: keyHash(c.Key), N: c.Skip})
	}
	return cursor{Key: k, Skip: skip, Tail: tail}
}

// keyHash identifies a key by its exact values: text by its bytes, numbers
// by their bits, instants to the nanosecond (FNV-1a).
func keyHash(vals []any) uint64 {
	h := uint64(14695981039346656037)
	add := func(b byte) { h = (h ^ uint64(b)) * 1099511628211 }
	add64 := func(u uint64) {
		for i := range 8 {
			add(byte(u >> (8 * i)))
		}
	}
	for _, v := range vals {
		switch v := v.(type) {
		case nil:
			add(0)
		case string:
			add(1)
			add64(uint64(len(v)))
			for i := 0; i < len(v); i++ {
				add(v[i])
			}
		case int64:
			add(2)
			add64(uint64(v))
		case float64:
			add(3)
			add64(math.Float64bits(v))
		case bool:
			add(4)
			if v {
				add(1)
			} else {
				add(0)
			}
		case time.Time:
			add(5)
			add64(uint64(v.Unix()))
			add64(uint64(v.Nanosecond()))
		}
	}
	return h
}

// OrderError is a page that contradicts the order it was asked in or the
// rows the upstream returned before: using it would skip or repeat rows.
type OrderError struct {
	Page    int    // the page of the run, from 1
	Key     string // the key where it shows
	Problem string
}

func (e *OrderError) Error() string {
	return fmt.Sprintf("the upstream's order is inconsistent at page %d, key %s: %s; no row of that page was returned", e.Page, e.Key, e.Problem)
}

func violation(keys []sortKey, key []any, format string, args ...any) *OrderError {
	return &OrderError{Key: formatKey(keys, key), Problem: fmt.Sprintf(format, args...)}
}

// formatKey renders a key for messages: field=value, comma-separated.
func formatKey(keys []sortKey, vals []any) string {
	parts := make([]string, len(vals))
	for i, v := range vals {
		var s string
		switch v := upstream.KeyLiteral(v).(type) {
		case nil:
			s = "null"
		case string:
			s = strconv.Quote(v)
		case float64:
			s = strconv.FormatFloat(v, 'g', -1, 64)
		default:
			s = fmt.Sprint(v)
		}
		name := "?"
		if i < len(keys) {
			name = keys[i].field.Name
		}
		parts[i] = name + "=" + s
	}
	return strings.Join(parts, ",")
}

// reread checks how a page asked from cursor c starts, and returns how many
// of its first rows earlier pages returned.
func reread(keys []sortKey, c cursor, rows []upstream.Record) (int, *OrderError) {
	if c.Key == nil {
		return 0, nil
	}
	m := 0
	if len(c.Tail) > 0 && len(rows) > 0 {
		first := keyHash(keyOf(keys, rows[0]))
		for i, r := range c.Tail {
			if r.ID != first {
				continue
			}
			n, ok := matchRuns(keys, rows, c.Tail[i:])
			if !ok {
				return 0, violation(keys, keyOf(keys, rows[0]), "asked for the rows from %s on, the upstream returned again rows of earlier pages, but not as it had returned them", formatKey(keys, c.Key))
			}
			m = n
			break
		}
	}
	if c.Settled {
		return m + settledSkip(keys, c, rows[m:]), nil
	}
	for j := 0; j < c.Skip; j++ {
		switch {
		case m+j == len(rows) && len(rows) > 0:
			return len(rows), nil // a page cut short by the row cap: only rows at the key
		case m+j == len(rows):
			return 0, violation(keys, c.Key, "asked for the rows from this key on, the upstream returned none, though it had returned %d rows at this key", c.Skip)
		case !sameKey(keyOf(keys, rows[m+j]), c.Key):
			return 0, violation(keys, c.Key, "asked for the rows from this key on, the upstream did not return first the %d rows at it that it had returned (it returned %s): its where compares this key otherwise than its order_by sorts it",
				c.Skip, formatKey(keys, keyOf(keys, rows[m+j])))
		}
	}
	m += c.Skip
	// A row of the tail after the cursor's own rows would come twice: the
	// rows the upstream holds equal to the cursor's key are looked at.
	if len(c.Tail) > 0 {
		for _, r := range rows[m:min(len(rows), m+tailLook)] {
			id := keyHash(keyOf(keys, r))
			for _, t := range c.Tail {
				if t.ID == id {
					return 0, violation(keys, keyOf(keys, r), "the upstream returned this row again after rows it had returned after it")
				}
			}
		}
	}
	if c.Skip == 0 {
		// The page before showed the row at c.Key next: it must come first.
		switch {
		case m == len(rows) && m > 0:
			return m, nil // a page cut short by the row cap: only rows returned before
		case m == len(rows):
			return 0, violation(keys, c.Key, "the upstream placed a row at this key next on the page before, but returns no row from this key on")
		case !sameKey(keyOf(keys, rows[m]), c.Key):
			return 0, violation(keys, c.Key, "the upstream placed a row at this key next on the page before, but asked for the rows from this key on it returns %s first: its where compares otherwise than its order_by sorts (or that row has just gone: a page token older than a few minutes resumes without this check)",
				formatKey(keys, keyOf(keys, rows[m])))
		}
	}
	return m, nil
}

// settledSkip is how many of rows are the cursor's own rows returned before
// it, when the data may have changed since: as many rows at its key as it
// returned, and no more than are still there.
func settledSkip(keys []sortKey, c cursor, rows []upstream.Record) int {
	skip := 0
	for skip < len(rows) && skip < c.Skip && sameKey(keyOf(keys, rows[skip]), c.Key) {
		skip++
	}
	return skip
}

// matchRuns reports whether rows start with the rows of runs, in order,
// and how many rows those are (fewer when the page ends within them).
func matchRuns(keys []sortKey, rows []upstream.Record, runs []run) (int, bool) {
	i := 0
	for _, r := range runs {
		for range r.N {
			if i == len(rows) {
				return i, true
			}
			if keyHash(keyOf(keys, rows[i])) != r.ID {
				return 0, false
			}
			i++
		}
	}
	return i, true
}

// inOrder checks that rows come in the order keys ask, as far as values
// other than text tell: the first key on which two neighbours differ must
// order them, unless it is text, whose order only the upstream knows.
func inOrder(keys []sortKey, rows []upstream.Record) *OrderError {
	for i := 1; i < len(rows); i++ {
		a, b := rows[i-1], rows[i]
		for _, k := range keys {
			va, vb := a[k.col], b[k.col]
			if va.Equal(vb) {
				continue
			}
			if va.Valid() && vb.Valid() && va.Kind() == upstream.KindString {
				break
			}
			c := va.Compare(vb)
			if k.desc {
				c = -c
			}
			if c > 0 {
				dir := "ascending"
				if k.desc {
					dir = "descending"
				}
				return violation(keys, keyOf(keys, b), "the upstream returned it after %s, out of the %s order of %s asked (nulls first ascending)",
					formatKey(keys, keyOf(keys, a)), dir, k.field.Name)
			}
			break
		}
	}
	return nil
}

// comparesText reports whether a continuation's where compares text: when
// it does, its answer rests on the upstream comparing text in where as it
// sorts it in order_by, which nothing promises, and each continued page is
// checked at its boundary (beforeCheck).
func comparesText(keys []sortKey) bool {
	for _, k := range keys {
		if k.field.Kind == upstream.KindString {
			return true
		}
	}
	return false
}

// expectedBefore is the key hash of the last row returned before the rows
// a page asked from c returns again: the row the upstream must hold just
// before c's key. ok is false when the cursor no longer knows it (a tail
// read again whole, or nothing remembered before the key).
func expectedBefore(keys []sortKey, c cursor, rows []upstream.Record) (id uint64, ok bool) {
	i := len(c.Tail)
	if len(rows) > 0 {
		first := keyHash(keyOf(keys, rows[0]))
		for j, r := range c.Tail {
			if r.ID == first {
				if _, matched := matchRuns(keys, rows, c.Tail[j:]); matched {
					i = j
				}
				break
			}
		}
	}
	if i == 0 {
		return 0, false
	}
	return c.Tail[i-1].ID, true
}

// beforeCheck checks the boundary of a page asked from c, which the page
// itself cannot show: the page holds the rows the upstream's where puts at
// or after c's key, so a row that order_by sorts after the key but where
// compares before it is missing from the page, wherever it would sort, and
// nothing in the page tells. Asked for the rows where puts before the key
// in the reverse order, the upstream must answer first the last row it
// returned before them (want): a row sorted after the key that where puts
// before it would come first instead, as the largest of them.
func beforeCheck(keys []sortKey, c cursor, want uint64, got []upstream.Record) *OrderError {
	switch {
	case len(got) == 0:
		return violation(keys, c.Key, "asked for the row before this key, the upstream returned none, though it had returned rows before it: its where compares this key otherwise than its order_by sorts it")
	case keyHash(keyOf(keys, got[0])) != want:
		return violation(keys, c.Key, "asked for the row before this key, the upstream returned %s, which it had not returned just before it: its where compares this key otherwise than its order_by sorts it, and rows after the key would be skipped",
			formatKey(keys, keyOf(keys, got[0])))
	}
	return nil
}
