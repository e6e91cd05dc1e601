// Package suggest finds the name a caller most likely meant, for the "did
// you mean" of an error.
package suggest

// Nearest returns the first of names fewer than within edits away from s
// and closest to it, or "" if none is.
func Nearest(s string, names []string, within int) string {
	best, bestD := "", within
	for _, n := range names {
		if d := distance(s, n, bestD); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

// distance is the Levenshtein distance of a and b, or bound when it is at
// least bound. Long names are not compared letter by letter, so hostile
// input costs no more than a short one.
func distance(a, b string, bound int) int {
	if len(a) > 64 || len(b) > 64 || max(len(a)-len(b), len(b)-len(a)) >= bound {
		return bound
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return min(prev[len(b)], bound)
}
