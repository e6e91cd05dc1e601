package ahrefssim

import (
	"strings"
	"time"
)

// vkind is the runtime type of a generated value.
type vkind uint8

const (
	vNull vkind = iota
	vStr
	vInt
	vFloat
	vBool
	vTime // n holds Unix seconds
	vDate // n holds Unix seconds of midnight UTC
	vStrs
	vInts
)

// val is one generated field value. A small tagged struct rather than any,
// so that evaluating and sorting a page does not allocate per field.
type val struct {
	k  vkind
	s  string
	n  int64
	f  float64
	ss []string
	ns []int64
}

func vs(s string) val     { return val{k: vStr, s: s} }
func vi(n int64) val      { return val{k: vInt, n: n} }
func vf(f float64) val    { return val{k: vFloat, f: f} }
func vtu(sec int64) val   { return val{k: vTime, n: sec} }
func vb(b bool) val       { return val{k: vBool, n: b2i(b)} }
func vss(ss []string) val { return val{k: vStrs, ss: ss} }
func vns(ns []int64) val  { return val{k: vInts, ns: ns} }
func vnull() val          { return val{} }
func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// compare orders two values of one field. Null is smaller than every value,
// so nulls come first in ascending order and last in descending order.
func compare(a, b val) int {
	switch {
	case a.k == vNull && b.k == vNull:
		return 0
	case a.k == vNull:
		return -1
	case b.k == vNull:
		return 1
	}
	switch a.k {
	case vStr:
		return strings.Compare(a.s, b.s)
	case vFloat:
		switch {
		case a.f < b.f:
			return -1
		case a.f > b.f:
			return 1
		}
		return 0
	default: // int, bool, time, date
		switch {
		case a.n < b.n:
			return -1
		case a.n > b.n:
			return 1
		}
		return 0
	}
}

// toAny converts a value to what the JSON body holds, for Server.All.
func (v val) toAny() any {
	switch v.k {
	case vStr:
		return v.s
	case vInt:
		return v.n
	case vFloat:
		return v.f
	case vBool:
		return v.n != 0
	case vTime:
		return time.Unix(v.n, 0).UTC().Format(time.RFC3339)
	case vDate:
		return time.Unix(v.n, 0).UTC().Format(time.DateOnly)
	case vStrs:
		return append([]string{}, v.ss...)
	case vInts:
		return append([]int64{}, v.ns...)
	}
	return nil
}
