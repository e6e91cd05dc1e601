package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"syscall"
	"testing"
)

// TestKeptBody: ListPage and ListRecords keep the raw body up to KeepBody
// bytes, and DecodePage reads it again into the same rows; a larger body
// is not kept.
func TestKeptBody(t *testing.T) {
	h := newHarness(t, okRows(3), func(c *Config) { c.KeepBody = 1 << 20 })
	q := backlinksQuery()
	prep, err := Prepare(*q)
	if err != nil {
		t.Fatal(err)
	}
	page, err := prep.Page(nil, q.Limit)
	if err != nil {
		t.Fatal(err)
	}
	var first []map[string]any
	res, err := h.c.ListPage(context.Background(), page, collect(q, &first))
	if err != nil || len(res.Body) == 0 {
		t.Fatalf("ListPage: %v, body %d bytes", err, len(res.Body))
	}
	var records []Record
	res, err = h.c.ListRecords(context.Background(), q, func(r Record) error { records = append(records, r); return nil })
	if err != nil || len(res.Body) == 0 || len(records) != 3 {
		t.Fatalf("ListRecords: %v, body %d bytes, %d records", err, len(res.Body), len(records))
	}
	var again []Record
	n, err := DecodePage(bytes.NewReader(res.Body), q, func(r Record) error { again = append(again, r); return nil })
	if err != nil || n != 3 || len(again) != 3 {
		t.Fatalf("DecodePage: %d rows, %v", n, err)
	}
	for i := range again {
		if got, want := recordMap(again[i], q.Select), recordMap(records[i], q.Select); fmt.Sprint(got) != fmt.Sprint(want) || want["url_from"] != first[i]["url_from"] {
			t.Errorf("row %d decoded again as %v, want %v (ListPage: %v)", i, got, want, first[i])
		}
	}
	stop := errors.New("stop")
	if _, err := DecodePage(bytes.NewReader(res.Body), q, func(Record) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("the callback's error came back as %v", err)
	}
	small := newHarness(t, okRows(3), func(c *Config) { c.KeepBody = 10 })
	res, err = small.c.ListRecords(context.Background(), q, func(Record) error { return nil })
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
		if got := mayHaveCharged(tc.err); got != tc.want {
			t.Errorf("%s: mayHaveCharged = %v, want %v", name, got, tc.want)
		}
	}
}
