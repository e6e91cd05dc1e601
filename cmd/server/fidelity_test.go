package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// TestDatasetsAsUsersKnowThemOverREST replays the findings about the
// datasets over REST, on the real server: new/lost events with a window
// and change_time order, exact aggregation or a clear refusal, one meaning
// per filter form, dates as days, AIP-132 order_by, v2 names answered with
// v3 ones, the stats block and its estimate.
func TestDatasetsAsUsersKnowThemOverREST(t *testing.T) {
	s, _ := startServer(t, nil)
	base := "http://" + s.httpAddr
	type row = map[string]any
	get := func(path string, q url.Values, out any) int {
		t.Helper()
		return getJSON(t, base+path+"?"+q.Encode(), out).StatusCode
	}

	t.Run("new and lost are events", func(t *testing.T) {
		count := func(changes string) int {
			var page struct {
				Rows []row `json:"new_lost_backlinks"`
			}
			q := url.Values{"target": {"sized-2500.example"}, "since": {"2025-06-01"}, "page_size": {"1000"}, "changes": {changes}}
			if code := get("/v1/new-lost-backlinks", q, &page); code != 200 {
				t.Fatalf("changes=%s: %d", changes, code)
			}
			return len(page.Rows)
		}
		n, l, both := count("CHANGE_FILTER_NEW"), count("CHANGE_FILTER_LOST"), count("CHANGE_FILTER_BOTH")
		if n == 0 || l == 0 || both != n+l {
			t.Fatalf("new %d + lost %d != both %d", n, l, both)
		}
		var page struct {
			Rows  []row  `json:"new_lost_backlinks"`
			Token string `json:"next_page_token"`
		}
		q := url.Values{"target": {"sized-2500.example"}, "since": {"2025-06-01"}, "until": {"2025-07-01"},
			"order_by": {"change_time desc"}, "page_size": {"1000"}}
		if code := get("/v1/new-lost-backlinks", q, &page); code != 200 || len(page.Rows) == 0 || page.Token != "" {
			t.Fatalf("June, newest first: %d, %d rows, token %q", code, len(page.Rows), page.Token)
		}
		var times []string
		for _, r := range page.Rows {
			at, _ := r["change_time"].(string)
			if at < "2025-06-01" || at >= "2025-07-01" {
				t.Fatalf("change_time %q outside June", at)
			}
			times = append(times, at)
		}
		if !sort.IsSorted(sort.Reverse(sort.StringSlice(times))) {
			t.Errorf("change_time desc is not newest first: %v", times[:min(5, len(times))])
		}
		q.Set("filter", `change = "lost" AND change_time >= 2025-06-15`)
		var lost struct {
			Rows []row `json:"new_lost_backlinks"`
		}
		if code := get("/v1/new-lost-backlinks", q, &lost); code != 200 || len(lost.Rows) == 0 || len(lost.Rows) >= len(page.Rows) {
			t.Fatalf("filter on change and change_time: %d, %d rows of %d", code, len(lost.Rows), len(page.Rows))
		}
		for _, r := range lost.Rows {
			if r["change"] != "CHANGE_LOST" {
				t.Fatalf("row %v is not a lost link", r)
			}
		}
	})

	t.Run("one per domain: exact or refused", func(t *testing.T) {
		var e struct{ Message string }
		q := url.Values{"target": {"sized-20000.example"}, "aggregation": {"AGGREGATION_ONE_PER_DOMAIN"}, "order_by": {"first_seen_link:asc"}}
		if code := get("/v1/backlinks", q, &e); code != 400 || !strings.Contains(e.Message, "name_source") {
			t.Fatalf("ONE_PER_DOMAIN by first_seen_link: %d %q", code, e.Message)
		}
		q.Set("order_by", "domain_rating_source desc")
		q.Set("page_size", "50")
		seen := map[string]bool{}
		for range 20 {
			var page struct {
				Rows  []row  `json:"backlinks"`
				Token string `json:"next_page_token"`
			}
			q.Set("select", "name_source")
			if code := get("/v1/backlinks", q, &page); code != 200 {
				t.Fatalf("%d", code)
			}
			for _, r := range page.Rows {
				d := r["name_source"].(string)
				if seen[d] {
					t.Fatalf("domain %s twice", d)
				}
				seen[d] = true
			}
			q.Set("page_token", page.Token)
		}
	})

	t.Run("filter forms agree", func(t *testing.T) {
		count := func(f string) int {
			var page struct {
				Rows []row `json:"backlinks"`
			}
			q := url.Values{"target": {"sized-800.example"}, "page_size": {"1000"}, "select": {"url_from", "first_seen_link"}, "filter": {f}}
			if code := get("/v1/backlinks", q, &page); code != 200 {
				t.Fatalf("%s: %d", f, code)
			}
			return len(page.Rows)
		}
		all := count("")
		for _, f := range []string{`alt != "zzz"`, `NOT alt = "zzz"`, `alt != "*zzz*"`} {
			if got := count(f); got != all {
				t.Errorf("%s: %d of %d", f, got, all)
			}
		}
		var page struct {
			Rows []row `json:"backlinks"`
		}
		get("/v1/backlinks", url.Values{"target": {"sized-800.example"}, "page_size": {"1"}, "select": {"first_seen_link"}}, &page)
		day := page.Rows[0]["first_seen_link"].(string)[:10]
		if n := count("first_seen_link = " + day); n == 0 {
			t.Errorf("first_seen_link = %s: no rows, although the first row was first seen that day", day)
		}
	})

	t.Run("v2 names and AIP-132", func(t *testing.T) {
		for _, tc := range []struct {
			q    url.Values
			want string
		}{
			{url.Values{"select": {"url_from,ahrefs_rank"}}, "url_rating_source"},
			{url.Values{"order_by": {"first_seen desc, text_pre"}}, "snippet_left"},
			{url.Values{"filter": {`link_type = "href"`}}, `text`},
		} {
			tc.q.Set("target", "sized-100.example")
			var e struct{ Message string }
			if code := get("/v1/backlinks", tc.q, &e); code != 400 || !strings.Contains(e.Message, tc.want) || !strings.Contains(e.Message, "v2") {
				t.Errorf("%v: %d %q, want 400 naming %s", tc.q, code, e.Message, tc.want)
			}
		}
		var page struct {
			Rows []row `json:"backlinks"`
		}
		if code := get("/v1/backlinks", url.Values{"target": {"sized-100.example"}, "order_by": {"domain_rating_source desc, url_from"}}, &page); code != 200 || len(page.Rows) == 0 {
			t.Errorf("AIP-132 order_by: %d", code)
		}
	})

	t.Run("List paging costs what EstimateCost says", func(t *testing.T) {
		resp, err := http.Post(base+"/v1/cost:estimate", "application/json",
			strings.NewReader(`{"backlinks":{"target":"sized-700.example","page_size":10,"order_by":"anchor"},"rows":30}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var est map[string]any
		decodeJSON(t, resp, &est)
		var charged int64
		q := url.Values{"target": {"sized-700.example"}, "page_size": {"10"}, "order_by": {"anchor"}}
		for range 3 {
			var page struct {
				Token string         `json:"next_page_token"`
				Cost  map[string]any `json:"cost"`
			}
			if code := get("/v1/backlinks", q, &page); code != 200 {
				t.Fatal(code)
			}
			n, _ := strconv.ParseInt(page.Cost["units_charged"].(string), 10, 64)
			charged += n
			q.Set("page_token", page.Token)
		}
		if est["list_units_for_rows"] != strconv.FormatInt(charged, 10) || est["list_pages"] != "3" {
			t.Errorf("estimated %v in %v calls, charged %d", est["list_units_for_rows"], est["list_pages"], charged)
		}
	})

	t.Run("stats block and its estimate", func(t *testing.T) {
		var stats map[string]any
		if code := get("/v1/backlinks-stats", url.Values{"target": {"sized-3000.example"}, "include_ips": {"true"}}, &stats); code != 200 ||
			stats["refips"] == nil || stats["refips_subnets"] == nil || stats["live_refdomains"] == nil {
			t.Fatalf("stats: %d %v", code, stats)
		}
		resp, err := http.Post(base+"/v1/cost:estimate", "application/json", strings.NewReader(`{"stats":{"target":"sized-3000.example","include_ips":true}}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var est map[string]any
		decodeJSON(t, resp, &est)
		cost := stats["cost"].(map[string]any)
		if est["first_page_units"] != "100" || cost["units_charged"] != "100" {
			t.Errorf("estimate %v, charged %v", est["first_page_units"], cost["units_charged"])
		}
	})
}

func decodeJSON(t *testing.T, resp *http.Response, out any) {
	t.Helper()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("%s: %v", resp.Request.URL, err)
	}
}
