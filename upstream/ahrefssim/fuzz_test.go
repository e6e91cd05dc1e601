package ahrefssim

import (
	"testing"
)

// FuzzWhere sends arbitrary where JSON through the HTTP handler: the
// simulator must never panic and must answer 200 or 400.
func FuzzWhere(f *testing.F) {
	for _, seed := range []string{
		`{"field":"anchor","is":["eq","x"]}`,
		`{"and":[{"field":"domain_rating_source","is":["gte",10]},{"not":{"field":"last_seen","is":"is_null"}}]}`,
		`{"or":[{"field":"url_from","is":["gt","https://m"]},{"field":"url_to","is":["regex","a+"]}]}`,
		`{"field":"languages","list_is":{"all":{"or":[["eq","en"],["prefix","d"]]}}}`,
		`{"field":"redirect_kind","list_is":{"any":["gte",301]}}`,
		`{"field":"first_seen_link","is":["lt","2024-01-01T00:00:00Z"]}`,
		`{"field":"alt","is":"empty"}`, `[]`, `{}`, `null`, `{"not":{}}`,
	} {
		f.Add(seed, "all-backlinks")
		f.Add(seed, "refdomains")
	}
	s := New(Config{CacheTTL: -1})
	f.Fuzz(func(t *testing.T, where, ep string) {
		path := "/v3/site-explorer/all-backlinks"
		sel := "url_from,anchor"
		if ep == "refdomains" {
			path, sel = "/v3/site-explorer/refdomains", "domain,links_to_target"
		}
		w := do(t, s, path, vals("target", "sized-300.example", "select", sel, "where", where, "limit", "20"), DefaultKey)
		if w.Code != 200 && w.Code != 400 {
			t.Fatalf("where %q: code %d %s", where, w.Code, w.Body)
		}
	})
}
