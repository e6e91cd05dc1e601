package service

import (
	"testing"
	"time"
)

// FuzzDecodeToken: whatever a caller sends as page_token, Decode never
// panics, and accepts only tokens this key signed for this request.
func FuzzDecodeToken(f *testing.F) {
	tokens, err := NewTokens([]byte("0123456789abcdef0123"), time.Hour, nil)
	if err != nil {
		f.Fatal(err)
	}
	pl, err := compile(backlinksData, params{Target: "example.com"}, "a")
	if err != nil {
		f.Fatal(err)
	}
	good, _ := tokens.Encode(pl.fingerprint, cursor{Key: []any{"http://a.example/", "http://b.example/"}, Skip: 1})
	for _, s := range []string{good, "", ".", "a.b", good[:len(good)/2], good + "x", "e30.AAAA"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := tokens.Decode(tok, pl.fingerprint, pl.keys)
		if err == nil && tok != good {
			// Only a re-encoding of the same signed payload may pass.
			if c.Skip < 0 || (c.Key != nil && len(c.Key) != len(pl.keys)) {
				t.Fatalf("%q decoded to %v", tok, c)
			}
		}
		if _, err := tokens.Decode(tok, "another-request", pl.keys); err == nil {
			t.Fatalf("%q accepted for another request", tok)
		}
	})
}
