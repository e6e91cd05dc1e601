package paging

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
	pl, err := Compile(Backlinks, Params{Target: "example.com"}, "a")
	if err != nil {
		f.Fatal(err)
	}
	good, _ := tokens.encode(pl.fingerprint, cursor{Key: []any{"http://a.example/", "http://b.example/"}, Skip: 1})
	for _, s := range []string{good, "", ".", "a.b", good[:len(good)/2], good + "x", "e30.AAAA"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := tokens.decode(tok, pl.fingerprint, pl.keys)
		if err == nil && tok != good {
			// Only a re-encoding of the same signed payload may pass.
			if c.Skip < 0 || (c.Key != nil && len(c.Key) != len(pl.keys)) {
				t.Fatalf("%q decoded to %v", tok, c)
			}
		}
		if _, err := tokens.decode(tok, "another-request", pl.keys); err == nil {
			t.Fatalf("%q accepted for another request", tok)
		}
	})
}

// FuzzDecodeFeedsToken: the same for the tokens of the new/lost event
// feed, which carry one cursor per feed.
func FuzzDecodeFeedsToken(f *testing.F) {
	tokens, err := NewTokens([]byte("0123456789abcdef0123"), time.Hour, nil)
	if err != nil {
		f.Fatal(err)
	}
	pl, err := Compile(NewLost, Params{Target: "example.com", Since: "2025-01-01", OrderBy: "change_time:desc"}, "a")
	if err != nil {
		f.Fatal(err)
	}
	keys := [][]sortKey{pl.feeds[0].plan.keys, pl.feeds[1].plan.keys}
	when := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	good, _ := tokens.encodeFeeds(pl.fingerprint, []feedCursor{
		{cursor: cursor{Key: []any{when, "http://a.example/", "http://b.example/"}, Skip: 1}}, {Done: true}})
	single, _ := tokens.encode(pl.fingerprint, cursor{Key: []any{when, "http://a.example/", "http://b.example/"}, Skip: 1})
	for _, s := range []string{good, single, "", ".", good[:len(good)/2], good + "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		cs, err := tokens.decodeFeeds(tok, pl.fingerprint, keys)
		if err == nil {
			if len(cs) != len(keys) {
				t.Fatalf("%q decoded to %d cursors for %d feeds", tok, len(cs), len(keys))
			}
			for i, c := range cs {
				if c.Skip < 0 || (c.Key != nil && len(c.Key) != len(keys[i])) {
					t.Fatalf("%q decoded to %v", tok, cs)
				}
			}
		}
		if tok == single && err == nil {
			t.Fatal("a single-cursor token was taken for a feeds token")
		}
		if _, err := tokens.decodeFeeds(tok, "another-request", keys); err == nil {
			t.Fatalf("%q accepted for another request", tok)
		}
	})
}
