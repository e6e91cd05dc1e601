package ahrefssim

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/linkgate/linkgate/upstream"
)

// TestKeysetPaging pages a large target the way the service's pager does:
// order_by ending in the unique (url_from, url_to), each page continuing
// with a where that starts after the last row (ANDed with the caller's
// filter), and checks every row comes exactly once, in the order of the full
// answer. Small pages put boundaries inside runs of equal
// domain_rating_source (all links of a domain share it).
func TestKeysetPaging(t *testing.T) {
	s := New(Config{CacheTTL: -1})
	const target = "sized-20000.example"
	filter := `{"field":"is_dofollow","is":["eq",true]}`
	tests := []struct {
		name  string
		order []upstream.Order
		limit int
	}{
		{"default key", []upstream.Order{{Field: "url_from"}, {Field: "url_to"}}, 997},
		{"dr desc then key", []upstream.Order{{Field: "domain_rating_source", Desc: true}, {Field: "url_from"}, {Field: "url_to"}}, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sel := "url_from,url_to,domain_rating_source"
			v := vals("target", target, "select", sel, "where", filter, "order_by", upstream.FormatOrder(tt.order))
			want := all(t, s, upstream.AllBacklinks, v)
			if len(want) < 5000 {
				t.Fatalf("only %d rows", len(want))
			}
			var got []map[string]any
			var last map[string]any
			insideRun, pages := 0, 0
			for len(got) < len(want) {
				p := url.Values{}
				for k, x := range v {
					p[k] = x
				}
				// Small pages first, to put boundaries inside runs of equal
				// keys, then big ones: an ordered page scans the target.
				limit := tt.limit
				if pages++; pages > 25 {
					limit = 1500
				}
				p.Set("limit", itoa(limit))
				if last != nil {
					p.Set("where", `{"and":[`+filter+`,`+after(tt.order, last)+`]}`)
				}
				w := do(t, s, blPath, p, DefaultKey)
				if w.Code != 200 {
					t.Fatalf("%d %s", w.Code, w.Body)
				}
				var body struct{ Backlinks []map[string]any }
				if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
					t.Fatal(err)
				}
				if len(body.Backlinks) == 0 {
					break
				}
				if last != nil && body.Backlinks[0]["domain_rating_source"] == last["domain_rating_source"] {
					insideRun++
				}
				got = append(got, body.Backlinks...)
				last = body.Backlinks[len(body.Backlinks)-1]
			}
			if len(got) < len(want) {
				t.Fatalf("paged %d rows, want %d", len(got), len(want))
			}
			for k := range want {
				if got[k]["url_from"] != want[k]["url_from"] || got[k]["url_to"] != want[k]["url_to"] {
					t.Fatalf("row %d: got %v, want %v", k, got[k], want[k])
				}
			}
			if tt.limit < 100 && insideRun == 0 {
				t.Errorf("no page boundary fell inside a run of equal domain_rating_source")
			}
		})
	}
}

// after is the keyset where: rows strictly after last in the order.
func after(order []upstream.Order, last map[string]any) string {
	var or []string
	for k := range order {
		var and []string
		for e := range k {
			and = append(and, cond(order[e].Field, "eq", last[order[e].Field]))
		}
		op := "gt"
		if order[k].Desc {
			op = "lt"
		}
		and = append(and, cond(order[k].Field, op, last[order[k].Field]))
		or = append(or, `{"and":[`+strings.Join(and, ",")+`]}`)
	}
	return `{"or":[` + strings.Join(or, ",") + `]}`
}

func cond(field, op string, v any) string {
	b, _ := json.Marshal(v)
	return `{"field":"` + field + `","is":["` + op + `",` + string(b) + `]}`
}

// TestRefdomainPaging pages refdomains by domain and checks the union.
func TestRefdomainPaging(t *testing.T) {
	s := New(Config{CacheTTL: -1})
	v := vals("target", "sized-20000.example", "select", "domain,links_to_target", "order_by", "domain:asc")
	want := all(t, s, upstream.RefDomains, v)
	var got []map[string]any
	for {
		p := vals("target", "sized-20000.example", "select", "domain,links_to_target", "order_by", "domain:asc", "limit", "333")
		if len(got) > 0 {
			p.Set("where", cond("domain", "gt", got[len(got)-1]["domain"]))
		}
		var body struct{ Refdomains []map[string]any }
		json.Unmarshal(do(t, s, upstream.RefDomains.Path(), p, DefaultKey).Body.Bytes(), &body)
		if len(body.Refdomains) == 0 {
			break
		}
		got = append(got, body.Refdomains...)
	}
	if len(got) != len(want) {
		t.Fatalf("paged %d refdomains, want %d", len(got), len(want))
	}
	for k := range want {
		if got[k]["domain"] != want[k]["domain"] {
			t.Fatalf("row %d: %v, want %v", k, got[k], want[k])
		}
	}
}

// servedAndSorted is the page the simulator serves for v on path, and the
// first n rows of the whole answer sorted (All), both as JSON, with how
// many rows the latter holds.
func servedAndSorted(t *testing.T, s *Server, ep upstream.Endpoint, path string, v url.Values, n int) (served, sorted string, rows int) {
	t.Helper()
	want := all(t, s, ep, v)
	want = want[:min(n, len(want))]
	w := do(t, s, path, v, DefaultKey)
	if w.Code != 200 {
		t.Fatalf("%s: %d %s", ep, w.Code, w.Body)
	}
	var body map[string][]map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	for _, rows := range body {
		got = rows
	}
	g, _ := json.Marshal(got)
	wj, _ := json.Marshal(want)
	return string(g), string(wj), len(want)
}

// TestReverseKeysetPage: a page in the unique key's reverse order, bounded
// above by where (the row before a page boundary, as the pager's boundary
// check asks it), is streamed backwards from the bound: it must be the
// first rows of the sorted answer.
func TestReverseKeysetPage(t *testing.T) {
	s := New(Config{CacheTTL: -1})
	for _, tc := range []struct {
		ep     upstream.Endpoint
		path   string
		order  string
		sel    string
		before func(row map[string]any) string
	}{
		{upstream.AllBacklinks, blPath, "url_from:desc,url_to:desc", "url_from,url_to", func(r map[string]any) string {
			from, _ := json.Marshal(r["url_from"])
			to, _ := json.Marshal(r["url_to"])
			return `{"or":[{"field":"url_from","is":["lt",` + string(from) + `]},{"and":[{"field":"url_from","is":["eq",` + string(from) + `]},{"field":"url_to","is":["lt",` + string(to) + `]}]}]}`
		}},
		{upstream.RefDomains, upstream.RefDomains.Path(), "domain:desc", "domain", func(r map[string]any) string {
			d, _ := json.Marshal(r["domain"])
			return `{"field":"domain","is":["lt",` + string(d) + `]}`
		}},
	} {
		base := vals("target", "sized-3000.example", "select", tc.sel, "order_by", tc.order)
		full := all(t, s, tc.ep, base)
		if len(full) < 100 {
			t.Fatalf("%s: only %d rows", tc.ep, len(full))
		}
		for _, at := range []int{0, 1, len(full) / 3, len(full) - 2, len(full) - 1} {
			where := `{"and":[` + tc.before(full[at]) + `,{"field":"` + strings.Split(tc.sel, ",")[0] + `","is":["prefix","http"]}]}`
			if tc.ep == upstream.RefDomains {
				where = tc.before(full[at])
			}
			v := vals("target", "sized-3000.example", "select", tc.sel, "order_by", tc.order, "where", where, "limit", "7")
			if g, wj, _ := servedAndSorted(t, s, tc.ep, tc.path, v, 7); g != wj {
				t.Fatalf("%s before row %d:\n%s\nwant\n%s", tc.ep, at, g, wj)
			}
		}
	}
}

// TestFirstSeenIndex: an order by first_seen_link (either way) then url_from
// and url_to, or by a referring domain's first_seen then domain, the default
// orders, is served from the dataset's index from the where's bound on the
// time, and answers what the full sort does, for continuations at the time
// alone and at the whole key, with a filter.
func TestFirstSeenIndex(t *testing.T) {
	s := New(Config{CacheTTL: -1})
	compared := 0
	for _, tc := range []struct {
		ep                   upstream.Endpoint
		path, time, key, sel string
		filter               string
	}{
		{upstream.AllBacklinks, blPath, "first_seen_link", "url_from", "first_seen_link,url_from,url_to", `{"field":"is_dofollow","is":["eq",true]}`},
		{upstream.RefDomains, upstream.RefDomains.Path(), "first_seen", "domain", "first_seen,domain", `{"field":"dofollow_links","is":["gt",0]}`},
	} {
		for _, dir := range []string{"", ":desc"} {
			order := tc.time + dir + "," + strings.TrimPrefix(tc.sel, tc.time+",")
			op, strict := "gte", "gt"
			if dir != "" {
				op, strict = "lte", "lt"
			}
			base := vals("target", "sized-3000.example", "select", tc.sel, "order_by", order)
			full := all(t, s, tc.ep, base)
			if len(full) < 100 {
				t.Fatalf("%s: only %d rows", tc.ep, len(full))
			}
			for _, at := range []int{0, 1, len(full) / 3, len(full) - 2, len(full) - 1} {
				when, _ := json.Marshal(full[at][tc.time])
				key, _ := json.Marshal(full[at][tc.key])
				for _, where := range []string{
					`{"and":[{"field":"` + tc.time + `","is":["` + op + `",` + string(when) + `]},` + tc.filter + `]}`,
					`{"or":[{"field":"` + tc.time + `","is":["` + strict + `",` + string(when) + `]},{"and":[{"field":"` + tc.time + `","is":["eq",` + string(when) + `]},{"field":"` + tc.key + `","is":["gte",` + string(key) + `]}]}]}`,
				} {
					v := vals("target", "sized-3000.example", "select", tc.sel, "order_by", order, "where", where, "limit", "9")
					g, wj, n := servedAndSorted(t, s, tc.ep, tc.path, v, 9)
					if g != wj {
						t.Fatalf("%s from row %d, where %s:\n%s\nwant\n%s", order, at, where, g, wj)
					}
					if n > 0 {
						compared++
					}
				}
			}
		}
	}
	if compared < 30 {
		t.Fatalf("only %d of 40 pages had rows: the test compares too little", compared)
	}
}
