package ahrefssim

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/clock"
	"github.com/linkgate/linkgate/upstream"
)

func do(t testing.TB, s http.Handler, path string, params url.Values, key string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest("GET", path+"?"+params.Encode(), nil)
	if key != "" {
		r.Header.Set("Authorization", "Bearer "+key)
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	return w
}

func vals(kv ...string) url.Values {
	v := url.Values{}
	for k := 0; k+1 < len(kv); k += 2 {
		v.Set(kv[k], kv[k+1])
	}
	return v
}

var blPath = upstream.AllBacklinks.Path()

func all(t testing.TB, s *Server, ep upstream.Endpoint, v url.Values) []map[string]any {
	t.Helper()
	q, err := upstream.ParseQuery(ep, v)
	if err != nil {
		t.Fatalf("ParseQuery(%v): %v", v, err)
	}
	rows, err := s.All(q)
	if err != nil {
		t.Fatalf("All(%v): %v", v, err)
	}
	return rows
}

func TestErrors(t *testing.T) {
	s := New(Config{Keys: []string{"k1", "k2"}})
	ok := vals("target", "example.com", "select", "url_from")
	tests := []struct {
		name   string
		path   string
		params url.Values
		key    string
		code   int
		want   string // in the error text
	}{
		{"no key", blPath, ok, "", 401, "Unauthorized"},
		{"wrong key", blPath, ok, "nope", 401, "Unauthorized"},
		{"second key", blPath, ok, "k2", 200, ""},
		{"missing select", blPath, vals("target", "example.com"), "k1", 400, "select"},
		{"unknown select field", blPath, vals("target", "x.com", "select", "bogus"), "k1", 400, `"bogus"`},
		{"where unknown field", blPath, vals("target", "x.com", "select", "url_from", "where", `{"field":"nope","is":["eq",1]}`), "k1", 400, `"nope"`},
		{"where wrong type", blPath, vals("target", "x.com", "select", "url_from", "where", `{"field":"domain_rating_source","is":["eq","high"]}`), "k1", 400, `"domain_rating_source"`},
		{"where bad regex", blPath, vals("target", "x.com", "select", "url_from", "where", `{"field":"anchor","is":["regex","("]}`), "k1", 400, `"anchor"`},
		{"where bad json", blPath, vals("target", "x.com", "select", "url_from", "where", `{`), "k1", 400, "where"},
		{"order_by not orderable", blPath, vals("target", "x.com", "select", "url_from", "order_by", "languages"), "k1", 400, `"languages"`},
		{"bad mode", blPath, vals("target", "x.com", "select", "url_from", "mode", "nope"), "k1", 400, "mode"},
		{"history on broken", upstream.BrokenBacklinks.Path(), vals("target", "x.com", "select", "url_from", "history", "live"), "k1", 400, "history"},
		{"unknown target", blPath, vals("target", "gone.invalid", "select", "url_from"), "k1", 404, "not found"},
		{"unknown path", "/v3/site-explorer/nope", ok, "k1", 404, "not found"},
		{"stats without date", upstream.BacklinksStatsPath, vals("target", "x.com"), "k1", 400, "date"},
		{"stats bad date", upstream.BacklinksStatsPath, vals("target", "x.com", "date", "2025-13-01"), "k1", 400, "date"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := do(t, s, tt.path, tt.params, tt.key)
			if w.Code != tt.code {
				t.Fatalf("code %d, want %d: %s", w.Code, tt.code, w.Body)
			}
			if tt.code == 200 {
				return
			}
			var e struct{ Error string }
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || !strings.Contains(e.Error, tt.want) {
				t.Fatalf("body %s (err %v), want an error containing %q", w.Body, err, tt.want)
			}
		})
	}
}

func TestCostHeadersAndCache(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC))
	s := New(Config{Clock: clk, CacheTTL: time.Minute})
	tests := []struct {
		name                string
		params              url.Values
		rows, perRow, units int
	}{
		{"floor", vals("target", "sized-3.example", "select", "url_from,url_to"), 3, 2, 50},
		{"rows times cost", vals("target", "sized-500.example", "select", "url_from,url_to,traffic", "limit", "100"), 100, 12, 1200},
		{"where and order_by counted once", vals("target", "sized-500.example", "select", "url_from", "limit", "30",
			"where", `{"field":"domain_rating_source","is":["gte",0]}`, "order_by", "domain_rating_source:desc,url_from"), 30, 2, 60},
		{"zero rows cost 50", vals("target", "sized-500.example", "select", "url_from", "where", `{"field":"anchor","is":["eq","no such anchor"]}`), 0, 2, 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := s.Usage()
			w := do(t, s, blPath, tt.params, DefaultKey)
			h := w.Header()
			want := map[string]string{"x-api-rows": itoa(tt.rows), "x-api-units-cost-row": itoa(tt.perRow),
				"x-api-units-cost-total": itoa(tt.units), "x-api-units-cost-total-actual": itoa(tt.units), "x-api-cache": "miss"}
			for k, v := range want {
				if h.Get(k) != v {
					t.Errorf("%s = %q, want %q", k, h.Get(k), v)
				}
			}
			if got := s.Usage() - before; got != int64(tt.units) {
				t.Errorf("usage grew by %d, want %d", got, tt.units)
			}
			// The same request again is a cache hit that costs nothing.
			w2 := do(t, s, blPath, tt.params, DefaultKey)
			if w2.Header().Get("x-api-cache") != "hit" || w2.Header().Get("x-api-units-cost-total-actual") != "0" || w2.Body.String() != w.Body.String() {
				t.Errorf("second request: cache %q actual %q", w2.Header().Get("x-api-cache"), w2.Header().Get("x-api-units-cost-total-actual"))
			}
			if got := s.Usage() - before; got != int64(tt.units) {
				t.Errorf("a cache hit was charged: usage grew by %d", got)
			}
		})
	}
	p := tests[0].params
	clk.Advance(2 * time.Minute)
	if c := do(t, s, blPath, p, DefaultKey).Header().Get("x-api-cache"); c != "miss" {
		t.Errorf("after the TTL: cache %q, want miss", c)
	}
	s.SetCacheTTL(-1)
	if c := do(t, s, blPath, p, DefaultKey).Header().Get("x-api-cache"); c != "no_cache" {
		t.Errorf("cache off: %q, want no_cache", c)
	}
	w := do(t, s, upstream.BacklinksStatsPath, vals("target", "sized-7.example", "date", "2026-01-01"), DefaultKey)
	if w.Header().Get("x-api-units-cost-row") != "12" || w.Header().Get("x-api-units-cost-total") != "50" || w.Header().Get("x-api-rows") != "1" {
		t.Errorf("stats headers %v", w.Header())
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestLimitsAndUsage(t *testing.T) {
	limit := int64(100)
	s := New(Config{Keys: []string{"a", "b"}, UnitsLimitAPIKey: &limit, CacheTTL: -1})
	p := vals("target", "sized-10.example", "select", "url_from")
	for _, want := range []int{200, 200, 403} { // 50 + 50 reaches the limit
		if w := do(t, s, blPath, p, "a"); w.Code != want {
			t.Fatalf("code %d, want %d: %s", w.Code, want, w.Body)
		}
	}
	if w := do(t, s, blPath, p, "b"); w.Code != 200 {
		t.Fatalf("the other key: %d", w.Code)
	}
	w := do(t, s, upstream.LimitsAndUsagePath, nil, "a")
	var lu struct {
		L struct {
			Subscription string `json:"subscription"`
			Reset        string `json:"usage_reset_date"`
			KeyUsage     int64  `json:"units_usage_api_key"`
			WorkUsage    int64  `json:"units_usage_workspace"`
			KeyLimit     *int64 `json:"units_limit_api_key"`
			WorkLimit    *int64 `json:"units_limit_workspace"`
			Expiration   string `json:"api_key_expiration_date"`
		} `json:"limits_and_usage"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &lu); err != nil {
		t.Fatal(err)
	}
	if lu.L.KeyUsage != 100 || lu.L.WorkUsage != 150 || lu.L.KeyLimit == nil || *lu.L.KeyLimit != 100 || lu.L.WorkLimit != nil || lu.L.Reset == "" || lu.L.Expiration == "" {
		t.Errorf("limits-and-usage %s", w.Body)
	}
	if s.Usage() != 150 || s.KeyUsage("a") != 100 {
		t.Errorf("Usage %d KeyUsage %d", s.Usage(), s.KeyUsage("a"))
	}
}

func TestRateLimit(t *testing.T) {
	for _, tt := range []struct {
		name       string
		style      RateLimitStyle
		retryAfter bool
		html       []bool // per rejected request
	}{
		{"json", RateLimitJSON, true, []bool{false, false}},
		{"html", RateLimitHTML, true, []bool{true, true}},
		{"alternate", RateLimitAlternate, true, []bool{false, true}},
		{"json without Retry-After", RateLimitJSON, false, []bool{false, false}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
			s := New(Config{Clock: clk, RequestsPerMinute: 2, RateLimitStyle: tt.style, RetryAfter: tt.retryAfter})
			p := vals("target", "x.com", "select", "url_from")
			for range 2 {
				if w := do(t, s, blPath, p, DefaultKey); w.Code != 200 {
					t.Fatalf("code %d", w.Code)
				}
			}
			for _, html := range tt.html {
				w := do(t, s, blPath, p, DefaultKey)
				if w.Code != 429 {
					t.Fatalf("code %d, want 429", w.Code)
				}
				isHTML := strings.HasPrefix(w.Header().Get("Content-Type"), "text/html")
				wantRetryAfter := tt.retryAfter && !html
				if isHTML != html || (w.Header().Get("Retry-After") != "") != wantRetryAfter {
					t.Errorf("html %v Retry-After %q, want html %v and Retry-After %v", isHTML, w.Header().Get("Retry-After"), html, wantRetryAfter)
				}
			}
			clk.Advance(61 * time.Second)
			if w := do(t, s, blPath, p, DefaultKey); w.Code != 200 {
				t.Fatalf("after a minute: code %d", w.Code)
			}
		})
	}
}

func TestFaults(t *testing.T) {
	s := New(Config{CacheTTL: -1})
	p := vals("target", "sized-300.example", "select", "url_from,url_to,anchor")
	s.FailNext(1)
	if w := do(t, s, blPath, p, DefaultKey); w.Code != 500 || !strings.Contains(w.Body.String(), `"error"`) {
		t.Fatalf("FailNext: %d %s", w.Code, w.Body)
	}
	if w := do(t, s, blPath, p, DefaultKey); w.Code != 200 {
		t.Fatalf("after FailNext: %d", w.Code)
	}
	// ErrorRate is deterministic for a seed: the same requests fail.
	failures := func() []int {
		s := New(Config{CacheTTL: -1, ErrorRate: 0.3, Seed: 42})
		var f []int
		for k := range 40 {
			if do(t, s, blPath, p, DefaultKey).Code == 500 {
				f = append(f, k)
			}
		}
		return f
	}
	f1, f2 := failures(), failures()
	if len(f1) == 0 || len(f1) == 40 || !slices.Equal(f1, f2) {
		t.Errorf("error rate: failures %v then %v", f1, f2)
	}

	// A truncated body: the headers say 200 and the full length, the JSON
	// stops inside a row, and a real client sees an unexpected EOF.
	s.TruncateNext(1)
	w := do(t, s, blPath, p, DefaultKey)
	if w.Code != 200 || json.Valid(w.Body.Bytes()) || w.Header().Get("Content-Length") == itoa(w.Body.Len()) {
		t.Fatalf("truncated: code %d valid %v len %s/%d", w.Code, json.Valid(w.Body.Bytes()), w.Header().Get("Content-Length"), w.Body.Len())
	}
	srv := httptest.NewServer(s)
	defer srv.Close()
	s.TruncateNext(1)
	req, _ := http.NewRequest("GET", srv.URL+blPath+"?"+p.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+DefaultKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Errorf("reading a truncated body over HTTP: no error")
	}
}

func TestSizedTargets(t *testing.T) {
	s := New(Config{})
	for _, n := range []int{0, 1, 7, 1234, 20000} {
		target := "sized-" + itoa(n) + ".example"
		rows := all(t, s, upstream.AllBacklinks, vals("target", target, "select", "url_from,url_to"))
		if len(rows) != n || s.Size(target) != n {
			t.Errorf("%s: %d rows, Size %d", target, len(rows), s.Size(target))
		}
		w := do(t, s, upstream.BacklinksStatsPath, vals("target", target, "date", "2026-01-01"), DefaultKey)
		var st struct{ Metrics map[string]int }
		json.Unmarshal(w.Body.Bytes(), &st)
		live := all(t, s, upstream.AllBacklinks, vals("target", target, "select", "url_from", "history", "live"))
		rd := all(t, s, upstream.RefDomains, vals("target", target, "select", "domain"))
		liveRD := all(t, s, upstream.RefDomains, vals("target", target, "select", "domain", "history", "live"))
		if st.Metrics["all_time"] != n || st.Metrics["live"] != len(live) || st.Metrics["all_time_refdomains"] != len(rd) || st.Metrics["live_refdomains"] != len(liveRD) {
			t.Errorf("%s: stats %v, want all_time %d live %d refdomains %d/%d", target, st.Metrics, n, len(live), len(rd), len(liveRD))
		}
	}
	if n := s.Size("example.com"); n < 300 || n > 30000 {
		t.Errorf("example.com has %d backlinks", n)
	}
}

// TestConsistency checks that the datasets of one target agree: refdomains
// with backlinks, broken backlinks with backlinks, lost links with their
// fields, and that keys are unique and generation order is the key order.
func TestConsistency(t *testing.T) {
	s := New(Config{})
	for _, hist := range []string{"all_time", "live", "since:2024-01-01"} {
		t.Run(hist, func(t *testing.T) {
			const target = "consistency-test.com"
			bl := all(t, s, upstream.AllBacklinks, vals("target", target, "history", hist,
				"select", "url_from,url_to,name_source,is_lost,last_seen,lost_reason,is_dofollow"))
			perDomain := map[string]int{}
			dofollow := map[string]int{}
			seen := map[string]bool{}
			for k, r := range bl {
				key := r["url_from"].(string) + " " + r["url_to"].(string)
				if seen[key] {
					t.Fatalf("duplicate (url_from, url_to) %s", key)
				}
				seen[key] = true
				if k > 0 {
					p := bl[k-1]
					if r["url_from"].(string) < p["url_from"].(string) || r["url_from"] == p["url_from"] && r["url_to"].(string) <= p["url_to"].(string) {
						t.Fatalf("row %d out of (url_from, url_to) order", k)
					}
				}
				perDomain[r["name_source"].(string)]++
				if r["is_dofollow"].(bool) {
					dofollow[r["name_source"].(string)]++
				}
				lost := r["is_lost"].(bool)
				if lost != (r["last_seen"] != nil) || lost != (r["lost_reason"] != nil) {
					t.Fatalf("row %v: is_lost, last_seen and lost_reason disagree", r)
				}
				if hist == "live" && lost || strings.HasPrefix(hist, "since:") && lost && r["last_seen"].(string) < "2024-01-01" {
					t.Fatalf("history %s returned %v", hist, r)
				}
			}
			rd := all(t, s, upstream.RefDomains, vals("target", target, "history", hist, "select", "domain,links_to_target,dofollow_links"))
			if len(rd) != len(perDomain) {
				t.Fatalf("%d refdomains, backlinks come from %d domains", len(rd), len(perDomain))
			}
			for k, r := range rd {
				d := r["domain"].(string)
				if r["links_to_target"].(int64) != int64(perDomain[d]) || r["dofollow_links"].(int64) != int64(dofollow[d]) {
					t.Fatalf("refdomain %v: backlinks say %d links, %d dofollow", r, perDomain[d], dofollow[d])
				}
				if k > 0 && d <= rd[k-1]["domain"].(string) {
					t.Fatalf("refdomains out of domain order at %d", k)
				}
			}
		})
	}
	// Broken backlinks are the backlinks whose url_to is broken.
	const target = "sized-5000.example"
	broken := all(t, s, upstream.BrokenBacklinks, vals("target", target, "select", "url_from,url_to,http_code_target"))
	bl := all(t, s, upstream.AllBacklinks, vals("target", target, "select", "url_from,url_to"))
	brokenURL := map[string]bool{}
	for _, r := range broken {
		c := r["http_code_target"].(int64)
		if c != 404 && c != 410 && c < 500 {
			t.Fatalf("broken backlink with http_code_target %d", c)
		}
		brokenURL[r["url_to"].(string)] = true
	}
	want := 0
	for _, r := range bl {
		if brokenURL[r["url_to"].(string)] {
			want++
		}
	}
	if len(broken) == 0 || len(broken) != want {
		t.Fatalf("%d broken backlinks, %d backlinks point to broken pages", len(broken), want)
	}
}

func TestModesAndProtocols(t *testing.T) {
	s := New(Config{})
	count := func(target, mode, protocol string) []map[string]any {
		return all(t, s, upstream.AllBacklinks, vals("target", target, "mode", mode, "protocol", protocol, "select", "url_to"))
	}
	const root = "sized-3000.example"
	sub := count(root, "subdomains", "both")
	dom := count(root, "domain", "both")
	www := count("www."+root, "subdomains", "both")
	exact := count(root, "exact", "both")
	prefix := count(root+"/blog", "prefix", "both")
	httpOnly := count(root, "", "http")
	httpsOnly := count(root, "", "https")
	if len(sub) != 3000 || len(dom) == 0 || len(dom) >= len(sub) || len(www) == 0 || len(exact) == 0 || len(prefix) == 0 {
		t.Fatalf("sizes: subdomains %d domain %d www %d exact %d prefix %d", len(sub), len(dom), len(www), len(exact), len(prefix))
	}
	if len(httpOnly)+len(httpsOnly) != len(sub) || len(httpOnly) == 0 {
		t.Fatalf("protocols: http %d + https %d != %d", len(httpOnly), len(httpsOnly), len(sub))
	}
	check := func(name string, rows []map[string]any, ok func(u string) bool) {
		for _, r := range rows {
			if u := r["url_to"].(string); !ok(u) {
				t.Errorf("%s: url_to %s", name, u)
				return
			}
		}
	}
	check("domain", dom, func(u string) bool { return regexp.MustCompile(`^https?://sized-3000\.example/`).MatchString(u) })
	check("www", www, func(u string) bool { return strings.Contains(u, "://www."+root+"/") })
	check("exact", exact, func(u string) bool { return u == "http://"+root+"/" || u == "https://"+root+"/" })
	check("prefix", prefix, func(u string) bool { return strings.Contains(u, "://"+root+"/blog") })
	check("http", httpOnly, func(u string) bool { return strings.HasPrefix(u, "http://") })
	check("https", httpsOnly, func(u string) bool { return strings.HasPrefix(u, "https://") })
}

func TestAggregation(t *testing.T) {
	s := New(Config{})
	const target = "sized-4000.example"
	for _, order := range []string{"", "domain_rating_source:desc", "first_seen_link:asc"} {
		one := all(t, s, upstream.AllBacklinks, vals("target", target, "aggregation", "1_per_domain", "order_by", order, "select", "name_source,link_group_count"))
		every := all(t, s, upstream.AllBacklinks, vals("target", target, "order_by", order, "select", "name_source,url_from,url_to"))
		rd := all(t, s, upstream.RefDomains, vals("target", target, "select", "domain,links_to_target"))
		links := map[string]int64{}
		for _, r := range rd {
			links[r["domain"].(string)] = r["links_to_target"].(int64)
		}
		var firsts []string
		seen := map[string]bool{}
		for _, r := range every {
			if d := r["name_source"].(string); !seen[d] {
				seen[d] = true
				firsts = append(firsts, d)
			}
		}
		if len(one) != len(rd) || len(one) != len(firsts) {
			t.Fatalf("order %q: 1_per_domain %d rows, %d refdomains", order, len(one), len(rd))
		}
		for k, r := range one {
			if r["name_source"] != firsts[k] || r["link_group_count"].(int64) != links[firsts[k]] {
				t.Fatalf("order %q row %d: %v, want domain %s with %d links", order, k, r, firsts[k], links[firsts[k]])
			}
		}
	}
	if n := len(all(t, s, upstream.AllBacklinks, vals("target", target, "aggregation", "all", "select", "url_from"))); n != 4000 {
		t.Errorf("aggregation all: %d rows", n)
	}
}

// TestWhereOperators checks every operator against a reference predicate
// evaluated in Go over the unfiltered rows.
func TestWhereOperators(t *testing.T) {
	s := New(Config{})
	const target = "sized-3000.example"
	sel := "url_from,url_to,anchor,domain_rating_source,traffic,is_dofollow,first_seen_link,last_seen,languages,redirect_kind,alt,title"
	base := all(t, s, upstream.AllBacklinks, vals("target", target, "select", sel))
	str := func(r map[string]any, f string) string { s, _ := r[f].(string); return s }
	tests := []struct {
		where string
		ref   func(r map[string]any) bool
	}{
		{`{"field":"anchor","is":["eq","click here"]}`, func(r map[string]any) bool { return str(r, "anchor") == "click here" }},
		{`{"field":"anchor","is":["neq","click here"]}`, func(r map[string]any) bool { return str(r, "anchor") != "click here" }},
		{`{"field":"domain_rating_source","is":["gt",50]}`, func(r map[string]any) bool { return r["domain_rating_source"].(float64) > 50 }},
		{`{"field":"domain_rating_source","is":["gte",50.5]}`, func(r map[string]any) bool { return r["domain_rating_source"].(float64) >= 50.5 }},
		{`{"field":"traffic","is":["lt",10]}`, func(r map[string]any) bool { return r["traffic"].(int64) < 10 }},
		{`{"field":"traffic","is":["lte",0]}`, func(r map[string]any) bool { return r["traffic"].(int64) <= 0 }},
		{`{"field":"is_dofollow","is":["eq",false]}`, func(r map[string]any) bool { return !r["is_dofollow"].(bool) }},
		{`{"field":"first_seen_link","is":["gte","2024-06-01"]}`, func(r map[string]any) bool { return str(r, "first_seen_link") >= "2024-06-01" }},
		{`{"field":"last_seen","is":["lt","2030-01-01T00:00:00Z"]}`, func(r map[string]any) bool { return r["last_seen"] != nil }},
		{`{"field":"last_seen","is":"is_null"}`, func(r map[string]any) bool { return r["last_seen"] == nil }},
		{`{"not":{"field":"last_seen","is":["neq","2000-01-01"]}}`, func(r map[string]any) bool { return r["last_seen"] == nil }},
		{`{"field":"alt","is":"empty"}`, func(r map[string]any) bool { return r["alt"] != nil && str(r, "alt") == "" }},
		{`{"field":"languages","is":"empty"}`, func(r map[string]any) bool { return len(r["languages"].([]string)) == 0 }},
		{`{"field":"url_from","is":["substring","/0000"]}`, func(r map[string]any) bool { return strings.Contains(str(r, "url_from"), "/0000") }},
		{`{"field":"title","is":["isubstring","SEO"]}`, func(r map[string]any) bool { return strings.Contains(strings.ToLower(str(r, "title")), "seo") }},
		{`{"field":"anchor","is":["phrase_match","read more"]}`, func(r map[string]any) bool { return str(r, "anchor") == "read more" }},
		{`{"field":"anchor","is":["iphrase_match","The Best"]}`, func(r map[string]any) bool { return str(r, "anchor") == "the best tools" }},
		{`{"field":"url_to","is":["prefix","https://blog."]}`, func(r map[string]any) bool { return strings.HasPrefix(str(r, "url_to"), "https://blog.") }},
		{`{"field":"url_to","is":["suffix",".pdf"]}`, func(r map[string]any) bool { return strings.HasSuffix(str(r, "url_to"), ".pdf") }},
		{`{"field":"url_to","is":["regex","^https://(www|shop)\\."]}`, func(r map[string]any) bool {
			return regexp.MustCompile(`^https://(www|shop)\.`).MatchString(str(r, "url_to"))
		}},
		{`{"field":"languages","list_is":{"any":["eq","de"]}}`, func(r map[string]any) bool { return slices.Contains(r["languages"].([]string), "de") }},
		{`{"field":"languages","list_is":{"all":{"or":[["eq","en"],["eq","de"]]}}}`, func(r map[string]any) bool {
			for _, l := range r["languages"].([]string) {
				if l != "en" && l != "de" {
					return false
				}
			}
			return true
		}},
		{`{"field":"redirect_kind","list_is":{"any":{"not":["neq",302]}}}`, func(r map[string]any) bool { return slices.Contains(r["redirect_kind"].([]int64), 302) }},
		{`{"and":[{"field":"is_dofollow","is":["eq",true]},{"or":[{"field":"traffic","is":["gt",100]},{"field":"anchor","is":["prefix","read"]}]}]}`, func(r map[string]any) bool {
			return r["is_dofollow"].(bool) && (r["traffic"].(int64) > 100 || strings.HasPrefix(str(r, "anchor"), "read"))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.where, func(t *testing.T) {
			got := all(t, s, upstream.AllBacklinks, vals("target", target, "select", sel, "where", tt.where))
			var want []map[string]any
			for _, r := range base {
				if tt.ref(r) {
					want = append(want, r)
				}
			}
			if len(got) != len(want) {
				t.Fatalf("%d rows, want %d", len(got), len(want))
			}
			for k := range got {
				if got[k]["url_from"] != want[k]["url_from"] || got[k]["url_to"] != want[k]["url_to"] {
					t.Fatalf("row %d differs", k)
				}
			}
		})
	}
	// Refdomains: a where on link columns keeps a domain when any one of its
	// links matches.
	rd := all(t, s, upstream.RefDomains, vals("target", target, "select", "domain", "where", `{"field":"anchor","is":["eq","click here"]}`))
	want := map[string]bool{}
	for _, r := range all(t, s, upstream.AllBacklinks, vals("target", target, "select", "name_source", "where", `{"field":"anchor","is":["eq","click here"]}`)) {
		want[r["name_source"].(string)] = true
	}
	if len(rd) != len(want) || len(rd) == 0 {
		t.Errorf("refdomains by anchor: %d, want %d", len(rd), len(want))
	}
}

func TestOrderByTies(t *testing.T) {
	s := New(Config{})
	const target = "sized-5000.example"
	gen := all(t, s, upstream.AllBacklinks, vals("target", target, "select", "url_from,url_to"))
	pos := map[string]int{}
	for k, r := range gen {
		pos[r["url_from"].(string)+" "+r["url_to"].(string)] = k
	}
	for _, order := range []string{"domain_rating_source:desc", "is_dofollow", "last_seen:desc", "last_seen:asc", "anchor:asc,traffic:desc"} {
		t.Run(order, func(t *testing.T) {
			keys := strings.Split(order, ",")
			var fields []string
			for _, k := range keys {
				f, _, _ := strings.Cut(k, ":")
				fields = append(fields, f)
			}
			rows := all(t, s, upstream.AllBacklinks, vals("target", target, "order_by", order, "select", "url_from,url_to,"+strings.Join(fields, ",")))
			if len(rows) != len(gen) {
				t.Fatalf("%d rows", len(rows))
			}
			for k := 1; k < len(rows); k++ {
				c := 0
				for o, key := range keys {
					c = compareAny(rows[k-1][fields[o]], rows[k][fields[o]])
					if strings.HasSuffix(key, ":desc") {
						c = -c
					}
					if c != 0 {
						break
					}
				}
				a := pos[rows[k-1]["url_from"].(string)+" "+rows[k-1]["url_to"].(string)]
				b := pos[rows[k]["url_from"].(string)+" "+rows[k]["url_to"].(string)]
				if c > 0 || c == 0 && a > b {
					t.Fatalf("rows %d and %d out of order (%v, %v)", k-1, k, rows[k-1], rows[k])
				}
			}
		})
	}
}

// compareAny orders values as the simulator documents: null first.
func compareAny(a, b any) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return -1
	case b == nil:
		return 1
	}
	switch a := a.(type) {
	case string:
		return strings.Compare(a, b.(string))
	case int64:
		return cmpOrd(a, b.(int64))
	case float64:
		return cmpOrd(a, b.(float64))
	case bool:
		return cmpOrd(b2i(a), b2i(b.(bool)))
	}
	panic("unorderable")
}

func cmpOrd[T int64 | float64](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TestEveryField selects every selectable field of every endpoint and checks
// each value has its catalog kind, nulls only where the catalog allows them,
// and that nullable fields are sometimes null.
func TestEveryField(t *testing.T) {
	s := New(Config{})
	for _, ep := range upstream.Endpoints() {
		t.Run(string(ep), func(t *testing.T) {
			schema := upstream.MustSchema(ep)
			sel := schema.Selectable()
			w := do(t, s, ep.Path(), vals("target", "sized-20000.example", "select", strings.Join(sel, ","), "limit", "3000"), DefaultKey)
			if w.Code != 200 {
				t.Fatalf("%d %s", w.Code, w.Body)
			}
			var body map[string][]map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatal(err)
			}
			rows := body[schema.ResponseKey]
			if len(rows) == 0 {
				t.Fatal("no rows")
			}
			for _, name := range sel {
				f, _ := schema.Field(name)
				nulls := 0
				for _, r := range rows {
					v, ok := r[name]
					if !ok {
						t.Fatalf("%s missing", name)
					}
					if v == nil {
						nulls++
						continue
					}
					if !jsonKind(f.Kind, v) {
						t.Fatalf("%s = %#v is not a %s", name, v, f.Kind)
					}
				}
				if nulls > 0 && !f.Nullable {
					t.Errorf("%s is not nullable but %d rows are null", name, nulls)
				}
				if f.Nullable && nulls == 0 && !alwaysSet[string(ep)+"."+name] {
					t.Errorf("nullable %s is never null", name)
				}
				if len(r0(rows)) != len(sel) {
					t.Fatalf("rows have %d fields, %d selected", len(r0(rows)), len(sel))
				}
			}
		})
	}
}

// alwaysSet are nullable fields that are set in every row of the endpoint
// by construction.
var alwaysSet = map[string]bool{
	"broken-backlinks.http_code_target": true, // a broken backlink's target always answered
}

func r0(rows []map[string]any) map[string]any { return rows[0] }

func jsonKind(k upstream.Kind, v any) bool {
	switch k {
	case upstream.KindString:
		_, ok := v.(string)
		return ok
	case upstream.KindInt:
		f, ok := v.(float64)
		return ok && f == float64(int64(f))
	case upstream.KindFloat:
		_, ok := v.(float64)
		return ok
	case upstream.KindBool:
		_, ok := v.(bool)
		return ok
	case upstream.KindTime:
		s, ok := v.(string)
		_, err := time.Parse(time.RFC3339, s)
		return ok && err == nil
	case upstream.KindDate:
		s, ok := v.(string)
		_, err := time.Parse(time.DateOnly, s)
		return ok && err == nil
	case upstream.KindStringList, upstream.KindIntList:
		l, ok := v.([]any)
		for _, e := range l {
			ok = ok && jsonKind(k.Elem(), e)
		}
		return ok
	}
	return false
}
