package upstream

import (
	"cmp"
	"math"
	"strconv"
	"strings"
	"time"
)

// Record is one row of a list endpoint in compact, typed form: the values of
// the query's Select fields, in the order of Query.Select. It is what the
// client decodes a response into, once, with no map and no boxing per value.
// A Record and its strings are immutable once handed over.
type Record []Value

// Value is one field of a Record, typed by the catalog kind of its field.
// The zero Value is a field the row did not carry.
type Value struct {
	// s holds a string, or the elements of a list packed as
	// length-prefixed strings or varints (see Strings and Ints).
	s string
	// n holds an integer, a float's bits, a boolean (0 or 1), a time's unix
	// seconds, or the length of a list.
	n     uint64
	nsec  int32
	kind  uint8 // a Kind
	state uint8
}

const (
	valueAbsent uint8 = iota
	valueNull
	valueSet
)

// Kind is the catalog kind of the value's field (0 when absent or null).
func (v Value) Kind() Kind { return Kind(v.kind) }

// Valid reports whether the row carried a non-null value.
func (v Value) Valid() bool { return v.state == valueSet }

// Null reports whether the row carried the field as JSON null.
func (v Value) Null() bool { return v.state == valueNull }

// Str is the value of a string field.
func (v Value) Str() string { return v.s }

// Int is the value of an integer field.
func (v Value) Int() int64 { return int64(v.n) }

// Float is the value of a number field.
func (v Value) Float() float64 { return math.Float64frombits(v.n) }

// Bool is the value of a boolean field.
func (v Value) Bool() bool { return v.n != 0 }

// Unix is the instant of a date or date-time field.
func (v Value) Unix() (sec int64, nsec int32) { return int64(v.n), v.nsec }

// Time is the instant of a date or date-time field, in UTC.
func (v Value) Time() time.Time { return time.Unix(int64(v.n), int64(v.nsec)).UTC() }

// Len is the number of elements of a list field.
func (v Value) Len() int {
	if !Kind(v.kind).IsList() {
		return 0
	}
	return int(v.n)
}

// Strings returns the elements of a list of strings. The strings share the
// record's memory; the slice is new.
func (v Value) Strings() []string {
	if Kind(v.kind) != KindStringList {
		return nil
	}
	out := make([]string, 0, v.n)
	for p := v.s; len(p) > 0; {
		l, w := uvarint(p)
		out = append(out, p[w:w+int(l)])
		p = p[w+int(l):]
	}
	return out
}

// Ints returns the elements of a list of integers, in a new slice.
func (v Value) Ints() []int64 {
	if Kind(v.kind) != KindIntList {
		return nil
	}
	out := make([]int64, 0, v.n)
	for p := v.s; len(p) > 0; {
		u, w := uvarint(p)
		out = append(out, int64(u>>1)^-int64(u&1)) // zigzag
		p = p[w:]
	}
	return out
}

// Any is the value as a plain Go value: string, int64, float64, bool,
// time.Time (UTC), []string, []int64, or nil when absent or null.
func (v Value) Any() any {
	if v.state != valueSet {
		return nil
	}
	switch Kind(v.kind) {
	case KindString:
		return v.s
	case KindInt:
		return v.Int()
	case KindFloat:
		return v.Float()
	case KindBool:
		return v.Bool()
	case KindTime, KindDate:
		return v.Time()
	case KindStringList:
		return v.Strings()
	case KindIntList:
		return v.Ints()
	}
	return nil
}

// Equal reports whether two values are the same: equal instants, numbers
// equal (NaN to NaN), both null or absent.
func (v Value) Equal(o Value) bool {
	if v.state != valueSet || o.state != valueSet {
		return v.state != valueSet && o.state != valueSet
	}
	if v.kind != o.kind {
		return false
	}
	switch Kind(v.kind) {
	case KindFloat:
		a, b := v.Float(), o.Float()
		return a == b || math.IsNaN(a) && math.IsNaN(b)
	case KindTime, KindDate:
		return v.n == o.n && v.nsec == o.nsec
	}
	return v.n == o.n && v.s == o.s
}

// Compare orders two values of one field as the upstream sorts them
// ascending: null (or absent) first, false before true, numbers by value,
// text by bytes, instants in time.
func (v Value) Compare(o Value) int {
	switch {
	case v.state != valueSet && o.state != valueSet:
		return 0
	case v.state != valueSet:
		return -1
	case o.state != valueSet:
		return 1
	}
	switch Kind(v.kind) {
	case KindString:
		return strings.Compare(v.s, o.s)
	case KindInt:
		if Kind(o.kind) == KindFloat {
			return cmp.Compare(float64(v.Int()), o.Float())
		}
		return cmp.Compare(v.Int(), o.Int())
	case KindFloat:
		if Kind(o.kind) == KindInt {
			return cmp.Compare(v.Float(), float64(o.Int()))
		}
		return cmp.Compare(v.Float(), o.Float())
	case KindBool:
		return cmp.Compare(v.n, o.n)
	case KindTime, KindDate:
		if c := cmp.Compare(int64(v.n), int64(o.n)); c != 0 {
			return c
		}
		return cmp.Compare(v.nsec, o.nsec)
	}
	return 0
}

// String renders the value for messages and tests.
func (v Value) String() string {
	switch {
	case v.state == valueNull:
		return "null"
	case v.state != valueSet:
		return "absent"
	case Kind(v.kind) == KindString:
		return strconv.Quote(v.s)
	}
	switch a := v.Any().(type) {
	case time.Time:
		return a.Format(time.RFC3339Nano)
	case int64:
		return strconv.FormatInt(a, 10)
	case float64:
		return strconv.FormatFloat(a, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(a)
	case []string:
		return strconv.Quote(v.s)
	case []int64:
		b := []byte{'['}
		for i, n := range a {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, n, 10)
		}
		return string(append(b, ']'))
	}
	return "?"
}

// StringValue, IntValue, FloatValue, BoolValue and TimeValue make Values,
// for tests and for callers building records by hand.
func StringValue(s string) Value { return Value{s: s, kind: uint8(KindString), state: valueSet} }

// IntValue makes an integer Value.
func IntValue(n int64) Value { return Value{n: uint64(n), kind: uint8(KindInt), state: valueSet} }

// FloatValue makes a number Value.
func FloatValue(f float64) Value {
	return Value{n: math.Float64bits(f), kind: uint8(KindFloat), state: valueSet}
}

// BoolValue makes a boolean Value.
func BoolValue(b bool) Value {
	v := Value{kind: uint8(KindBool), state: valueSet}
	if b {
		v.n = 1
	}
	return v
}

// TimeValue makes a date-time Value.
func TimeValue(t time.Time) Value {
	return Value{n: uint64(t.Unix()), nsec: int32(t.Nanosecond()), kind: uint8(KindTime), state: valueSet}
}

// StringsValue makes a list-of-strings Value.
func StringsValue(list []string) Value {
	var packed []byte
	for _, e := range list {
		packed = appendUvarint(packed, uint64(len(e)))
		packed = append(packed, e...)
	}
	return Value{s: string(packed), n: uint64(len(list)), kind: uint8(KindStringList), state: valueSet}
}

// IntsValue makes a list-of-integers Value.
func IntsValue(list []int64) Value {
	var packed []byte
	for _, x := range list {
		packed = appendZigzag(packed, x)
	}
	return Value{s: string(packed), n: uint64(len(list)), kind: uint8(KindIntList), state: valueSet}
}

func appendZigzag(b []byte, x int64) []byte { return appendUvarint(b, uint64(x<<1)^uint64(x>>63)) }

// NullValue is a field the row carried as JSON null.
func NullValue() Value { return Value{state: valueNull} }

func uvarint(s string) (uint64, int) {
	var x uint64
	var shift uint
	for i := 0; i < len(s) && i < 10; i++ {
		c := s[i]
		if c < 0x80 {
			return x | uint64(c)<<shift, i + 1
		}
		x |= uint64(c&0x7f) << shift
		shift += 7
	}
	return 0, len(s) // only ever reads what appendUvarint wrote
}

func appendUvarint(b []byte, x uint64) []byte {
	for x >= 0x80 {
		b = append(b, byte(x)|0x80)
		x >>= 7
	}
	return append(b, byte(x))
}
