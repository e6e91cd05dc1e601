package main

import (
	"encoding/csv"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// getCSV fetches a REST URL as CSV and parses the body with encoding/csv.
func getCSV(t *testing.T, u string, accept string) (*http.Response, [][]string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", u, resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/csv") {
		t.Fatalf("GET %s: Content-Type %q", u, ct)
	}
	r := csv.NewReader(resp.Body)
	records, err := r.ReadAll() // consumes the body, so the trailers are in
	if err != nil {
		t.Fatalf("GET %s: not CSV: %v", u, err)
	}
	return resp, records
}

func TestCSVOverREST(t *testing.T) {
	s, _ := startServer(t, nil)
	base := "http://" + s.httpAddr

	// List: header row in select order, then the rows, the token in a header.
	u := base + "/v1/backlinks?target=sized-300.example&page_size=25&select=first_seen_link,url_from&select=languages,anchor,alt&order_by=url_from&output=csv"
	resp, rec := getCSV(t, u, "")
	if !slices.Equal(rec[0], []string{"first_seen_link", "url_from", "languages", "anchor", "alt"}) {
		t.Fatalf("header row %v", rec[0])
	}
	if len(rec) != 26 {
		t.Fatalf("%d records, want a header and 25 rows", len(rec))
	}
	token := resp.Header.Get("Linkgate-Next-Page-Token")
	if token == "" {
		t.Fatal("no Linkgate-Next-Page-Token header on a List page with more rows")
	}
	// The same page as JSON: every cell is the JSON value in its documented form.
	var page struct {
		Backlinks []map[string]any `json:"backlinks"`
	}
	getJSON(t, strings.Replace(u, "output=csv", "output=json", 1), &page)
	for i, row := range page.Backlinks {
		got := rec[i+1]
		if got[0] != row["first_seen_link"] || got[1] != row["url_from"] || got[3] != row["anchor"] {
			t.Fatalf("row %d: CSV %q, JSON %v", i, got, row)
		}
		langs, _ := json.Marshal(row["languages"])
		if row["languages"] == nil {
			langs = []byte("")
		}
		if got[2] != string(langs) {
			t.Errorf("row %d languages: CSV %q, JSON %s", i, got[2], langs)
		}
		if alt, ok := row["alt"].(string); (ok && got[4] != alt) || (!ok && got[4] != "") {
			t.Errorf("row %d alt: CSV %q, JSON %v", i, got[4], row["alt"])
		}
	}
	// The token resumes: following it to the end gives the 300 rows once.
	seen := map[string]bool{}
	for _, r := range rec[1:] {
		seen[r[1]+r[0]+r[3]] = true
	}
	for token != "" {
		resp, rec = getCSV(t, base+"/v1/backlinks?target=sized-300.example&page_size=100&select=first_seen_link,url_from&select=languages,anchor,alt&order_by=url_from&page_token="+url.QueryEscape(token), "text/csv")
		for _, r := range rec[1:] {
			seen[r[1]+r[0]+r[3]] = true
		}
		token = resp.Header.Get("Linkgate-Next-Page-Token")
	}
	if len(seen) < 290 { // rows are distinct by url_from, first_seen_link and anchor but for a few
		t.Errorf("%d distinct rows over the pages, want about 300", len(seen))
	}

	// A stream: one header row, every row, the end of the data without a
	// token trailer; with max_rows, the trailer resumes.
	resp, rec = getCSV(t, base+"/v1/backlinks:stream?target=sized-2500.example&page_size=300", "text/csv, application/json;q=0.5")
	if got := len(rec); got != 2501 || rec[0][0] != "url_from" {
		t.Fatalf("stream: %d records (want 2501), header %v", got, rec[0])
	}
	if tr := resp.Trailer.Get("Linkgate-Next-Page-Token"); tr != "" {
		t.Errorf("the complete stream has a token trailer %q", tr)
	}
	resp, rec = getCSV(t, base+"/v1/new-lost-backlinks:stream?target=sized-2500.example&since=2025-06-01&order_by=change_time%20desc&max_rows=100&output=csv", "")
	if len(rec) != 101 || !slices.Equal(rec[0][:3], []string{"change", "change_time", "url_from"}) || (rec[1][0] != "new" && rec[1][0] != "lost") {
		t.Fatalf("new/lost stream: %d records, header %v, first %v", len(rec), rec[0], rec[1])
	}
	tr := resp.Trailer.Get("Linkgate-Next-Page-Token")
	if tr == "" {
		t.Fatal("a stream stopped at max_rows has no Linkgate-Next-Page-Token trailer")
	}
	_, resumed := getCSV(t, base+"/v1/new-lost-backlinks:stream?target=sized-2500.example&since=2025-06-01&order_by=change_time%20desc&output=csv&page_token="+url.QueryEscape(tr), "")
	_, all := getCSV(t, base+"/v1/new-lost-backlinks:stream?target=sized-2500.example&since=2025-06-01&order_by=change_time%20desc&output=csv", "")
	if len(resumed) < 2 || !slices.EqualFunc(append(rec[1:], resumed[1:]...), all[1:], slices.Equal) {
		t.Fatalf("resumed from the trailer: %d+%d rows, the whole stream %d", len(rec)-1, len(resumed)-1, len(all)-1)
	}

	// Errors stay JSON; a bad output value is 400 naming it.
	code, body, hdr := restCall(t, nil, http.MethodGet, base+"/v1/backlinks?target=sized-300.example&filter=nope&output=csv", "", "")
	if code != 400 || !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") || !strings.Contains(body, "filter") {
		t.Errorf("bad filter as CSV: %d %s %s", code, hdr.Get("Content-Type"), body)
	}
	code, body, _ = restCall(t, nil, http.MethodGet, base+"/v1/backlinks?target=sized-300.example&output=xml", "", "")
	if code != 400 || !strings.Contains(body, `xml`) || !strings.Contains(body, "output") {
		t.Errorf("output=xml: %d %s", code, body)
	}
	code, _, _ = restCall(t, nil, http.MethodGet, base+"/v1/quota?output=csv", "", "")
	if code != http.StatusNotAcceptable {
		t.Errorf("quota as CSV: %d, want 406", code)
	}
}

// TestCSVQuoting: RFC 4180 quoting of text with commas, quotes and line
// breaks, read back by encoding/csv; lists as JSON arrays; absent as empty.
// TestCSVStreamFailureTrailers: a CSV stream stopped by the budget keeps a
// valid body and reports the error and the token to resume in trailers.
func TestCSVStreamFailureTrailers(t *testing.T) {
	s, _ := startServer(t, map[string]string{"LINKGATE_BUDGET_UNITS": "7000"})
	resp, rec := getCSV(t, "http://"+s.httpAddr+"/v1/backlinks:stream?target=sized-5000.example&page_size=500&output=csv", "")
	if len(rec) != 1001 {
		t.Fatalf("%d records before the budget ran out, want a header and 1000 rows", len(rec))
	}
	if e := resp.Trailer.Get("Linkgate-Error"); !strings.HasPrefix(e, "8 ") {
		t.Errorf("Linkgate-Error trailer %q", e)
	}
	if resp.Trailer.Get("Linkgate-Next-Page-Token") == "" {
		t.Error("no token trailer to resume the failed stream")
	}
}
