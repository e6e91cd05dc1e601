package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/go-json-experiment/json/jsontext"
)

// Row is one row of a list endpoint, keyed by Ahrefs field name. Values are
// normalised by the catalog kind of their field:
//
//	string               string
//	integer              int64
//	number               float64
//	boolean              bool
//	date-time, date      time.Time (UTC)
//	list of strings      []string
//	list of integers     []int64
//	JSON null            nil
//
// A field the catalog does not know is kept as decoded, with numbers as
// int64 when integral and float64 otherwise.
type Row map[string]any

// malformedError is a body that is valid JSON as far as it goes but not the
// documented shape, or not JSON at all. Retrying would buy the same bytes.
type malformedError struct{ msg string }

func (e *malformedError) Error() string { return e.msg }

func malformed(format string, args ...any) error {
	return &malformedError{msg: fmt.Sprintf(format, args...)}
}

// callbackError carries the error of the caller's fn out of decodeRows
// untouched, so that it is neither classified nor retried.
type callbackError struct{ err error }

func (e *callbackError) Error() string { return e.err.Error() }
func (e *callbackError) Unwrap() error { return e.err }

// decodeRows reads a list response, {"<ResponseKey>": [row, ...], ...}, from r
// one row at a time and hands each row to fn as a Row, so a page is never
// held in memory as a whole. It is DecodePage over every field of the
// catalog, keeping the members the catalog does not know as decoded.
//
// Errors: the error of fn wrapped in *callbackError; a *malformedError when
// the body is not the documented shape (including a missing response key);
// otherwise the read error (io.ErrUnexpectedEOF for a body cut short).
func decodeRows(r io.Reader, s *Schema, fn func(Row) error) (int, error) {
	cols := schemaColumns(s)
	var extra Row
	unknown := func(name string, raw jsontext.Value) error {
		var v any
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			return malformed("field %q: %v", name, err)
		}
		if extra == nil {
			extra = Row{}
		}
		extra[name] = normaliseUnknown(v)
		return nil
	}
	d := newRecordDecoder(r, cols, unknown)
	d.reuse = true // the map copies every value out
	return d.page(func(rec Record) error {
		row := rec.Map(cols.fields)
		for k, v := range extra {
			row[k] = v
		}
		extra = nil
		return fn(row)
	})
}

func normaliseUnknown(v any) any {
	switch v := v.(type) {
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i
		}
		if f, err := v.Float64(); err == nil {
			return f
		}
		return strings.Clone(string(v))
	case []any:
		for i := range v {
			v[i] = normaliseUnknown(v[i])
		}
	case map[string]any:
		for k := range v {
			v[k] = normaliseUnknown(v[k])
		}
	}
	return v
}

// ListRecords is List with each row decoded into a Record of q.Select (see
// DecodePage): the compact form the service streams, with no map per row.
// A query read page by page is better prepared once (Prepare, ListPage).
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
