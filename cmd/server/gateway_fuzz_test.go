package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzGatewayQuery drives the real REST handler (gateway, CORS, limits)
// of a real server with arbitrary query strings on /v1/backlinks: the
// answer is 2xx or 4xx, never 5xx, and nothing panics.
func FuzzGatewayQuery(f *testing.F) {
	for _, q := range []string{
		"target=example.com&page_size=3",
		"target=example.com&select=url_from,anchor&filter=domain_rating_source%3E50&order_by=url_from:desc",
		"target=example.com&mode=MODE_DOMAIN&protocol=PROTOCOL_HTTPS&aggregation=AGGREGATION_ALL",
		"target=&page_size=-1", "page_token=%00%ff", "target=example.com&filter=((((", "select=a&select=b&select=",
		"target=example.com&page_size=99999999999999999999", "mode=7&protocol=x", "%zz=%zz", "target=example.com&history=since:2020-01-01",
	} {
		f.Add(q)
	}
	cfg := testConfig(f, "")
	cfg.TenantsFile, cfg.UpstreamKey = "", ""
	cfg.BudgetUnits = 10_000_000_000_000
	cfg.LogLevel = 8 // errors only; the fuzzer makes many requests
	s, _ := startTest(f, cfg)
	h := s.http.Handler
	f.Fuzz(func(t *testing.T, query string) {
		req := httptest.NewRequest(http.MethodGet, "/v1/backlinks", nil)
		req.URL.RawQuery = query
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code >= 500 || w.Code < 200 {
			t.Fatalf("%q: %d %s", query, w.Code, w.Body)
		}
	})
}
