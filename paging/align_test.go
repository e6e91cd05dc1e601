package paging

import (
	"net/url"
	"strings"
	"testing"

	"github.com/linkgate/linkgate/upstream"
)

// rankedKeys are the keys of an order by refdomains_source_domain (a
// number), then url_from: rows are {rank, url}.
func rankedKeys(t *testing.T) []sortKey {
	t.Helper()
	s := upstream.MustSchema(upstream.AllBacklinks)
	rank, _ := s.Field("refdomains_source_domain")
	url, _ := s.Field("url_from")
	return []sortKey{{field: rank, col: 0}, {field: url, col: 1}}
}

func ranked(rows ...any) []upstream.Record {
	var out []upstream.Record
	for i := 0; i < len(rows); i += 2 {
		out = append(out, upstream.Record{upstream.IntValue(int64(rows[i].(int))), upstream.StringValue(rows[i+1].(string))})
	}
	return out
}

// TestAdvanceAlignsOnTheFirstKey: a page whose probe row starts a new value
// of the first key goes on at it; one whose probe row shares its value with
// the last rows kept hands those rows to the next page when they are at most
// a sixteenth of it, and otherwise goes on at the probe row, which starts no
// run.
func TestAdvanceAlignsOnTheFirstKey(t *testing.T) {
	keys := rankedKeys(t)
	var page []upstream.Record
	for i := range 32 {
		page = append(page, ranked(i, "u")...)
	}
	probeStartsRun := append(page[:32:32], ranked(40, "v")...)
	rows, cur, err := advance(keys, cursor{}, probeStartsRun, 32, true)
	if err != nil || len(rows) != 32 || !cur.Run || cur.Key[0] != int64(40) {
		t.Fatalf("probe at a new value: %d rows, cursor %+v, %v; want 32 rows and a cursor at the run of 40", len(rows), cur, err)
	}
	// The last two rows and the probe share 31: two rows are given back.
	shortRun := append(page[:30:30], ranked(31, "a", 31, "b", 31, "c")...)
	rows, cur, err = advance(keys, cursor{}, shortRun, 32, true)
	if err != nil || len(rows) != 30 || !cur.Run || cur.Key[0] != int64(31) || cur.Key[1] != "a" {
		t.Fatalf("a short run: %d rows, cursor %+v, %v; want 30 rows and a cursor at 31 \"a\"", len(rows), cur, err)
	}
	// Three rows are more than a sixteenth of 32: the page keeps them.
	longRun := append(page[:29:29], ranked(31, "a", 31, "b", 31, "c", 31, "d")...)
	rows, cur, err = advance(keys, cursor{}, longRun, 32, true)
	if err != nil || len(rows) != 32 || cur.Run || cur.Key[1] != "d" {
		t.Fatalf("a long run: %d rows, cursor %+v, %v; want 32 rows and a cursor at 31 \"d\", not at a run", len(rows), cur, err)
	}
	// Without align, the short run stays.
	if rows, cur, _ = advance(keys, cursor{}, shortRun, 32, false); len(rows) != 32 || cur.Run {
		t.Fatalf("unaligned: %d rows, cursor %+v", len(rows), cur)
	}
}

// TestAlignedPageComparesNoText: a page from a cursor at a run of a numeric
// first key asks for the rows from that value alone, so its where names no
// text field, and needs no boundary check; from any other cursor it names
// the tie-breakers. The cursor's Run survives a page token.
func TestAlignedPageComparesNoText(t *testing.T) {
	h := newHarness(t)
	pl, err := Compile(Backlinks, Params{Target: "sized-500.example", OrderBy: "refdomains_source_domain:desc"}, tenant)
	if err != nil {
		t.Fatal(err)
	}
	// A row at rank 7: the text keys' values do not matter here.
	row := make(upstream.Record, len(pl.query.Select))
	for i := range row {
		row[i] = upstream.StringValue("https://a.example/")
	}
	row[pl.keys[0].col] = upstream.IntValue(7)
	at := cursor{}.at(pl.keys, row)
	tok, err := h.tokens.encode(pl.fingerprint, at)
	if err != nil {
		t.Fatal(err)
	}
	back, err := h.tokens.decode(tok, pl.fingerprint, pl.keys)
	if err != nil || !back.Run {
		t.Fatalf("the token lost the cursor's run: %+v, %v", back, err)
	}
	for _, tc := range []struct {
		c       cursor
		aligned bool
	}{{back, true}, {cursor{Key: back.Key, Skip: 1}, false}, {cursor{Key: back.Key}, false}} {
		q, err := pl.pageRequest(tc.c, 10)
		if err != nil {
			t.Fatal(err)
		}
		_, raw, _ := strings.Cut(q.Key(), "?")
		v, err := url.ParseQuery(raw)
		if err != nil {
			t.Fatal(err)
		}
		where := v.Get("where")
		text := strings.Contains(where, `"url_from"`)
		if pl.aligned(tc.c) != tc.aligned || text == tc.aligned {
			t.Errorf("cursor %+v: aligned %v, where %s; want aligned %v and url_from in where %v", tc.c, pl.aligned(tc.c), where, tc.aligned, !tc.aligned)
		}
	}
}
