package paging

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/upstream"
)

func domainKeys(t *testing.T) []sortKey {
	t.Helper()
	f, ok := upstream.MustSchema(upstream.RefDomains).Field("domain")
	if !ok {
		t.Fatal("no domain field")
	}
	return []sortKey{{field: f, col: 0}}
}

func domains(names ...string) []upstream.Record {
	rows := make([]upstream.Record, len(names))
	for i, n := range names {
		rows[i] = upstream.Record{upstream.StringValue(n)}
	}
	return rows
}

func names(rows []upstream.Record) string {
	var out []string
	for _, r := range rows {
		out = append(out, r[0].Str())
	}
	return strings.Join(out, ",")
}

// TestBoundaryInsideACollationTie: an upstream that holds "a.example" and
// "A.example" equal (a caseless collation) returns both when asked from
// "A.example" on, the one already returned first. The pager recognises it
// by its exact bytes and returns each row once; a page that returns a row
// of the tail out of place, or drops the row it showed next, stops it.
func TestBoundaryInsideACollationTie(t *testing.T) {
	keys := domainKeys(t)
	// Page 1 kept a.example and showed A.example next (the probe).
	rows, cur, err := advance(keys, cursor{}, domains("a.example", "A.example"), 1, false)
	if err != nil || names(rows) != "a.example" {
		t.Fatalf("page 1: %s, %v", names(rows), err)
	}
	if cur.Skip != 0 || cur.Key[0] != "A.example" || len(cur.Tail) != 1 {
		t.Fatalf("cursor after page 1: %+v", cur)
	}
	for _, tc := range []struct {
		page, want, problem string
	}{
		{page: "a.example,A.example,b.example", want: "A.example,b.example"},        // the tie comes back first: skipped
		{page: "A.example,b.example", want: "A.example,b.example"},                  // a byte collation: nothing to skip
		{page: "b.example", problem: "placed a row at this key next"},               // where dropped the row shown next
		{page: "A.example,a.example,b.example", problem: "returned this row again"}, // the tie after the cursor: a repeat
		{page: "", problem: "returns no row"},
	} {
		t.Run(tc.page, func(t *testing.T) {
			page := domains(strings.Split(tc.page, ",")...)
			if tc.page == "" {
				page = nil
			}
			got, _, err := advance(keys, cur, page, 10, false)
			switch {
			case tc.problem == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.problem == "" && names(got) != tc.want:
				t.Fatalf("rows %s, want %s", names(got), tc.want)
			case tc.problem != "" && (err == nil || !strings.Contains(err.Problem, tc.problem)):
				t.Fatalf("rows %s, error %v; want an order error saying %q", names(got), err, tc.problem)
			}
		})
	}
}

// TestCursorTailSurvivesTokens: the tail travels in page tokens, so a List
// page or a resumed stream recognises the tie as the stream would.
func TestCursorTailSurvivesTokens(t *testing.T) {
	keys := domainKeys(t)
	h := newHarness(t)
	_, cur, err := advance(keys, cursor{}, domains("a.example", "b.example", "B.example"), 2, false)
	if err != nil {
		t.Fatal(err)
	}
	tok, terr := h.tokens.encode("fp", cur)
	if terr != nil {
		t.Fatal(terr)
	}
	back, derr := h.tokens.decode(tok, "fp", keys)
	if derr != nil {
		t.Fatal(derr)
	}
	if !slices.Equal(back.Tail, cur.Tail) || back.Skip != cur.Skip || !sameKey(back.Key, cur.Key) {
		t.Fatalf("decoded %+v, encoded %+v", back, cur)
	}
	rows, _, oerr := advance(keys, back, domains("b.example", "B.example", "c.example"), 5, false)
	if oerr != nil || names(rows) != "B.example,c.example" {
		t.Fatalf("resumed: %s, %v", names(rows), oerr)
	}
}

// TestOrderCheckSeesNumbersOutOfOrder: numbers, instants, booleans and
// nulls are compared as the order asks; text is left to the upstream.
func TestOrderCheckSeesNumbersOutOfOrder(t *testing.T) {
	s := upstream.MustSchema(upstream.AllBacklinks)
	dr, _ := s.Field("domain_rating_source")
	url, _ := s.Field("url_from")
	keys := []sortKey{{field: dr, desc: true, col: 0}, {field: url, col: 1}}
	row := func(d float64, u string) upstream.Record {
		return upstream.Record{upstream.FloatValue(d), upstream.StringValue(u)}
	}
	for _, tc := range []struct {
		rows []upstream.Record
		bad  bool
	}{
		{[]upstream.Record{row(50, "b"), row(50, "a"), row(40, "z")}, false},                      // text: the upstream's order
		{[]upstream.Record{row(50, "a"), row(60, "b")}, true},                                     // a number going up in a descending order
		{[]upstream.Record{{upstream.NullValue(), upstream.StringValue("a")}, row(1, "b")}, true}, // null first in a descending order
	} {
		err := inOrder(keys, tc.rows)
		if (err != nil) != tc.bad {
			t.Errorf("%v: error %v, want bad=%v", tc.rows, err, tc.bad)
		}
		var oe *OrderError
		if err != nil && !errors.As(error(err), &oe) {
			t.Errorf("not an OrderError: %T", err)
		}
	}
}

// TestSettledTokenResumesPastAVanishedRow: a token minutes old may point at
// a row the upstream has since dropped (a link lost). Fresh, the page that
// does not start with it is refused; settled, it resumes after the rows it
// returned, and the pages after are checked in full again.
func TestSettledTokenResumesPastAVanishedRow(t *testing.T) {
	keys := domainKeys(t)
	h := newHarness(t)
	_, cur, err := advance(keys, cursor{}, domains("a.example", "b.example"), 1, false)
	if err != nil {
		t.Fatal(err)
	}
	tok, terr := h.tokens.encode("fp", cur)
	if terr != nil {
		t.Fatal(terr)
	}
	gone := domains("c.example", "d.example") // b.example was dropped upstream
	fresh, _ := h.tokens.decode(tok, "fp", keys)
	if _, _, err := advance(keys, fresh, gone, 5, false); err == nil {
		t.Fatal("a fresh token resumed past the row it pointed at")
	}
	h.clock.Advance(settleAfter + time.Second)
	settled, _ := h.tokens.decode(tok, "fp", keys)
	rows, next, oerr := advance(keys, settled, gone, 1, false)
	if oerr != nil || names(rows) != "c.example" {
		t.Fatalf("settled token: %s, %v", names(rows), oerr)
	}
	if next.Settled {
		t.Fatal("the cursor after the first page is still settled: later pages would go unchecked")
	}
}
