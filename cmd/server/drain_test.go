package main

import (
	"bufio"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

// TestRESTStreamDrainedWithAToken: at shutdown a REST stream's last line is
// {"error": …} with UNAVAILABLE and the page token to resume elsewhere.
func TestRESTStreamDrainedWithAToken(t *testing.T) {
	simURL := simulator(t, ahrefssim.Config{Keys: []string{upstreamKey}, Latency: 100 * time.Millisecond})
	cfg := testConfig(t, simURL)
	cfg.UpstreamPageRows = 200
	s, _ := startTest(t, cfg)
	req, _ := http.NewRequest("GET", "http://"+s.httpAddr+"/v1/backlinks:stream?target=sized-50000.example&page_size=100", nil)
	req.Header.Set("Authorization", "Bearer "+keyB)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	if !sc.Scan() {
		t.Fatalf("no first line: %v", sc.Err())
	}
	s.backlinks.Drain()
	var last string
	for sc.Scan() {
		last = sc.Text()
	}
	var line struct {
		Error struct {
			Code    int `json:"code"`
			Details []struct {
				Reason   string            `json:"reason"`
				Metadata map[string]string `json:"metadata"`
			} `json:"details"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(last), &line); err != nil {
		t.Fatalf("last line %q: %v", last, err)
	}
	token := ""
	for _, d := range line.Error.Details {
		if d.Reason == "SHUTTING_DOWN" {
			token = d.Metadata["page_token"]
		}
	}
	if line.Error.Code != 14 || token == "" {
		t.Fatalf("last line %s: want UNAVAILABLE (14), SHUTTING_DOWN with a page_token", last)
	}
}
