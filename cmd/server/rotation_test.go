package main

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestTokenKeyRotation: during a rolling change of the page token key, a
// token issued by a replica still on the old key resumes exactly on a
// replica configured with [new, old] (a file of two lines); a replica that
// no longer holds the old key refuses it.
func TestTokenKeyRotation(t *testing.T) {
	const oldKey, newKey = "old-token-key-6a1f0c9e33", "new-token-key-d24b7e8a05"
	keyFile := filepath.Join(t.TempDir(), "token-key")
	if err := os.WriteFile(keyFile, []byte(newKey+"\n"+oldKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, _ := startServer(t, map[string]string{"LINKGATE_TOKEN_KEY": oldKey})
	b, _ := startServer(t, map[string]string{"LINKGATE_TOKEN_KEY_FILE": keyFile})
	c, _ := startServer(t, map[string]string{"LINKGATE_TOKEN_KEY": newKey})

	type page struct {
		Backlinks []struct {
			URLFrom string `json:"url_from"`
			URLTo   string `json:"url_to"`
		} `json:"backlinks"`
		NextToken string `json:"next_page_token"`
	}
	list := func(s *server, size int, token string) (page, int) {
		q := url.Values{"target": {"sized-300.example"}, "page_size": {fmt.Sprint(size)}, "page_token": {token}}
		var p page
		resp := getJSON(t, "http://"+s.httpAddr+"/v1/backlinks?"+q.Encode(), &p)
		return p, resp.StatusCode
	}
	rows := func(p page) []string {
		var out []string
		for _, r := range p.Backlinks {
			out = append(out, r.URLFrom+" "+r.URLTo)
		}
		return out
	}

	whole, code := list(a, 300, "")
	if code != http.StatusOK || len(whole.Backlinks) != 300 {
		t.Fatalf("whole list on the old replica: %d, %d rows", code, len(whole.Backlinks))
	}
	first, code := list(a, 100, "")
	if code != http.StatusOK || first.NextToken == "" {
		t.Fatalf("first page on the old replica: %d, token %q", code, first.NextToken)
	}
	got := rows(first)
	for token := first.NextToken; token != ""; {
		p, code := list(b, 100, token)
		if code != http.StatusOK {
			t.Fatalf("the rotating replica refused the old replica's token: %d", code)
		}
		got = append(got, rows(p)...)
		token = p.NextToken
	}
	if !slices.Equal(got, rows(whole)) {
		t.Fatalf("resumed across the rotation: %d rows, not exactly the %d of one list", len(got), len(whole.Backlinks))
	}

	if _, code := list(c, 100, first.NextToken); code != http.StatusBadRequest {
		t.Fatalf("a replica without the old key answered %d to its token, want 400", code)
	}
}

// TestTokenKeysConfig: keys are separated by commas or lines, and each
// must be long enough, the error saying which.
func TestTokenKeysConfig(t *testing.T) {
	load := func(keys string) (config, error) {
		return loadConfig(nil, func(k string) string { return map[string]string{"LINKGATE_TOKEN_KEY": keys}[k] })
	}
	cfg, err := load(" new-token-key-d24b7e8a05 ,old-token-key-6a1f0c9e33\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.tokenKeys(); !slices.Equal(got, []string{"new-token-key-d24b7e8a05", "old-token-key-6a1f0c9e33"}) {
		t.Fatalf("keys %q", got)
	}
	if _, err := load("new-token-key-d24b7e8a05,short"); err == nil || !strings.Contains(err.Error(), "page token key 2 of 2") {
		t.Fatalf("a short second key: %v", err)
	}
}
