package upstream

import "sync/atomic"

// RowCap is what one key has taught of its plan's cap on the rows of one
// request. Plans below Enterprise (published as 100, 250 and 500 rows)
// serve a larger limit with the cap's rows, without an error or a header
// that says so, so a page shorter than asked is either the end of the data
// or the cap. RowCap tells them apart from the pages the key was served,
// for every reading of the key at once: the cap is learned once per key
// and process, not per request. Its zero value knows nothing; it is safe
// for concurrent use.
//
// The rule rests on two facts: a capped page has exactly the cap's rows,
// and the cap is at least every count a request was ever served. So:
//
//   - A short page of fewer rows than some request was served before is
//     the end of the data, at no extra request. Once the cap is learned,
//     every short page is below it.
//   - A short page of as many rows as the most ever served, or more, may
//     be the cap. Only the next request from the page's last row can say:
//     rows mean the cap was that page's size (Continued); nothing new means
//     the end. That request is a page the reading needed anyway when the
//     data goes on, and costs the 50-unit floor when it does not. It is
//     never needed once the cap is known, nor once a full page of the
//     largest size asked was served (a key without a cap).
//   - A request asked at the learned cap keeps its probe row (the one row
//     more than a reading keeps, which tells that rows follow), so a full
//     page at the cap still says, at no cost, that the data goes on.
//
// What it learned holds for one plan only: under a lower cap every capped
// page would be shorter than the most ever served, and so taken for the end
// of the data. Whoever sees the plan change (the reconciler, in the name
// limits-and-usage reports) calls Forget.
type RowCap struct {
	cap    atomic.Int64 // the learned cap; 0 while unknown
	served atomic.Int64 // the most rows one request was served
}

// Cap is the learned cap, 0 while it is unknown (or the plan has none).
// A request asked for more rows than Cap is served Cap rows.
func (c *RowCap) Cap() int { return int(c.cap.Load()) }

// Served records that a request for asked rows was served got, and reports
// whether the page may have been cut short by the cap: got is below asked
// and not below the most rows a request was served before. A short page
// it does not report is the end of the data; so is an empty one, as no
// plan serves no row at all.
func (c *RowCap) Served(asked, got int) (mayBeCapped bool) {
	for {
		most := c.served.Load()
		if int64(got) <= most {
			return got > 0 && got < asked && int64(got) == most
		}
		if c.served.CompareAndSwap(most, int64(got)) {
			return got < asked
		}
	}
}

// Continued records that a page of n rows, shorter than asked and reported
// by Served, was followed by more rows: the cap is n. A page of more rows
// served since says that the rows after it were new data, not a cap.
func (c *RowCap) Continued(n int) {
	if n > 0 && int64(n) >= c.served.Load() {
		c.cap.Store(int64(n))
	}
}

// Forget drops what was learned, as after a change of the key's plan: the
// next short page may be the new cap again, and the next request tells.
// Its price is the one of a fresh key: at most one confirming request.
func (c *RowCap) Forget() {
	c.cap.Store(0)
	c.served.Store(0)
}
