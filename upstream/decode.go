package upstream

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/go-json-experiment/json/jsontext"
)

// ErrMalformed matches (errors.Is) a body that is not the documented shape
// of a list response, or not JSON at all.
var ErrMalformed = errors.New("malformed upstream response")

// Is makes a malformedError match ErrMalformed.
func (e *malformedError) Is(target error) bool { return target == ErrMalformed }

// DecodePage reads the body of a 2xx list response to q, as the upstream
// sent it, and hands each row to fn as a Record of q.Select, one at a time:
// the body is read as a stream and never held whole. It returns the number of
// rows handed to fn. It is the one decoder of list rows: the client runs it
// on every response, and a cache of response bodies runs it on a hit.
//
// Errors: fn's error as is; an error matching ErrMalformed when the body is
// not the documented shape; otherwise the read error (io.ErrUnexpectedEOF
// for a body cut short).
func DecodePage(body io.Reader, q *Query, fn func(Record) error) (int, error) {
	cols, err := columnsOf(q)
	if err != nil {
		return 0, err
	}
	n, err := decodeRecords(body, cols, fn)
	var cb *callbackError
	if errors.As(err, &cb) {
		return n, cb.err
	}
	return n, err
}

// columns is the layout of the records of one query: the field of each
// position and the position of each field name.
type columns struct {
	responseKey string
	fields      []*Field
	index       map[string]int
}

func columnsOf(q *Query) (*columns, error) {
	s, err := SchemaOf(q.Endpoint)
	if err != nil {
		return nil, err
	}
	c := &columns{responseKey: s.ResponseKey, index: make(map[string]int, len(q.Select))}
	for i, name := range q.Select {
		f, ok := s.Field(name)
		if !ok {
			return nil, fmt.Errorf("unknown field %q of %s", name, q.Endpoint)
		}
		c.fields = append(c.fields, f)
		if _, dup := c.index[name]; !dup {
			c.index[name] = i
		}
	}
	return c, nil
}

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

// Memory of a decoder, allocated in blocks so that a page of rows is a few
// dozen allocations rather than several per row: values for slabRows
// records at a time, and the bytes of every string in arena chunks.
const (
	slabRows   = 128
	arenaChunk = 32 << 10
)

// recordDecoder is one decoding of a response body.
type recordDecoder struct {
	src     sourceReader
	dec     *jsontext.Decoder
	cols    *columns
	slab    []Value
	arena   []byte
	scratch []byte // unquoted strings and packed lists, before interning
}

// decodeRecords reads {"<responseKey>": [row, ...], ...} from r. Keys other
// than the response key are skipped token by token, without buffering them.
// A row's members that are not columns are skipped unread.
func decodeRecords(r io.Reader, cols *columns, fn func(Record) error) (int, error) {
	d := &recordDecoder{src: sourceReader{r: r}, cols: cols}
	d.dec = jsontext.NewDecoder(&d.src,
		// Duplicate names keep the last value and invalid UTF-8 becomes
		// U+FFFD, as encoding/json does: a stray byte in one anchor text
		// must not make a whole target unreadable.
		jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
	return d.page(fn)
}

func (d *recordDecoder) page(fn func(Record) error) (int, error) {
	if err := d.open('{', "the response"); err != nil {
		return 0, err
	}
	n, found := 0, false
	for d.dec.PeekKind() != '}' {
		name, err := d.name()
		if err != nil {
			return n, err
		}
		if name != d.cols.responseKey || found {
			if err := d.dec.SkipValue(); err != nil {
				return n, d.fail(err)
			}
			continue
		}
		found = true
		if err := d.open('[', strconv.Quote(name)); err != nil {
			return n, err
		}
		for d.dec.PeekKind() != ']' {
			rec, err := d.row(n)
			if err != nil {
				return n, err
			}
			if err := fn(rec); err != nil {
				return n, &callbackError{err}
			}
			n++
		}
		if _, err := d.dec.ReadToken(); err != nil { // ]
			return n, d.fail(err)
		}
	}
	if _, err := d.dec.ReadToken(); err != nil { // }
		return n, d.fail(err)
	}
	if !found {
		return n, malformed("no %q key in the response", d.cols.responseKey)
	}
	// Trailing bytes after the object would be a broken body; a well-formed
	// response ends here.
	if _, err := d.dec.ReadToken(); err != io.EOF {
		return n, malformed("data after the response object")
	}
	return n, nil
}

// open reads the start of an object or array.
func (d *recordDecoder) open(want jsontext.Kind, what string) error {
	if k := d.dec.PeekKind(); k != want {
		if k == 0 { // an error, which the read returns
			_, err := d.dec.ReadToken()
			return d.fail(err)
		}
		return malformed("%s is not a JSON %s", what, map[jsontext.Kind]string{'{': "object", '[': "array"}[want])
	}
	_, err := d.dec.ReadToken()
	return d.fail(err)
}

// name reads an object member's name. The string is only valid until the
// next read: it is for lookups.
func (d *recordDecoder) name() (string, error) {
	raw, err := d.dec.ReadValue()
	if err != nil {
		return "", d.fail(err)
	}
	b, err := d.unquote(raw)
	if err != nil {
		return "", err
	}
	return unsafe.String(unsafe.SliceData(b), len(b)), nil
}

func (d *recordDecoder) row(i int) (Record, error) {
	switch k := d.dec.PeekKind(); k {
	case '{':
	case 'n':
		return nil, malformed("row %d is null", i)
	case 0:
		_, err := d.dec.ReadToken()
		return nil, d.fail(err)
	default:
		return nil, malformed("row %d is not a JSON object", i)
	}
	if _, err := d.dec.ReadToken(); err != nil {
		return nil, d.fail(err)
	}
	rec := d.record()
	for d.dec.PeekKind() != '}' {
		name, err := d.name()
		if err != nil {
			return nil, err
		}
		col, ok := d.cols.index[name]
		if !ok {
			if err := d.dec.SkipValue(); err != nil {
				return nil, d.fail(err)
			}
			continue
		}
		f := d.cols.fields[col]
		if rec[col], err = d.value(f); err != nil {
			var mal *malformedError
			if errors.As(err, &mal) {
				return nil, malformed("row %d: field %q: %s", i, f.Name, mal.msg)
			}
			return nil, err
		}
	}
	if _, err := d.dec.ReadToken(); err != nil { // }
		return nil, d.fail(err)
	}
	return rec, nil
}

// record hands out the next record of the current slab.
func (d *recordDecoder) record() Record {
	n := len(d.cols.fields)
	if len(d.slab) < n {
		d.slab = make([]Value, n*slabRows)
	}
	r := d.slab[:n:n]
	d.slab = d.slab[n:]
	return r
}

// value reads one member's value as the kind of its field.
func (d *recordDecoder) value(f *Field) (Value, error) {
	k := d.dec.PeekKind()
	if k == 'n' {
		_, err := d.dec.ReadToken()
		return Value{state: valueNull}, d.fail(err)
	}
	if f.Kind.IsList() {
		return d.list(f.Kind)
	}
	if k == '{' || k == '[' || k == 0 {
		// Refuse before reading: a mistyped value may be large.
		if k == 0 {
			_, err := d.dec.ReadToken()
			return Value{}, d.fail(err)
		}
		return Value{}, malformed("want a %s, got %s", f.Kind, kindName(k))
	}
	raw, err := d.dec.ReadValue()
	if err != nil {
		return Value{}, d.fail(err)
	}
	return d.scalar(f.Kind, raw)
}

func (d *recordDecoder) scalar(k Kind, raw jsontext.Value) (Value, error) {
	v := Value{kind: uint8(k), state: valueSet}
	got := raw.Kind()
	switch {
	case k == KindString && got == '"':
		b, err := d.unquote(raw)
		if err != nil {
			return Value{}, err
		}
		v.s = d.intern(b)
		return v, nil
	case k == KindInt && got == '0':
		n, err := parseInt(raw)
		v.n = uint64(n)
		return v, err
	case k == KindFloat && got == '0':
		f, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(raw), len(raw)), 64)
		if err != nil {
			return Value{}, malformed("number %s out of range", raw)
		}
		v.n = math.Float64bits(f)
		return v, nil
	case k == KindBool && (got == 't' || got == 'f'):
		if got == 't' {
			v.n = 1
		}
		return v, nil
	case (k == KindTime || k == KindDate) && got == '"':
		b, err := d.unquote(raw)
		if err != nil {
			return Value{}, err
		}
		t, err := parseTime(b)
		if err != nil {
			return Value{}, malformed("%v", err)
		}
		v.n, v.nsec = uint64(t.Unix()), int32(t.Nanosecond())
		return v, nil
	}
	return Value{}, malformed("want a %s, got %s", k, kindName(got))
}

// list reads an array of strings or integers, packed into one string.
func (d *recordDecoder) list(k Kind) (Value, error) {
	if got := d.dec.PeekKind(); got != '[' {
		if got == 0 {
			_, err := d.dec.ReadToken()
			return Value{}, d.fail(err)
		}
		return Value{}, malformed("want a %s, got %s", k, kindName(got))
	}
	if _, err := d.dec.ReadToken(); err != nil {
		return Value{}, d.fail(err)
	}
	var packed []byte
	n := 0
	for ; d.dec.PeekKind() != ']'; n++ {
		got := d.dec.PeekKind()
		if (k == KindStringList && got != '"') || (k == KindIntList && got != '0') {
			if got == 0 {
				_, err := d.dec.ReadToken()
				return Value{}, d.fail(err)
			}
			return Value{}, malformed("element %d: want a %s, got %s", n, k.Elem(), kindName(got))
		}
		raw, err := d.dec.ReadValue()
		if err != nil {
			return Value{}, d.fail(err)
		}
		if k == KindIntList {
			x, err := parseInt(raw)
			if err != nil {
				return Value{}, malformed("element %d: %s", n, err.(*malformedError).msg)
			}
			packed = appendZigzag(packed, x)
			continue
		}
		b, err := d.unquote(raw)
		if err != nil {
			return Value{}, err
		}
		packed = appendUvarint(packed, uint64(len(b)))
		packed = append(packed, b...)
	}
	if _, err := d.dec.ReadToken(); err != nil { // ]
		return Value{}, d.fail(err)
	}
	return Value{s: d.intern(packed), n: uint64(n), kind: uint8(k), state: valueSet}, nil
}

// unquote returns the text of a JSON string in the decoder's scratch
// buffer, valid until the next unquote. Plain strings, the common case, are
// returned in place.
func (d *recordDecoder) unquote(raw jsontext.Value) ([]byte, error) {
	b := raw[1 : len(raw)-1]
	if bytes.IndexByte(b, '\\') >= 0 {
		var err error
		if d.scratch, err = jsontext.AppendUnquote(d.scratch[:0], raw); err != nil {
			return nil, malformed("invalid JSON string: %v", err)
		}
		b = d.scratch
	}
	if !utf8.Valid(b) {
		b = bytes.ToValidUTF8(b, []byte("\uFFFD"))
	}
	return b, nil
}

// intern copies b into the decoder's arena and returns it as a string that
// shares the arena. The arena is only ever appended to, never overwritten,
// so the strings stay immutable; a chunk lives as long as any of them.
func (d *recordDecoder) intern(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if len(d.arena)+len(b) > cap(d.arena) {
		d.arena = make([]byte, 0, max(arenaChunk, len(b)))
	}
	start := len(d.arena)
	d.arena = append(d.arena, b...)
	return unsafe.String(&d.arena[start], len(b))
}

// parseInt accepts integral numbers, also when written as 12.0 or 1e3, since
// JSON does not distinguish them.
func parseInt(raw jsontext.Value) (int64, error) {
	s := unsafe.String(unsafe.SliceData(raw), len(raw))
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return i, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, malformed("want an integer, got %s", raw)
	}
	return int64(f), nil
}

// parseTime is ParseTime for a decoded string, trying the layout its length
// suggests first.
func parseTime(b []byte) (time.Time, error) {
	s := unsafe.String(unsafe.SliceData(b), len(b))
	if len(s) == len(time.DateOnly) {
		if t, err := time.Parse(time.DateOnly, s); err == nil {
			return t, nil
		}
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	return ParseTime(string(b))
}

func kindName(k jsontext.Kind) string {
	switch k {
	case 'n':
		return "null"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case '0':
		return "a number"
	case 't', 'f':
		return "a boolean"
	}
	return "an invalid value"
}

// fail classifies an error of the JSON decoder: the body's own read error
// as the reader returned it, or what readErr makes of the rest.
func (d *recordDecoder) fail(err error) error {
	if err == nil {
		return nil
	}
	if d.src.err != nil {
		return d.src.err
	}
	return readErr(err)
}

// readErr separates syntax errors (a malformed body) from read failures (a
// body cut short, a reset connection), which are worth another attempt.
func readErr(err error) error {
	var syn *jsontext.SyntacticError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, io.ErrUnexpectedEOF), err == io.EOF:
		// EOF inside the object: the body ended early.
		return io.ErrUnexpectedEOF
	case errors.As(err, &syn):
		return malformed("invalid JSON: %v", syn.Err)
	}
	return err
}

// sourceReader remembers the error of the body, so that a reset connection
// reaches the retry logic as itself rather than wrapped by the decoder.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}
