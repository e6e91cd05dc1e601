package ahrefssim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/clock"
	"github.com/linkgate/linkgate/upstream"
)

// apiError reads the API's error shape, {"error": "…"}, and fails the test
// on any other body.
func apiError(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" || !strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
		t.Fatalf("not the API's error shape: %s %q", w.Header().Get("Content-Type"), w.Body)
	}
	return e.Error
}

// TestUnknownParametersRefused: a query parameter the operation does not
// define is a 400 naming it, on every endpoint, as the spec allows no other.
func TestUnknownParametersRefused(t *testing.T) {
	s := New(Config{})
	list := vals("target", "x.com", "select", "url_from", "limit", "3", "timeout", "30", "output", "json")
	for _, tt := range []struct {
		path  string
		base  url.Values
		extra string
	}{
		{blPath, list, "offset"},
		{upstream.RefDomains.Path(), vals("target", "x.com", "select", "domain"), "aggregation"},
		{upstream.BrokenBacklinks.Path(), vals("target", "x.com", "select", "url_from"), "history"},
		{upstream.BacklinksStatsPath, vals("target", "x.com", "date", "2026-01-01"), "select"},
		{upstream.LimitsAndUsagePath, vals("output", "json"), "target"},
	} {
		if w := do(t, s, tt.path, tt.base, DefaultKey); w.Code != 200 {
			t.Fatalf("%s without %s: %d %s", tt.path, tt.extra, w.Code, w.Body)
		}
		v := url.Values{}
		for k, x := range tt.base {
			v[k] = x
		}
		v.Set(tt.extra, "1")
		w := do(t, s, tt.path, v, DefaultKey)
		if w.Code != 400 || !strings.Contains(apiError(t, w), tt.extra) {
			t.Errorf("%s with %s: %d %s", tt.path, tt.extra, w.Code, w.Body)
		}
	}
	w := batch(t, s, "output=json", `{"select":["refips"],"targets":[{"url":"x.com","mode":"domain","protocol":"both"}]}`)
	if w.Code != 400 || !strings.Contains(apiError(t, w), "output") {
		t.Errorf("batch-analysis with a query string: %d %s", w.Code, w.Body)
	}
}

// TestLooseValueForms: the forms the Ahrefs web app writes (1 for true,
// numbers as strings) select the same rows as the typed forms.
func TestLooseValueForms(t *testing.T) {
	s := New(Config{})
	for _, tt := range []struct{ typed, loose string }{
		{`{"field":"is_dofollow","is":["eq",true]}`, `{"field":"is_dofollow","is":["eq",1]}`},
		{`{"field":"is_dofollow","is":["eq",false]}`, `{"field":"is_dofollow","is":["eq",0]}`},
		{`{"field":"traffic_domain","is":["gte",500]}`, `{"field":"traffic_domain","is":["gte","500"]}`},
		{`{"field":"domain_rating_source","is":["gte",19.5]}`, `{"field":"domain_rating_source","is":["gte","19.5"]}`},
	} {
		want := all(t, s, upstream.AllBacklinks, vals("target", "sized-300.example", "select", "url_from,url_to", "where", tt.typed))
		got := all(t, s, upstream.AllBacklinks, vals("target", "sized-300.example", "select", "url_from,url_to", "where", tt.loose))
		if len(want) == 0 || len(want) == 300 || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: %d rows, %s: %d rows", tt.typed, len(want), tt.loose, len(got))
		}
	}
	for _, bad := range []string{
		`{"field":"is_dofollow","is":["eq",2]}`,
		`{"field":"traffic_domain","is":["gte","many"]}`,
	} {
		w := do(t, s, blPath, vals("target", "x.com", "select", "url_from", "where", bad), DefaultKey)
		if w.Code != 400 || !strings.Contains(apiError(t, w), "where") {
			t.Errorf("%s: %d %s", bad, w.Code, w.Body)
		}
	}
}

// TestModifier: the documented modifier key transforms the field before the
// test; an unknown modifier is refused.
func TestModifier(t *testing.T) {
	s := New(Config{})
	rows := all(t, s, upstream.AllBacklinks, vals("target", "sized-300.example", "select", "url_from,anchor", "limit", "300"))
	var anchor string
	for _, r := range rows {
		if a, _ := r["anchor"].(string); strings.ToUpper(a) != a {
			anchor = a
			break
		}
	}
	if anchor == "" {
		t.Fatal("no anchor with lower-case letters")
	}
	where := func(mod, value string) string {
		return fmt.Sprintf(`{"field":"anchor","modifier":%q,"is":["eq",%q]}`, mod, value)
	}
	got := all(t, s, upstream.AllBacklinks, vals("target", "sized-300.example", "select", "url_from,anchor", "where", where("uppercase", strings.ToUpper(anchor))))
	if len(got) == 0 {
		t.Fatalf("uppercase %q: no rows", strings.ToUpper(anchor))
	}
	for _, r := range got {
		if a, _ := r["anchor"].(string); strings.ToUpper(a) != strings.ToUpper(anchor) {
			t.Errorf("row anchor %q", a)
		}
	}
	if exact := all(t, s, upstream.AllBacklinks, vals("target", "sized-300.example", "select", "url_from", "where",
		fmt.Sprintf(`{"field":"anchor","is":["eq",%q]}`, strings.ToUpper(anchor)))); len(exact) >= len(got) {
		t.Errorf("without the modifier %d rows, with it %d", len(exact), len(got))
	}
	for _, bad := range []string{where("reverse", "x"), `{"field":"http_code","modifier":"uppercase","is":["eq",200]}`} {
		w := do(t, s, blPath, vals("target", "x.com", "select", "url_from", "where", bad), DefaultKey)
		if w.Code != 400 || !strings.Contains(apiError(t, w), "modifier") {
			t.Errorf("%s: %d %s", bad, w.Code, w.Body)
		}
	}
}

func batch(t *testing.T, s http.Handler, query, body string) *httptest.ResponseRecorder {
	t.Helper()
	u := upstream.BatchAnalysisPath
	if query != "" {
		u += "?" + query
	}
	r := httptest.NewRequest("POST", u, strings.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+DefaultKey)
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	return w
}

// TestBatchAnalysisAsSpecified: up to 100 targets, every field the spec
// lists at its price, the IP fields at 1 unit each, output in the body.
func TestBatchAnalysisAsSpecified(t *testing.T) {
	s := New(Config{CacheTTL: -1})
	targets := func(n int) string {
		ts := make([]string, n)
		for k := range ts {
			ts[k] = fmt.Sprintf(`{"url":"t%d.example","mode":"domain","protocol":"both"}`, k)
		}
		return strings.Join(ts, ",")
	}
	w := batch(t, s, "", `{"select":["refips","refips_subnets"],"targets":[`+targets(1)+`],"output":"json"}`)
	if w.Code != 200 || w.Header().Get("x-api-units-cost-row") != "2" {
		t.Errorf("IP fields: %d cost-row %s %s", w.Code, w.Header().Get("x-api-units-cost-row"), w.Body)
	}
	w = batch(t, s, "", `{"select":["backlinks","refdomains","domain_rating","org_traffic","ip","url","index"],"targets":[`+targets(100)+`],
		"order_by":["backlinks:desc"],"country":"us","volume_mode":"average"}`)
	var doc struct {
		Targets []map[string]any `json:"targets"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &doc); w.Code != 200 || err != nil || len(doc.Targets) != 100 {
		t.Fatalf("100 targets, other fields: %d %.200s", w.Code, w.Body)
	}
	// 1+5+1+10+1+1+1 units per target.
	if w.Header().Get("x-api-units-cost-row") != "20" || w.Header().Get("x-api-units-cost-total") != "2000" {
		t.Errorf("cost-row %s total %s", w.Header().Get("x-api-units-cost-row"), w.Header().Get("x-api-units-cost-total"))
	}
	if _, ok := doc.Targets[0]["domain_rating"].(float64); !ok || doc.Targets[0]["ip"] != nil || doc.Targets[5]["index"] != 5.0 ||
		doc.Targets[5]["url"] != "t5.example" || doc.Targets[5]["mode"] != "domain" || doc.Targets[5]["protocol"] != "both" {
		t.Errorf("row %v", doc.Targets[0])
	}
	for name, body := range map[string]string{
		"101 targets":   `{"select":["refips"],"targets":[` + targets(101) + `]}`,
		"no targets":    `{"select":["refips"],"targets":[]}`,
		"unknown field": `{"select":["class_c"],"targets":[` + targets(1) + `]}`,
		"no mode":       `{"select":["refips"],"targets":[{"url":"x.com","protocol":"both"}]}`,
		"output csv":    `{"select":["refips"],"targets":[` + targets(1) + `],"output":"csv"}`,
	} {
		if w := batch(t, s, "", body); w.Code != 400 {
			t.Errorf("%s: %d %s", name, w.Code, w.Body)
		} else {
			apiError(t, w)
		}
	}
}

// TestLimitsAndUsageAsAnswered: usage_reset_date is a date-time, as real
// answers write it, and the free call's cost headers say 0.
func TestLimitsAndUsageAsAnswered(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 8, 20, 15, 0, 0, 0, time.UTC))
	s := New(Config{Clock: clk})
	w := do(t, s, upstream.LimitsAndUsagePath, vals("output", "json"), DefaultKey)
	var doc struct {
		L struct {
			Reset string `json:"usage_reset_date"`
		} `json:"limits_and_usage"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil || doc.L.Reset != "2026-09-01T00:00:00Z" {
		t.Errorf("usage_reset_date %q (%v)", doc.L.Reset, err)
	}
	if w.Header().Get("x-api-units-cost-total-actual") != "0" || w.Header().Get("x-api-cache") != "no_cache" {
		t.Errorf("headers %v", w.Header())
	}
}
