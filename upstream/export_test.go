package upstream

import "context"

// ListRecords is ListPage for a query read once, as the tests read pages:
// the query is prepared (an invalid query returns its *InvalidError without
// any request, costing nothing) and its first page of q.Limit rows read.
func (c *Client) ListRecords(ctx context.Context, q *Query, fn func(Record) error) (Result, error) {
	p, err := Prepare(*q)
	if err != nil {
		return Result{}, err
	}
	r, err := p.Page(nil, q.Limit)
	if err != nil {
		return Result{}, err
	}
	return c.ListPage(ctx, r, fn)
}
