package upstream

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
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
// one row at a time and hands each row to fn, so a page is never held in
// memory as a whole (the decoder buffers one row). It returns the number of
// rows handed to fn. Keys other than the response key are skipped token by
// token, also without buffering them.
//
// Errors: the error of fn wrapped in *callbackError; a *malformedError when
// the body is not the documented shape (including a missing response key);
// otherwise the read error (io.ErrUnexpectedEOF for a body cut short).
func decodeRows(r io.Reader, s *Schema, fn func(Row) error) (int, error) {
	dec := json.NewDecoder(r)
	dec.UseNumber()
	if err := expectDelim(dec, '{', "the response"); err != nil {
		return 0, err
	}
	n, found := 0, false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return n, readErr(err)
		}
		key, _ := tok.(string) // object keys are always strings
		if key != s.ResponseKey || found {
			if err := skipValue(dec); err != nil {
				return n, err
			}
			continue
		}
		found = true
		if err := expectDelim(dec, '[', fmt.Sprintf("%q", key)); err != nil {
			return n, err
		}
		for dec.More() {
			var raw map[string]any
			if err := dec.Decode(&raw); err != nil {
				return n, readErr(err)
			}
			if raw == nil {
				return n, malformed("row %d is null", n)
			}
			row, err := normaliseRow(s, raw)
			if err != nil {
				return n, malformed("row %d: %v", n, err)
			}
			if err := fn(row); err != nil {
				return n, &callbackError{err}
			}
			n++
		}
		if _, err := dec.Token(); err != nil { // ]
			return n, readErr(err)
		}
	}
	if _, err := dec.Token(); err != nil { // }
		return n, readErr(err)
	}
	if !found {
		return n, malformed("no %q key in the response", s.ResponseKey)
	}
	// Trailing bytes after the object would be a broken body; a well-formed
	// response ends here.
	if _, err := dec.Token(); err != io.EOF {
		return n, malformed("data after the response object")
	}
	return n, nil
}

// readErr separates syntax errors (a malformed body) from read failures (a
// body cut short, a reset connection), which are worth another attempt.
func readErr(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return malformed("invalid JSON: %v", err)
	case errors.As(err, &typ):
		return malformed("unexpected JSON: %v", err)
	case errors.Is(err, io.EOF):
		// EOF inside the object: the body ended early.
		return io.ErrUnexpectedEOF
	}
	return err
}

func expectDelim(dec *json.Decoder, want json.Delim, what string) error {
	tok, err := dec.Token()
	if err != nil {
		return readErr(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return malformed("%s is not a JSON %s", what, map[json.Delim]string{'{': "object", '[': "array"}[want])
	}
	return nil
}

// skipValue consumes one JSON value token by token, so an unexpected large
// member costs no memory.
func skipValue(dec *json.Decoder) error {
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return readErr(err)
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
		if depth == 0 {
			return nil
		}
	}
}

// normaliseRow converts the decoded values in place to the Go types of
// their catalog kinds. A value that does not fit its field's kind is an
// error: the caller learns of a changed upstream at once instead of passing a
// surprising type downstream.
func normaliseRow(s *Schema, raw map[string]any) (Row, error) {
	for name, v := range raw {
		if v == nil {
			continue
		}
		f, ok := s.Field(name)
		if !ok {
			raw[name] = normaliseUnknown(v)
			continue
		}
		nv, err := normaliseValue(f.Kind, v)
		if err != nil {
			return nil, fmt.Errorf("field %q: %w", name, err)
		}
		raw[name] = nv
	}
	return Row(raw), nil
}

func normaliseValue(k Kind, v any) (any, error) {
	switch k {
	case KindString:
		if s, ok := v.(string); ok {
			return s, nil
		}
	case KindInt:
		if n, ok := v.(json.Number); ok {
			return toInt(n)
		}
	case KindFloat:
		if n, ok := v.(json.Number); ok {
			f, err := n.Float64()
			if err != nil {
				return nil, fmt.Errorf("number %s out of range", n)
			}
			return f, nil
		}
	case KindBool:
		if b, ok := v.(bool); ok {
			return b, nil
		}
	case KindTime, KindDate:
		if s, ok := v.(string); ok {
			t, err := ParseTime(s)
			if err != nil {
				return nil, err
			}
			return t, nil
		}
	case KindStringList:
		if list, ok := v.([]any); ok {
			out := make([]string, len(list))
			for i, e := range list {
				s, ok := e.(string)
				if !ok {
					return nil, fmt.Errorf("element %d: want a string, got %s", i, jsonType(e))
				}
				out[i] = s
			}
			return out, nil
		}
	case KindIntList:
		if list, ok := v.([]any); ok {
			out := make([]int64, len(list))
			for i, e := range list {
				n, ok := e.(json.Number)
				if !ok {
					return nil, fmt.Errorf("element %d: want an integer, got %s", i, jsonType(e))
				}
				x, err := toInt(n)
				if err != nil {
					return nil, fmt.Errorf("element %d: %w", i, err)
				}
				out[i] = x
			}
			return out, nil
		}
	default:
		return normaliseUnknown(v), nil
	}
	return nil, fmt.Errorf("want a %s, got %s", k, jsonType(v))
}

// toInt accepts integral numbers, also when written as 12.0 or 1e3, since
// JSON does not distinguish them.
func toInt(n json.Number) (int64, error) {
	if i, err := n.Int64(); err == nil {
		return i, nil
	}
	f, err := n.Float64()
	if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, fmt.Errorf("want an integer, got %s", n)
	}
	return int64(f), nil
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
