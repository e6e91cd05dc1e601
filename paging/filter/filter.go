// Package filter compiles the human-writable filter strings callers send
// (in the spirit of AIP-160) into the upstream's JSON where tree, checked
// against the catalog of one dataset.
//
// A filter is checked completely before anything is sent upstream: an
// unknown field, a field the where parameter does not accept, an operator
// that does not suit the field or a value of the wrong type is an *Error
// that says where in the string the problem is. Such a request never costs
// a unit.
//
// The grammar and its mapping to the where JSON are documented in README.md
// next to this file.
package filter

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/linkgate/linkgate/upstream"
)

// MaxLength is the longest filter, in bytes, that Compile accepts. A filter
// is typed by a person; anything longer is a mistake or an attack, and the
// where tree it produces travels in a URL upstream.
const MaxLength = 4096

// MaxDepth is the deepest nesting Compile accepts. The whole filter is level
// 1; each parenthesised group, each NOT (or "-") and each any()/all() opens
// one more level. The bound keeps the parser's recursion and the compiled
// tree small whatever the input.
const MaxDepth = 32

// maxTreeDepth mirrors the nesting the upstream package accepts when it
// reads a where tree back (upstream.ParseWhere): a node may sit at most at
// depth 64 below the root. Alternating AND and OR inside parentheses can
// make the tree deeper than the MaxDepth levels a person sees, so the
// compiled tree is measured too.
const maxTreeDepth = 64

// Compile parses src, checks it against the dataset described by s and
// returns the equivalent where tree. A blank src means "no filter" and
// yields nil, nil. Every error is an *Error.
func Compile(src string, s *upstream.Schema) (upstream.Expr, error) {
	if len(src) > MaxLength {
		return nil, newError(src, MaxLength, "", "the filter is %d bytes long; the limit is %d", len(src), MaxLength)
	}
	if !utf8.ValidString(src) {
		return nil, newError(src, firstInvalidUTF8(src), "", "the filter is not valid UTF-8")
	}
	if strings.TrimSpace(src) == "" {
		return nil, nil
	}
	if s == nil {
		return nil, newError(src, 0, "", "no dataset to check the filter against")
	}
	toks, err := lex(src)
	if err != nil {
		return nil, err
	}
	p := &parser{src: src, toks: toks, s: s, depth: 1}
	n, err := p.parseFilter()
	if err != nil {
		return nil, err
	}
	e, err := p.lowerExpr(n, 0)
	if err != nil {
		return nil, err
	}
	// The parser checked every field, operator and value with positions;
	// the catalog's own check is the last word, so a disagreement between
	// the two is still caught here rather than upstream.
	if err := s.CheckWhere(e); err != nil {
		return nil, newError(src, 0, "", "%v", err)
	}
	return e, nil
}

// Error is a filter that cannot be compiled: a syntax error, or a field,
// operator or value that the dataset does not accept.
type Error struct {
	// Pos is the byte offset in the filter where the problem is (0-based;
	// len(filter) for a problem at the end).
	Pos int
	// Line and Column locate Pos for people: both 1-based, Column counts
	// characters (runes), not bytes.
	Line, Column int
	// Field is the field the problem is about, if any.
	Field string
	// Msg says what is wrong, and where it can, how to fix it.
	Msg string

	src string
}

func newError(src string, pos int, field, format string, args ...any) *Error {
	if pos < 0 {
		pos = 0
	}
	if pos > len(src) {
		pos = len(src)
	}
	line := 1 + strings.Count(src[:pos], "\n")
	lineStart := strings.LastIndexByte(src[:pos], '\n') + 1
	return &Error{
		Pos:    pos,
		Line:   line,
		Column: utf8.RuneCountInString(src[lineStart:pos]) + 1,
		Field:  field,
		Msg:    fmt.Sprintf(format, args...),
		src:    src,
	}
}

// Error formats as `filter: column 17: field "http_code": needs an integer,
// got the string "abc"`; the line is named only when the filter has several.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("filter: ")
	if strings.Contains(e.src, "\n") {
		fmt.Fprintf(&b, "line %d, ", e.Line)
	}
	fmt.Fprintf(&b, "column %d: ", e.Column)
	if e.Field != "" {
		fmt.Fprintf(&b, "field %q: ", e.Field)
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Excerpt renders the line of the filter that holds the problem with a caret
// under it, for a terminal or a log:
//
//	http_code = "abc"
//	            ^
//
// Tabs are kept so that the caret lines up under them.
func (e *Error) Excerpt() string {
	start := strings.LastIndexByte(e.src[:e.Pos], '\n') + 1
	end := strings.IndexByte(e.src[e.Pos:], '\n')
	if end < 0 {
		end = len(e.src)
	} else {
		end += e.Pos
	}
	line := e.src[start:end]
	var pad strings.Builder
	for _, r := range e.src[start:e.Pos] {
		if r == '\t' {
			pad.WriteByte('\t')
		} else {
			pad.WriteByte(' ')
		}
	}
	return line + "\n" + pad.String() + "^"
}

func firstInvalidUTF8(s string) int {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return i
			}
		}
	}
	return 0
}
