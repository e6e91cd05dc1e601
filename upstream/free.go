package upstream

import "strings"

// FreeTargets are the targets Ahrefs answers free in Site Explorer, with
// any URL on them: its "free test queries". A free request costs no unit
// and is served at most FreeRows rows, whatever its limit.
var FreeTargets = []string{"ahrefs.com", "yep.com", "firehose.com"}

// FreeRows is the most rows a request on a free target is served.
const FreeRows = 100

// IsFree reports whether target is a free target or a URL on one.
func IsFree(target string) bool {
	host := strings.ToLower(strings.TrimSpace(target))
	if _, rest, ok := strings.Cut(host, "://"); ok {
		host = rest
	}
	host, _, _ = strings.Cut(host, "/")
	host, _, _ = strings.Cut(host, ":")
	host = strings.TrimSuffix(host, ".")
	for _, f := range FreeTargets {
		if host == f || strings.HasSuffix(host, "."+f) {
			return true
		}
	}
	return false
}

// KnownRowCap is a RowCap that knows its cap from the start: the rows a
// request is served are capped at n, as on a free target.
func KnownRowCap(n int) *RowCap {
	c := &RowCap{}
	c.cap.Store(int64(n))
	c.served.Store(int64(n))
	return c
}
