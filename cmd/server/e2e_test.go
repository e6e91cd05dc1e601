package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/internal/logsink"
)

// startServer runs the real server on random loopback ports, on its
// embedded default unless env says otherwise, and stops it at the end.
func startServer(t *testing.T, env map[string]string) (*server, *logsink.Buffer) {
	t.Helper()
	base := map[string]string{
		"LINKGATE_GRPC_ADDR":    "127.0.0.1:0",
		"LINKGATE_HTTP_ADDR":    "127.0.0.1:0",
		"LINKGATE_DATA_DIR":     t.TempDir(),
		"LINKGATE_DRAIN_DELAY":  "0s",
		"LINKGATE_UPSTREAM_RPM": "100000",
	}
	for k, v := range env {
		base[k] = v
	}
	cfg, err := loadConfig(nil, func(k string) string { return base[k] })
	if err != nil {
		t.Fatal(err)
	}
	logs := &logsink.Buffer{}
	s, err := start(context.Background(), cfg, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.shutdown(); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return s, logs
}

func dialServer(t *testing.T, s *server) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func getJSON(t *testing.T, url string, out any) *http.Response {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("GET %s: %s: %v", url, body, err)
		}
	}
	return resp
}

func TestEndToEndGRPC(t *testing.T) {
	s, _ := startServer(t, nil)
	conn := dialServer(t, s)
	ctx := context.Background()
	c := v1.NewBacklinksServiceClient(conn)

	hc, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", hc, err)
	}

	bl, err := c.ListBacklinks(ctx, &v1.ListBacklinksRequest{Target: "sized-250.example", PageSize: 100, Select: []string{"url_from,traffic", "domain_rating_source"}})
	if err != nil || len(bl.GetBacklinks()) != 100 || bl.GetNextPageToken() == "" {
		t.Fatalf("ListBacklinks: %d rows, token %q, %v", len(bl.GetBacklinks()), bl.GetNextPageToken(), err)
	}
	first := bl.GetBacklinks()[0]
	if first.UrlFrom == nil || first.Traffic == nil || first.UrlTo != nil || first.Anchor != nil {
		t.Fatalf("selected fields present, others absent: %v", first)
	}
	if bl.GetCost().GetUnitsCharged() != 14*101 {
		t.Errorf("cost %v: want 14 units × 101 rows (url_from, traffic, domain_rating_source, the default order's first_seen_link and the url_to tie-breaker)", bl.GetCost())
	}

	rd, err := c.ListRefDomains(ctx, &v1.ListRefDomainsRequest{Target: "sized-250.example", PageSize: 5, OrderBy: "domain_rating:desc"})
	if err != nil || len(rd.GetRefDomains()) != 5 || rd.GetRefDomains()[0].GetDomainRating() < rd.GetRefDomains()[4].GetDomainRating() {
		t.Fatalf("ListRefDomains: %v %v", rd, err)
	}
	br, err := c.ListBrokenBacklinks(ctx, &v1.ListBrokenBacklinksRequest{Target: "sized-3000.example", PageSize: 5})
	if err != nil || len(br.GetBrokenBacklinks()) != 5 || br.GetBrokenBacklinks()[0].GetHttpCodeTarget() < 400 {
		t.Fatalf("ListBrokenBacklinks: %v %v", br, err)
	}
	nl, err := c.ListNewLostBacklinks(ctx, &v1.ListNewLostBacklinksRequest{Target: "sized-3000.example", Since: "2025-09-01", PageSize: 50})
	if err != nil || len(nl.GetNewLostBacklinks()) == 0 {
		t.Fatalf("ListNewLostBacklinks: %v %v", nl, err)
	}
	for _, r := range nl.GetNewLostBacklinks() {
		if r.GetChange() == v1.Change_CHANGE_UNSPECIFIED || r.GetChangeTime().AsTime().Before(mustDate("2025-09-01")) {
			t.Fatalf("new/lost row outside the window: %v", r)
		}
	}

	st, err := c.StreamRefDomains(ctx, &v1.StreamRefDomainsRequest{Target: "sized-2500.example", PageSize: 100, MaxRows: 250})
	if err != nil {
		t.Fatal(err)
	}
	var rows int
	var last *v1.StreamRefDomainsResponse
	for {
		m, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		rows += len(m.GetRefDomains())
		last = m
	}
	if rows != 250 || last.GetNextPageToken() == "" {
		t.Fatalf("stream with max_rows 250: %d rows, last token %q", rows, last.GetNextPageToken())
	}

	q, err := v1.NewQuotaServiceClient(conn).GetQuota(ctx, &v1.GetQuotaRequest{})
	if err != nil || q.GetPool().GetUsed() == 0 || q.GetPool().GetUsed() != q.GetTenant().GetUsed() || q.GetPool().GetReserved() != 0 {
		t.Fatalf("quota after the calls: %v %v", q, err)
	}

	_, err = c.ListBacklinks(ctx, &v1.ListBacklinksRequest{Target: "x.example", Filter: "traffic >"})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad filter: %v", err)
	}
}

func TestEndToEndREST(t *testing.T) {
	s, _ := startServer(t, nil)
	base := "http://" + s.httpAddr

	var page struct {
		Backlinks []map[string]any `json:"backlinks"`
		NextToken string           `json:"next_page_token"`
		Cost      map[string]any   `json:"cost"`
	}
	getJSON(t, base+"/v1/backlinks?target=sized-300.example&page_size=10&select=url_from,url_to&select=first_seen_link&order_by=first_seen_link:desc", &page)
	if len(page.Backlinks) != 10 || page.NextToken == "" || page.Cost["units_charged"] != "50" { // 3 units × 11 rows is under the floor
		t.Fatalf("REST backlinks: %d rows, token %q, cost %v", len(page.Backlinks), page.NextToken, page.Cost)
	}
	if _, ok := page.Backlinks[0]["first_seen_link"].(string); !ok || len(page.Backlinks[0]) != 3 {
		t.Fatalf("row %v: want exactly the three selected fields in snake_case", page.Backlinks[0])
	}

	for _, path := range []string{
		"/v1/refdomains?target=sized-300.example&page_size=3",
		"/v1/broken-backlinks?target=sized-3000.example&page_size=3",
		"/v1/new-lost-backlinks?target=sized-3000.example&since=2025-09-01&page_size=3&changes=CHANGE_FILTER_LOST",
		"/v1/backlinks-stats?target=sized-300.example&date=2026-02-01",
		"/v1/quota",
	} {
		var out map[string]any
		if resp := getJSON(t, base+path, &out); resp.StatusCode != 200 || len(out) == 0 {
			t.Fatalf("GET %s: %d %v", path, resp.StatusCode, out)
		}
	}

	// A stream is newline-delimited JSON objects, each {"result": page}.
	resp, err := http.Get(base + "/v1/backlinks:stream?target=sized-2500.example&page_size=1000")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 16<<20)
	var rows, msgs int
	for sc.Scan() {
		var chunk struct {
			Result struct {
				Backlinks []json.RawMessage `json:"backlinks"`
			} `json:"result"`
			Error json.RawMessage `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &chunk); err != nil || chunk.Error != nil {
			t.Fatalf("chunk %s: %v", sc.Bytes(), err)
		}
		rows += len(chunk.Result.Backlinks)
		msgs++
	}
	if rows != 2500 || msgs != 3 {
		t.Fatalf("REST stream: %d rows in %d messages, want 2500 in 3", rows, msgs)
	}

	// Errors: 400 with the field, and the OpenAPI document and health.
	var e struct {
		Message string `json:"message"`
	}
	if resp := getJSON(t, base+"/v1/backlinks?target=x.example&select=nope", &e); resp.StatusCode != 400 || !strings.Contains(e.Message, `"nope"`) {
		t.Fatalf("bad select: %d %q", resp.StatusCode, e.Message)
	}
	var doc map[string]any
	if resp := getJSON(t, base+"/openapi.json", &doc); resp.StatusCode != 200 || !strings.HasPrefix(fmt.Sprint(doc["openapi"]), "3.") {
		t.Fatalf("openapi.json: %d", resp.StatusCode)
	}
	var health map[string]string
	if getJSON(t, base+"/healthz", &health); health["status"] != "SERVING" {
		t.Fatalf("healthz: %v", health)
	}
	var est map[string]any
	r, err := http.Post(base+"/v1/cost:estimate", "application/json", strings.NewReader(`{"ref_domains":{"target":"x.example"},"rows":5000}`))
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(r.Body).Decode(&est)
	r.Body.Close()
	if r.StatusCode != 200 || est["per_row_units"] != "5" {
		t.Fatalf("cost:estimate: %d %v", r.StatusCode, est)
	}
}

// TestBudgetExhaustedOverREST: 429 with Retry-After on a List, and a
// failing stream's last chunk is the error holding the token to resume.
func TestBudgetExhaustedOverREST(t *testing.T) {
	s, _ := startServer(t, map[string]string{"LINKGATE_BUDGET_UNITS": "7000"})
	base := "http://" + s.httpAddr
	resp, err := http.Get(base + "/v1/backlinks:stream?target=sized-5000.example&page_size=500")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	lines := strings.Split(strings.TrimSpace(string(body)), "\n")
	var last struct {
		Error struct {
			Code    int `json:"code"`
			Details []struct {
				Type     string            `json:"@type"`
				Reason   string            `json:"reason"`
				Metadata map[string]string `json:"metadata"`
			} `json:"details"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
		t.Fatal(err)
	}
	token := ""
	for _, d := range last.Error.Details {
		if d.Reason == "BUDGET_EXHAUSTED" {
			token = d.Metadata["page_token"]
		}
	}
	if last.Error.Code != int(codes.ResourceExhausted) || token == "" || len(lines) < 2 {
		t.Fatalf("stream of %d lines ended with %s", len(lines), lines[len(lines)-1])
	}

	// Not the stream's first page, which the page cache would serve free.
	r := getJSON(t, base+"/v1/backlinks?target=sized-5000.example&page_size=900", nil)
	if r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" {
		t.Fatalf("List over budget: %d, Retry-After %q", r.StatusCode, r.Header.Get("Retry-After"))
	}
}
