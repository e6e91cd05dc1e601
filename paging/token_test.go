package paging

import (
	"errors"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/clock"
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
		tok, err := codec.encode("fp", at)
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
			got, err := c.verifier.decode(issue(c.issuer), "fp", nil)
			if !c.ok {
				if !errors.Is(err, ErrBadToken) {
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

// TestTokenExpiryToleratesClockSkew: a token issued by a replica whose clock
// is off by up to TokenLeeway resumes on another for its whole lifetime,
// and on none once its lifetime and twice the leeway have passed.
func TestTokenExpiryToleratesClockSkew(t *testing.T) {
	key, ttl := []byte("skew-key-0123456789abcdef"), time.Hour
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name             string
		issuer, verifier time.Duration // each replica's clock, against the true time
		after            time.Duration // true time from issue to use
		ok               bool
	}{
		{"the issuer 3 min slow, at the end of the lifetime", -3 * time.Minute, 0, ttl - time.Second, true},
		{"the verifier 3 min fast, at the end of the lifetime", 0, 3 * time.Minute, ttl - time.Second, true},
		{"the clocks a whole leeway apart, at the end of the lifetime", -TokenLeeway, 0, ttl - time.Second, true},
		{"the same clocks, within the leeway", 0, 0, ttl + TokenLeeway - time.Second, true},
		{"the same clocks, past the leeway", 0, 0, ttl + TokenLeeway + time.Second, false},
		{"the issuer a whole leeway fast, at the latest", TokenLeeway, 0, ttl + 2*TokenLeeway - time.Second, true},
		{"the issuer a whole leeway fast, past the latest", TokenLeeway, 0, ttl + 2*TokenLeeway + time.Second, false},
		{"clocks further apart than the leeway refuse early", -2 * TokenLeeway, 0, ttl - time.Minute, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			issuer, err := NewTokens(key, ttl, clock.NewFake(t0.Add(c.issuer)))
			if err != nil {
				t.Fatal(err)
			}
			verifier, err := NewTokens(key, ttl, clock.NewFake(t0.Add(c.after+c.verifier)))
			if err != nil {
				t.Fatal(err)
			}
			tok, err := issuer.encode("fp", cursor{Skip: 3})
			if err != nil {
				t.Fatal(err)
			}
			_, err = verifier.decode(tok, "fp", nil)
			if c.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !c.ok && !errors.Is(err, ErrBadToken) {
				t.Fatalf("accepted (%v); want it expired", err)
			}
		})
	}
}
