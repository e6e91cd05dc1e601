package paging

import (
	"github.com/linkgate/linkgate/upstream"
)

// pageKey identifies an upstream request for the scheduler's coalescing
// and page cache: the endpoint and every encoded parameter that shapes the
// answer, and the tenant unless tenants share cached pages. Without the
// tenant, a tenant could learn from `cached: true` (or from the speed of
// the answer) which targets another tenant just fetched.
func pageKey(r *upstream.PageRequest, tenant string, shared bool) string {
	key := r.Key()
	if !shared {
		key = "tenant=" + tenant + "\x00" + key
	}
	return key
}
