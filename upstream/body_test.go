package upstream

import (
	"context"
	"errors"
	"net/http"
	"syscall"
	"testing"
)

// TestKeptBody: List keeps the raw body up to KeepBody bytes, and
// DecodeRows reads it again into the same rows; a larger body is not kept.
func TestKeptBody(t *testing.T) {
	h := newHarness(t, okRows(3), func(c *Config) { c.KeepBody = 1 << 20 })
	var first []Row
	res, err := h.c.List(context.Background(), backlinksQuery(), collect(&first))
	if err != nil || len(res.Body) == 0 {
		t.Fatalf("List: %v, body %d bytes", err, len(res.Body))
	}
	var again []Row
	n, err := DecodeRows(AllBacklinks, res.Body, collect(&again))
	if err != nil || n != 3 || len(again) != 3 || again[2]["url_from"] != first[2]["url_from"] {
		t.Fatalf("DecodeRows: %d rows, %v", n, err)
	}
	stop := errors.New("stop")
	if _, err := DecodeRows(AllBacklinks, res.Body, func(Row) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("the callback's error came back as %v", err)
	}
	small := newHarness(t, okRows(3), func(c *Config) { c.KeepBody = 10 })
	res, err = small.c.List(context.Background(), backlinksQuery(), func(Row) error { return nil })
	if err != nil || res.Body != nil || res.Rows != 3 {
		t.Fatalf("a body above KeepBody: %v, kept %d bytes, %d rows", err, len(res.Body), res.Rows)
	}
}

// TestMayHaveCharged: only a request that left without an answer may have
// been charged.
func TestMayHaveCharged(t *testing.T) {
	for name, tc := range map[string]struct {
		err  error
		want bool
	}{
		"answered 500":        {&APIError{Status: 500}, false},
		"answered 429":        {&APIError{Status: http.StatusTooManyRequests}, false},
		"connection broken":   {&APIError{Status: 0, Message: "reset"}, true},
		"body cut short":      {&APIError{Status: 200, Message: "cut"}, false},
		"caller went away":    {context.Canceled, true},
		"connection refused":  {&APIError{cause: &scrubbedError{err: syscall.ECONNREFUSED}}, false},
		"refused by the gate": {errors.New("queue deadline"), false},
		"no error":            {nil, false},
	} {
		if got := MayHaveCharged(tc.err); got != tc.want {
			t.Errorf("%s: MayHaveCharged = %v, want %v", name, got, tc.want)
		}
	}
}
