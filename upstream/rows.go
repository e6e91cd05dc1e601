package upstream

import (
	"context"
	"fmt"
)

// malformedError is a body that is valid JSON as far as it goes but not the
// documented shape, or not JSON at all. Retrying would buy the same bytes.
type malformedError struct{ msg string }

func (e *malformedError) Error() string { return e.msg }

func malformed(format string, args ...any) error {
	return &malformedError{msg: fmt.Sprintf(format, args...)}
}

// callbackError carries the error of the caller's fn out of the decoder
// untouched, so that it is neither classified nor retried.
type callbackError struct{ err error }

func (e *callbackError) Error() string { return e.err.Error() }
func (e *callbackError) Unwrap() error { return e.err }

// ListRecords is ListPage for a query read once: the query is checked first
// (an invalid query returns its *InvalidError without any request, costing
// nothing). A query read page by page is better prepared once (Prepare).
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
