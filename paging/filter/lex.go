package filter

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/linkgate/linkgate/upstream"
)

type tokKind int

const (
	tEOF tokKind = iota
	tIdent
	tString
	tInt
	tFloat
	tDate // a bare date or date-time: 2025-01-01, 2025-01-01T10:00:00Z
	tLParen
	tRParen
	tComma
	tOp // = != < <= > >= : =~ !~
	tMinus
)

// token is one lexeme. text is the source text (the operator for tOp); str
// is the decoded value of a string literal.
type token struct {
	kind tokKind
	pos  int
	text string
	str  string
	// starL and starR report an unescaped '*' as the first or last character
	// of a string literal: a wildcard for = and != (see wildcard). Escaped
	// stars (\*) are literal, which is the only way to compare with text
	// that really starts or ends with one.
	starL, starR bool
}

func lex(src string) ([]token, error) {
	var toks []token
	i := 0
	for i < len(src) {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
			continue
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRuneInString(src[i:])
			if unicode.IsSpace(r) {
				i += size
				continue
			}
			return nil, newError(src, i, "", "unexpected character %q", r)
		case isIdentStart(c):
			j := i + 1
			for j < len(src) && isIdentPart(src[j]) {
				j++
			}
			toks = append(toks, token{kind: tIdent, pos: i, text: src[i:j], str: src[i:j]})
			i = j
			continue
		case c >= '0' && c <= '9':
			t, err := lexNumber(src, i)
			if err != nil {
				return nil, err
			}
			toks = append(toks, t)
			i += len(t.text)
			continue
		case c == '"' || c == '\'':
			t, err := lexString(src, i)
			if err != nil {
				return nil, err
			}
			toks = append(toks, t)
			i += len(t.text)
			continue
		}
		t := token{pos: i, text: src[i : i+1]}
		two := ""
		if i+1 < len(src) {
			two = src[i : i+2]
		}
		switch {
		case c == '(':
			t.kind = tLParen
		case c == ')':
			t.kind = tRParen
		case c == ',':
			t.kind = tComma
		case c == '-':
			t.kind = tMinus
		case two == "!=" || two == "<=" || two == ">=" || two == "=~" || two == "!~":
			t.kind, t.text = tOp, two
		case two == "==":
			// "==" is what programmers type; it means the same as "=".
			t.kind, t.text = tOp, "="
			t.str = two
		case c == '=' || c == '<' || c == '>' || c == ':':
			t.kind = tOp
		case two == "&&" || two == "||":
			word := map[string]string{"&&": "AND", "||": "OR"}[two]
			return nil, newError(src, i, "", "unexpected %q; write %s", two, word)
		case c == '!':
			return nil, newError(src, i, "", `unexpected "!"; write NOT, or != or !~`)
		default:
			return nil, newError(src, i, "", "unexpected character %q", rune(c))
		}
		// width in the source: "==" is two bytes although its text is "=".
		width := len(t.text)
		if t.str == "==" {
			width = 2
		}
		toks = append(toks, t)
		i += width
	}
	return append(toks, token{kind: tEOF, pos: len(src)}), nil
}

func isIdentStart(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

// isIdentPart admits dots so that the upstream's dot notation for nested
// fields ("foo.bar") is one identifier.
func isIdentPart(c byte) bool { return isIdentStart(c) || (c >= '0' && c <= '9') || c == '.' }

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// lexNumber reads an unsigned integer, a decimal number or a bare date
// (date-time). A sign is a separate token: the parser joins "-" to a number
// only in value position, so that "-" stays AIP-160's NOT elsewhere.
func lexNumber(src string, i int) (token, error) {
	if isDate(src[i:]) {
		j := i + 10
		if j < len(src) && src[j] == 'T' {
			for j < len(src) && (isDigit(src[j]) || strings.IndexByte("T:.Z+-", src[j]) >= 0) {
				j++
			}
		}
		text := src[i:j]
		if _, err := upstream.ParseTime(text); err != nil {
			return token{}, newError(src, i, "", "%s is not a date (YYYY-MM-DD) or an RFC 3339 date-time", text)
		}
		return token{kind: tDate, pos: i, text: text, str: text}, nil
	}
	j := i
	for j < len(src) && isDigit(src[j]) {
		j++
	}
	kind := tInt
	if j+1 < len(src) && src[j] == '.' && isDigit(src[j+1]) {
		kind = tFloat
		j++
		for j < len(src) && isDigit(src[j]) {
			j++
		}
	}
	if j < len(src) && (src[j] == 'e' || src[j] == 'E') {
		k := j + 1
		if k < len(src) && (src[k] == '+' || src[k] == '-') {
			k++
		}
		if k < len(src) && isDigit(src[k]) {
			kind = tFloat
			for j = k; j < len(src) && isDigit(src[j]); j++ {
			}
		}
	}
	if j < len(src) && isIdentPart(src[j]) {
		end := j
		for end < len(src) && isIdentPart(src[end]) {
			end++
		}
		return token{}, newError(src, i, "", "malformed number %q", src[i:end])
	}
	return token{kind: kind, pos: i, text: src[i:j]}, nil
}

// isDate reports whether s starts with YYYY-MM-DD.
func isDate(s string) bool {
	if len(s) < 10 || s[4] != '-' || s[7] != '-' {
		return false
	}
	for _, k := range []int{0, 1, 2, 3, 5, 6, 8, 9} {
		if !isDigit(s[k]) {
			return false
		}
	}
	return len(s) == 10 || !isIdentPart(s[10]) || s[10] == 'T'
}

// lexString reads a single- or double-quoted string. Escapes: \\ \" \' \n
// \r \t \* and \uXXXX.
func lexString(src string, start int) (token, error) {
	quote := src[start]
	var b strings.Builder
	t := token{kind: tString, pos: start}
	lastStar := false // the last character appended was an unescaped '*'
	i := start + 1
	for {
		if i >= len(src) {
			return token{}, newError(src, start, "", "unterminated string: %c opened here is never closed", quote)
		}
		c := src[i]
		if c == quote {
			i++
			break
		}
		if c != '\\' {
			if c == '*' && b.Len() == 0 {
				t.starL = true
			}
			lastStar = c == '*'
			b.WriteByte(c)
			i++
			continue
		}
		lastStar = false
		if i+1 >= len(src) {
			return token{}, newError(src, start, "", "unterminated string: %c opened here is never closed", quote)
		}
		esc := src[i+1]
		switch esc {
		case '\\', '"', '\'', '*':
			b.WriteByte(esc)
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'u':
			r, ok := hex4(src[i+2:])
			if !ok || !utf8.ValidRune(r) {
				return token{}, newError(src, i, "", `invalid escape: \u needs four hex digits of a valid character`)
			}
			b.WriteRune(r)
			i += 4
		default:
			r, _ := utf8.DecodeRuneInString(src[i+1:])
			return token{}, newError(src, i, "", `invalid escape \%c in a string; write \\ for a backslash`, r)
		}
		i += 2
	}
	t.text = src[start:i]
	t.str = b.String()
	// A lone "*" is both first and last; it is one star, not two.
	t.starR = lastStar && !(t.starL && len(t.str) == 1)
	return t, nil
}

func hex4(s string) (rune, bool) {
	if len(s) < 4 {
		return 0, false
	}
	var r rune
	for k := 0; k < 4; k++ {
		c := s[k]
		var v byte
		switch {
		case isDigit(c):
			v = c - '0'
		case c >= 'a' && c <= 'f':
			v = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			v = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(v)
	}
	return r, true
}

// describe names a token in an error message.
func describe(t token) string {
	switch t.kind {
	case tEOF:
		return "the end of the filter"
	case tString:
		return fmt.Sprintf("the string %s", t.text)
	case tInt, tFloat:
		return "the number " + t.text
	case tDate:
		return "the date " + t.text
	case tIdent:
		return fmt.Sprintf("%q", t.text)
	}
	return fmt.Sprintf("%q", t.text)
}
