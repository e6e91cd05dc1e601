package paging

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/linkgate/linkgate/internal/clock"
	"github.com/linkgate/linkgate/upstream"
)

// MaxTokenBytes bounds the size of a page token a caller may send.
const MaxTokenBytes = 4096

// TokenLeeway is how long past its expiry a token is still accepted, as
// JWT's leeway on exp: a token's expiry is set by the clock of the replica
// that issued it and checked by the clock of the one it comes back to.
// With every two replicas' clocks within TokenLeeway of each other, a
// token resumes on any replica for at least its lifetime, and on none
// later than its lifetime and twice the leeway after it was issued.
const TokenLeeway = 5 * time.Minute

// cursor is the position of a pager: just after the row whose sort key is
// Key, of which Skip rows (counting from the first row with that key, in the
// upstream's deterministic order) have already been returned.
//
// Tail is what came before: the last runs of rows returned with other keys,
// oldest first, which an upstream that holds them equal to Key returns again
// first (see reread).
//
// Settled marks a cursor from a token older than settleAfter: the rows it
// expects first may have changed upstream since, so that their absence is
// not taken for an inconsistent order.
//
// Run marks a cursor at (Skip 0) the first row of a run of its first key:
// the row before it has another value there, so that a page can start from
// that value alone (see Plan.aligned).
type cursor struct {
	Key     []any // nil at the start
	Skip    int
	Tail    []run
	Settled bool
	Run     bool
}

// settleAfter is the age from which a token's cursor is Settled. Pages of a
// run, and List calls paging on, follow each other well within it.
const settleAfter = 5 * time.Minute

// tokenBody is what a page token carries. It is signed, not encrypted: it
// holds nothing but a position in data the caller may read anyway.
type tokenBody struct {
	V       int               `json:"v"`
	Request string            `json:"r"` // fingerprint of the request the token continues
	Key     []json.RawMessage `json:"k"`
	Skip    int               `json:"s"`
	Tail    []run             `json:"t,omitempty"`
	Run     bool              `json:"u,omitempty"`
	Expires int64             `json:"e"` // unix seconds
	// Feeds are the cursors of a merged run (new/lost), one per feed, in
	// place of Key and Skip.
	Feeds []feedToken `json:"f,omitempty"`
}

type feedToken struct {
	Key  []json.RawMessage `json:"k"`
	Skip int               `json:"s"`
	Tail []run             `json:"t,omitempty"`
	Run  bool              `json:"u,omitempty"`
	Done bool              `json:"d,omitempty"`
}

// feedCursor is the position of one feed of a merged run; Done means no
// row of the feed follows it.
type feedCursor struct {
	cursor
	Done bool
}

// Tokens issues and checks page tokens with HMAC keys.
type Tokens struct {
	// keys[0] signs; every key verifies, so that a key can be rotated
	// while tokens signed with the one before it are still alive.
	keys  [][]byte
	ttl   time.Duration
	clock clock.Clock
}

// NewTokens returns a token codec that signs with key and also accepts
// tokens signed with any of the older keys. Every replica must share the
// keys so that a token issued by one is accepted by another; during a
// rolling rotation, replicas configured with [new, old] accept what those
// still on [old] issue. A nil clock means clock.System.
func NewTokens(key []byte, ttl time.Duration, c clock.Clock, older ...[]byte) (*Tokens, error) {
	keys := append([][]byte{key}, older...)
	for _, k := range keys {
		if len(k) < 16 {
			return nil, errors.New("page token key must be at least 16 bytes")
		}
	}
	if ttl <= 0 {
		return nil, errors.New("page token lifetime must be positive")
	}
	return &Tokens{keys: keys, ttl: ttl, clock: clock.Or(c)}, nil
}

// ErrBadToken is wrapped by every token error so the service answers
// INVALID_ARGUMENT on the page_token field.
var ErrBadToken = errors.New("invalid page_token")

// encode issues a token for a cursor of the request with the fingerprint fp.
func (t *Tokens) encode(fp string, c cursor) (string, error) {
	key, err := encodeKey(c.Key)
	if err != nil {
		return "", err
	}
	return t.seal(tokenBody{V: 1, Request: fp, Key: key, Skip: c.Skip, Tail: c.Tail, Run: c.Run})
}

// encodeFeeds issues a token for the cursors of a merged run.
func (t *Tokens) encodeFeeds(fp string, cs []feedCursor) (string, error) {
	body := tokenBody{V: 1, Request: fp}
	for _, c := range cs {
		key, err := encodeKey(c.Key)
		if err != nil {
			return "", err
		}
		body.Feeds = append(body.Feeds, feedToken{Key: key, Skip: c.Skip, Tail: c.Tail, Run: c.Run, Done: c.Done})
	}
	return t.seal(body)
}

func encodeKey(vals []any) ([]json.RawMessage, error) {
	var key []json.RawMessage
	for _, v := range vals {
		raw, err := json.Marshal(upstream.KeyLiteral(v))
		if err != nil {
			return nil, err
		}
		key = append(key, raw)
	}
	return key, nil
}

func (t *Tokens) seal(body tokenBody) (string, error) {
	body.Expires = t.clock.Now().Add(t.ttl).Unix()
	payload, err := json.Marshal(body)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(sign(t.keys[0], payload)), nil
}

// decode checks a token's signature, expiry and request fingerprint and
// returns its cursor; key values are decoded by the kinds of the sort keys.
func (t *Tokens) decode(token, fp string, keys []sortKey) (cursor, error) {
	body, err := t.open(token, fp)
	if err != nil {
		return cursor{}, err
	}
	if body.Feeds != nil {
		return cursor{}, fmt.Errorf("%w: malformed", ErrBadToken)
	}
	c, err := decodeCursor(body.Key, body.Skip, body.Tail, keys)
	c.Settled, c.Run = t.settled(body), body.Run && c.Key != nil
	return c, err
}

// decodeFeeds is decode for the token of a merged run of len(keys) feeds.
func (t *Tokens) decodeFeeds(token, fp string, keys [][]sortKey) ([]feedCursor, error) {
	body, err := t.open(token, fp)
	if err != nil {
		return nil, err
	}
	if len(body.Feeds) != len(keys) || body.Key != nil {
		return nil, fmt.Errorf("%w: malformed", ErrBadToken)
	}
	out := make([]feedCursor, len(keys))
	for i, f := range body.Feeds {
		c, err := decodeCursor(f.Key, f.Skip, f.Tail, keys[i])
		if err != nil {
			return nil, err
		}
		c.Settled, c.Run = t.settled(body), f.Run && c.Key != nil
		out[i] = feedCursor{cursor: c, Done: f.Done}
	}
	return out, nil
}

// settled reports whether a token was issued more than settleAfter ago.
func (t *Tokens) settled(body tokenBody) bool {
	return t.clock.Now().Sub(time.Unix(body.Expires, 0).Add(-t.ttl)) > settleAfter
}

func (t *Tokens) open(token, fp string) (tokenBody, error) {
	if len(token) > MaxTokenBytes {
		return tokenBody{}, fmt.Errorf("%w: longer than %d bytes", ErrBadToken, MaxTokenBytes)
	}
	p64, s64, ok := bytes.Cut([]byte(token), []byte("."))
	if !ok {
		return tokenBody{}, fmt.Errorf("%w: malformed", ErrBadToken)
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(string(p64))
	sig, err2 := base64.RawURLEncoding.DecodeString(string(s64))
	if err1 != nil || err2 != nil {
		return tokenBody{}, fmt.Errorf("%w: malformed", ErrBadToken)
	}
	if !t.verify(payload, sig) {
		return tokenBody{}, fmt.Errorf("%w: signature does not match (tampered, or issued by another deployment)", ErrBadToken)
	}
	var body tokenBody
	if err := json.Unmarshal(payload, &body); err != nil || body.V != 1 {
		return tokenBody{}, fmt.Errorf("%w: malformed", ErrBadToken)
	}
	if t.clock.Now().Add(-TokenLeeway).Unix() > body.Expires {
		return tokenBody{}, fmt.Errorf("%w: expired at %s; start again without a token", ErrBadToken, time.Unix(body.Expires, 0).UTC().Format(time.RFC3339))
	}
	if body.Request != fp {
		return tokenBody{}, fmt.Errorf("%w: it was issued for a request with other parameters", ErrBadToken)
	}
	return body, nil
}

func decodeCursor(key []json.RawMessage, skip int, tail []run, keys []sortKey) (cursor, error) {
	if skip < 0 || (len(key) != 0 && len(key) != len(keys)) || len(tail) > tailRuns || (len(key) == 0 && len(tail) > 0) {
		return cursor{}, fmt.Errorf("%w: malformed", ErrBadToken)
	}
	for _, r := range tail {
		if r.N <= 0 {
			return cursor{}, fmt.Errorf("%w: malformed", ErrBadToken)
		}
	}
	c := cursor{Skip: skip, Tail: tail}
	for i, raw := range key {
		v, err := keys[i].decode(raw)
		if err != nil {
			return cursor{}, fmt.Errorf("%w: malformed key", ErrBadToken)
		}
		c.Key = append(c.Key, v)
	}
	return c, nil
}

func sign(key, payload []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(payload)
	return m.Sum(nil)
}

// verify reports whether sig is the signature of payload under any key.
// Every key is tried, so the time taken does not tell which one matched.
func (t *Tokens) verify(payload, sig []byte) bool {
	ok := false
	for _, k := range t.keys {
		ok = hmac.Equal(sig, sign(k, payload)) || ok
	}
	return ok
}
