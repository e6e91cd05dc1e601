package ahrefssim

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"
)

// BenchmarkPage measures one 1,000-row page of a 1,000,000-link target over
// HTTP (httptest server, real client): in the default order, and as a keyset
// continuation in the pager's order starting in the middle of the target.
func BenchmarkPage(b *testing.B) {
	s := New(Config{CacheTTL: -1})
	srv := httptest.NewServer(s)
	defer srv.Close()
	const target = "sized-1000000.example"
	sel := "url_from,url_to,anchor,domain_rating_source,first_seen_link,last_seen,is_lost,is_dofollow"
	mid := "https://m"
	cases := []struct {
		name string
		p    url.Values
	}{
		{"default", vals("target", target, "select", sel, "limit", "1000")},
		{"keyset", vals("target", target, "select", sel, "limit", "1000", "order_by", "url_from:asc,url_to:asc",
			"where", `{"and":[{"field":"is_dofollow","is":["eq",true]},{"or":[{"field":"url_from","is":["gt","`+mid+`"]},{"and":[{"field":"url_from","is":["eq","`+mid+`"]},{"field":"url_to","is":["gte","https://"]}]}]}]}`)},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			u := srv.URL + blPath + "?" + c.p.Encode()
			get := func() {
				req, _ := http.NewRequest("GET", u, nil)
				req.Header.Set("Authorization", "Bearer "+DefaultKey)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || resp.Header.Get("x-api-rows") != "1000" {
					b.Fatalf("status %d rows %s", resp.StatusCode, resp.Header.Get("x-api-rows"))
				}
			}
			get() // build the target's precomputation outside the timing
			b.ResetTimer()
			start := time.Now()
			for b.Loop() {
				get()
			}
			b.ReportMetric(float64(b.N)*1000/time.Since(start).Seconds(), "rows/s")
		})
	}
}
