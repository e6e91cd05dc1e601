package upstream

import (
	"strings"
	"testing"
	"unicode"
)

// FuzzParseOrder: any order_by a caller sends parses or fails with an
// InvalidError on order_by, never panics, and what it accepts has
// non-empty field names without spaces or colons.
func FuzzParseOrder(f *testing.F) {
	for _, s := range []string{"", "a", "a:desc", "a desc, b", "a DESC,b:asc", "a b c", ",", "a:", ":desc", " a  desc ", "a\tdesc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		order, err := ParseOrder(s)
		if err != nil {
			if ie, ok := err.(*InvalidError); !ok || ie.Param != "order_by" {
				t.Fatalf("%q: %v is not an order_by InvalidError", s, err)
			}
			return
		}
		for _, o := range order {
			if o.Field == "" || strings.ContainsFunc(o.Field, unicode.IsSpace) || strings.ContainsAny(o.Field, ":,") {
				t.Fatalf("%q: accepted the key %q", s, o.Field)
			}
		}
	})
}
