package upstream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"net/url"
	"strconv"
)

// Prepared is a list query checked and encoded once for the requests of
// its pages, each of which adds a continuation to its where and a limit:
// no page validates the query, looks its columns up or encodes its own
// filter again.
type Prepared struct {
	query  Query
	cols   *columns
	perRow int
	base   url.Values // every parameter but where and limit
	where  []byte     // the query's own where, encoded; nil: none
}

// Prepare checks q against the endpoint's catalog (an *InvalidError names
// the parameter) and encodes it for its pages.
func Prepare(q Query) (*Prepared, error) {
	if err := q.Validate(); err != nil {
		return nil, err
	}
	cols, err := columnsOf(&q)
	if err != nil {
		return nil, err
	}
	p := &Prepared{query: q, cols: cols, perRow: q.PerRowCost()}
	if q.Where != nil {
		if p.where, err = MarshalWhere(q.Where); err != nil {
			return nil, &InvalidError{Param: "where", Problem: err.Error()}
		}
	}
	bare := q
	bare.Where, bare.Limit = nil, 0
	if p.base, err = bare.Values(); err != nil {
		return nil, err
	}
	return p, nil
}

// PerRow is the per-row cost of every page of the query (see
// Query.PerRowCost): a continuation filters on fields its order_by
// already charges.
func (p *Prepared) PerRow() int { return p.perRow }

// PageRequest is the request of one page of a prepared query.
type PageRequest struct {
	prep   *Prepared
	values url.Values
}

// Page is the request of limit rows of the query, from the rows after
// selects on (nil: from the first row). after must filter only on fields
// the query orders by, so that the page costs PerRow a row.
func (p *Prepared) Page(after Expr, limit int) (*PageRequest, error) {
	v := maps.Clone(p.base)
	where := p.where
	if after != nil {
		w, err := MarshalWhere(after)
		if err != nil {
			return nil, &InvalidError{Param: "where", Problem: err.Error()}
		}
		if p.where != nil {
			// And{after, the query's where}, as MarshalWhere writes it.
			var buf bytes.Buffer
			buf.Grow(len(w) + len(p.where) + 12)
			buf.WriteString(`{"and":[`)
			buf.Write(w)
			buf.WriteByte(',')
			buf.Write(p.where)
			buf.WriteString("]}")
			w = buf.Bytes()
		}
		where = w
	}
	if where != nil {
		v.Set("where", string(where))
	}
	if limit > 0 {
		v.Set("limit", strconv.Itoa(limit))
	}
	return &PageRequest{prep: p, values: v}, nil
}

// Key identifies the request by its endpoint and every parameter that
// shapes the answer, for coalescing and caching.
func (r *PageRequest) Key() string { return string(r.prep.query.Endpoint) + "?" + r.values.Encode() }

// ListPage runs the request of a page against its list endpoint and hands
// the rows to fn one at a time, as Records of the query's Select decoded
// from the response body: a page is never held in memory as a whole. An
// error from fn stops the call and is returned as is.
//
// Failures are retried (429, 5xx, transport errors, a body cut short) only
// while no row has been handed to fn: once rows were emitted a retry would
// emit them again, so the error is returned and the caller resumes from the
// last key it holds. Attempts are bounded by MaxAttempts and never wait past
// ctx's deadline.
//
// The Result is returned with the error too: Cost.Known and Spent tell the
// caller what the upstream charged even when decoding failed afterwards.
func (c *Client) ListPage(ctx context.Context, r *PageRequest, fn func(Record) error) (Result, error) {
	return c.keeping(ctx, r.prep.query.Endpoint, r.prep.perRow, r.values,
		func(body io.Reader) (int, error) { return decodeRecords(body, r.prep.cols, fn) })
}

// Decode reads again a body a page's request was answered with (a cached
// Result.Body), as ListPage decodes it.
func (r *PageRequest) Decode(body io.Reader, fn func(Record) error) (int, error) {
	n, err := decodeRecords(body, r.prep.cols, fn)
	var cb *callbackError
	if errors.As(err, &cb) {
		return n, cb.err
	}
	return n, err
}
