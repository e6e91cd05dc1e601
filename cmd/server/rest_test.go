package main

import (
	"net/http"
	"strings"
	"testing"

	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

// TestRESTMethodsAndRetryAfter: a wrong method is 405 with Allow, also on
// the listener's own paths; a stream refused at once (the server's stream
// bound reached) is 429 with Retry-After, as a List is.
func TestRESTMethodsAndRetryAfter(t *testing.T) {
	cfg := testConfig(t, simulator(t, ahrefssim.Config{}))
	cfg.MaxStreams = 1
	s, _ := startTest(t, cfg)
	base := "http://" + s.httpAddr
	for _, tc := range []struct{ method, path, allow string }{
		{http.MethodPost, "/v1/backlinks", "GET"},
		{http.MethodDelete, "/v1/backlinks:stream", "GET"},
		{http.MethodGet, "/v1/cost:estimate", "POST"},
		{http.MethodPut, "/v1/quota/tenants/b", "PATCH"},
		{http.MethodPost, "/healthz", "GET, HEAD"},
		{http.MethodPost, "/openapi.json", "GET, HEAD"},
	} {
		code, body, h := restCall(t, nil, tc.method, base+tc.path, keyB, "")
		if code != http.StatusMethodNotAllowed || h.Get("Allow") != tc.allow {
			t.Errorf("%s %s: %d Allow %q, want 405 Allow %q: %s", tc.method, tc.path, code, h.Get("Allow"), tc.allow, body)
		}
	}

	// One stream holds the server's only slot while its reader stalls.
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"/v1/backlinks:stream?target=sized-1000000.example", nil)
	req.Header.Set("Authorization", "Bearer "+keyB)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	code, body, h := restCall(t, nil, http.MethodGet, base+"/v1/refdomains:stream?target=example.com", keyA, "")
	if code != http.StatusTooManyRequests || h.Get("Retry-After") == "" || !strings.Contains(body, "SERVER_BUSY") {
		t.Errorf("a second stream: %d Retry-After %q: %s", code, h.Get("Retry-After"), clip(body))
	}
}
