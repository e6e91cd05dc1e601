package ahrefssim

import (
	"fmt"
	"strings"
	"sync/atomic"
	"unicode"
)

// Collation is how the simulator orders and compares text. Ahrefs does not
// say how it collates strings, nor whether where compares them as order_by
// sorts them; these stand in for the possibilities, so that a client's
// paging can be tested against each.
type Collation string

// The collations. The zero value is Bytes.
const (
	// Bytes orders text by its UTF-8 bytes.
	Bytes Collation = "bytes"
	// Caseless orders text by its lower case: "B" and "b" are equal, in
	// eq as in order_by, and rows they tie are ordered by the next key.
	Caseless Collation = "caseless"
	// Locale orders text as a locale collation does with punctuation
	// ignorable: letters and digits, case folded, decide first ("ab" and
	// "a-b" tie there, "a-c" follows "ab"); bytes break the ties, so only
	// identical texts are equal.
	Locale Collation = "locale"
)

// ParseCollation reads a collation's name; the empty name is Bytes.
func ParseCollation(s string) (Collation, error) {
	switch c := Collation(s); c {
	case "", Bytes:
		return Bytes, nil
	case Caseless, Locale:
		return c, nil
	}
	return "", fmt.Errorf("collation must be bytes, caseless or locale, not %q", s)
}

// key maps a text to one whose byte order is the collation's order.
func (c Collation) key(s string) string {
	switch c {
	case Caseless:
		return strings.ToLower(s)
	case Locale:
		var b strings.Builder
		for _, r := range s {
			if unicode.IsLetter(r) || unicode.IsDigit(r) {
				b.WriteRune(unicode.ToLower(r))
			}
		}
		b.WriteByte(0) // sorts below every letter and digit: a shorter primary text comes first
		b.WriteString(s)
		return b.String()
	}
	return s
}

// ordering is how a request's rows are sorted (order_by) and compared
// (where): the same collation in both, unless a test makes them differ.
type ordering struct {
	sort, where Collation
	// float32 stores numbers as 32-bit floats: 97.3 is kept as
	// 97.30000305 while the JSON shows 97.3, so ["eq", 97.3] does not
	// match the row that shows 97.3.
	float32 bool
}

func orderingOf(cfg Config) *ordering {
	o := &ordering{sort: cfg.Collation, where: cfg.WhereCollation, float32: cfg.Float32}
	if o.sort == "" {
		o.sort = Bytes
	}
	if o.where == "" {
		o.where = o.sort
	}
	return o
}

// plain reports whether the ordering is Go's byte and float order, which
// the generation order and the binary search of a continuation rely on.
func (o *ordering) plain() bool { return o.sort == Bytes && o.where == Bytes && !o.float32 }

// stored is a value as the index keeps it, which sorting and where see.
func (o *ordering) stored(v val, c Collation) val {
	switch {
	case v.k == vStr && c != Bytes:
		return vs(c.key(v.s))
	case v.k == vFloat && o.float32:
		return vf(float64(float32(v.f)))
	}
	return v
}

// sortKey is a row's value as order_by sorts it.
func (o *ordering) sortKey(v val) val { return o.stored(v, o.sort) }

// whereCompare compares a row's value with a where literal: the row's value
// as stored, the literal as sent.
func (o *ordering) whereCompare(v, ref val) int {
	if ref.k == vStr && o.where != Bytes {
		ref = vs(o.where.key(ref.s))
	}
	return compare(o.stored(v, o.where), ref)
}

// orderings holds the ordering of the current configuration, read by every
// request while the knobs may change.
type orderings struct{ p atomic.Pointer[ordering] }

func (os *orderings) get() *ordering {
	if o := os.p.Load(); o != nil {
		return o
	}
	return &ordering{sort: Bytes, where: Bytes}
}
