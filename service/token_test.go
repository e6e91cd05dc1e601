package service

import (
	"errors"
	"testing"
	"time"
)

// TestTokenKeyRotation: a codec signs with its first key and accepts tokens
// of every key it holds, so a key rotates without refusing live tokens.
func TestTokenKeyRotation(t *testing.T) {
	oldKey, newKey := []byte("old-key-0123456789abcdef"), []byte("new-key-0123456789abcdef")
	before, err := NewTokens(oldKey, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	during, err := NewTokens(newKey, time.Hour, nil, oldKey)
	if err != nil {
		t.Fatal(err)
	}
	after, err := NewTokens(newKey, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	at := cursor{Skip: 7} // a position before any key: no sort keys needed
	issue := func(codec *Tokens) string {
		tok, err := codec.Encode("fp", at)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	for _, c := range []struct {
		name     string
		issuer   *Tokens
		verifier *Tokens
		ok       bool
	}{
		{"old token on a rotating replica", before, during, true},
		{"new token on a rotating replica", during, during, true},
		{"new token on an old replica", during, before, false},
		{"new token after the old key is dropped", during, after, true},
		{"old token after the old key is dropped", before, after, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := c.verifier.Decode(issue(c.issuer), "fp", nil)
			if !c.ok {
				if !errors.Is(err, errBadToken) {
					t.Fatalf("got %v, %v; want the token refused", got, err)
				}
				return
			}
			if err != nil || got.Skip != at.Skip {
				t.Fatalf("got %+v, %v; want %+v", got, err, at)
			}
		})
	}
	if _, err := NewTokens(newKey, time.Hour, nil, []byte("short")); err == nil {
		t.Fatal("an older key under 16 bytes was accepted")
	}
}
