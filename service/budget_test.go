package service

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/paging"
	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

// TestSpendMatchesPagesAndUpstream: the ledger's spend equals the sum of the
// costs reported on the pages and the simulator's own usage; invalid
// requests change neither.
func TestSpendMatchesPagesAndUpstream(t *testing.T) {
	h := newHarness(t, harnessOptions{pageRows: 400})
	h.sim.SetCacheTTL(-1) // every request charged: the figures must still agree
	ctx := context.Background()
	var reported int64
	for _, q := range []query{
		{data: paging.Backlinks, p: paging.Params{Target: "sized-1500.example", OrderBy: "domain_rating_source:desc"}, pageSize: 250},
		{data: paging.RefDomains, p: paging.Params{Target: "sized-1500.example", Filter: "domain_rating >= 10"}, pageSize: 100},
	} {
		pages, err := h.stream(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pages {
			reported += p.units
		}
		s, err := h.list(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		reported += s.units
	}
	used, reserved := h.used(t)
	if used != reported || used != h.sim.Usage() || reserved != 0 {
		t.Fatalf("ledger used %d (reserved %d), pages reported %d, simulator charged %d", used, reserved, reported, h.sim.Usage())
	}

	for _, bad := range []query{
		{data: paging.Backlinks, p: paging.Params{Target: "x.example", Filter: "nope = 1"}},
		{data: paging.Backlinks, p: paging.Params{Target: "x.example", Select: []string{"url_from,bogus"}}},
		{data: paging.Backlinks, p: paging.Params{Target: "x.example", OrderBy: "languages"}},
		{data: paging.RefDomains, p: paging.Params{Target: "x.example", Filter: "domain_rating > \"high\""}},
		{data: paging.Backlinks, p: paging.Params{Target: ""}},
		{data: paging.NewLost, p: paging.Params{Target: "x.example", Since: "last week"}},
		{data: paging.Backlinks, p: paging.Params{Target: "x.example"}, token: "garbage"},
		{data: paging.Backlinks, p: paging.Params{Target: "x.example"}, pageSize: -1},
	} {
		if _, err := h.list(ctx, bad); code(err) != codes.InvalidArgument {
			t.Errorf("%+v: %v, want INVALID_ARGUMENT", bad.p, err)
		}
		if bad.data == paging.NewLost {
			continue // the stream helper speaks backlinks and refdomains
		}
		if _, err := h.stream(ctx, bad); code(err) != codes.InvalidArgument {
			t.Errorf("stream %+v: %v, want INVALID_ARGUMENT", bad.p, err)
		}
	}
	if u, _ := h.used(t); u != used || h.sim.Usage() != used {
		t.Fatalf("invalid requests spent units: ledger %d → %d, simulator %d", used, u, h.sim.Usage())
	}
}

func TestInvalidArgumentNamesTheField(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	_, err := h.list(context.Background(), query{data: paging.Backlinks, p: paging.Params{Target: "x.example", Filter: `domain_rating_source >= 10 AND http_code = "ok"`}})
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "column 44") || !strings.Contains(st.Message(), `"http_code"`) {
		t.Fatalf("got %v, want INVALID_ARGUMENT naming http_code at column 44", err)
	}
	var br *errdetails.BadRequest
	for _, d := range st.Details() {
		if b, ok := d.(*errdetails.BadRequest); ok {
			br = b
		}
	}
	if br == nil || br.GetFieldViolations()[0].GetField() != "filter" {
		t.Fatalf("details %v, want a BadRequest on filter", st.Details())
	}
}

func TestTokensAreBoundAndSigned(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	q := query{data: paging.Backlinks, p: paging.Params{Target: "sized-300.example", OrderBy: "domain_rating_source:desc"}, pageSize: 10}
	first, err := h.list(ctx, q)
	if err != nil || first.token == "" {
		t.Fatalf("first page: %v %+v", err, first)
	}
	payload, sig, _ := strings.Cut(first.token, ".")
	tampered := payload[:len(payload)-2] + "AA." + sig
	for name, mod := range map[string]func(query) query{
		"other filter":  func(q query) query { q.p.Filter = "is_dofollow"; return q },
		"other order":   func(q query) query { q.p.OrderBy = "domain_rating_source:asc"; return q },
		"other target":  func(q query) query { q.p.Target = "sized-301.example"; return q },
		"other select":  func(q query) query { q.p.Select = []string{"url_from"}; return q },
		"other dataset": func(q query) query { q.data = paging.NewLost; q.p.Since = "2025-01-01"; return q },
		"tampered":      func(q query) query { q.token = tampered; return q },
		"oversized":     func(q query) query { q.token = strings.Repeat("a", paging.MaxTokenBytes+1); return q },
	} {
		t.Run(name, func(t *testing.T) {
			r := q
			r.token = first.token
			r = mod(r)
			_, err := h.list(ctx, r)
			if code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "page_token") {
				t.Fatalf("got %v, want INVALID_ARGUMENT on page_token", err)
			}
		})
	}
	t.Run("expired", func(t *testing.T) {
		h.clock.Advance(2 * time.Hour)
		defer h.clock.Advance(-2 * time.Hour)
		r := q
		r.token = first.token
		if _, err := h.list(ctx, r); code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("got %v, want INVALID_ARGUMENT saying the token expired", err)
		}
	})
	t.Run("same request continues", func(t *testing.T) {
		r := q
		r.token = first.token
		if _, err := h.list(ctx, r); err != nil {
			t.Fatal(err)
		}
	})
}

// TestBudgetExhaustedMidStream: the stream ends with RESOURCE_EXHAUSTED and
// its details, holding a token that resumes exactly where it stopped once
// the budget has room again.
func TestBudgetExhaustedMidStream(t *testing.T) {
	// 6 units per row (the default selection), 500-row pages asking 501
	// rows: 3006 units each. 7000 units pay for two pages.
	h := newHarness(t, harnessOptions{poolLimit: 7000, pageRows: 500})
	ctx := context.Background()
	q := query{data: paging.Backlinks, p: paging.Params{Target: "sized-2000.example"}, pageSize: 200} // the default selection has url_from, url_to
	want := h.want(t, q)
	pages, err := h.stream(ctx, q)
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("stream ended with %v, want RESOURCE_EXHAUSTED", err)
	}
	got := flatten(pages)
	if len(got) != 1000 {
		t.Fatalf("%d rows before the budget ran out, want 1000", len(got))
	}
	var (
		info  *errdetails.ErrorInfo
		qf    *errdetails.QuotaFailure
		retry *errdetails.RetryInfo
	)
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			info = d
		case *errdetails.QuotaFailure:
			qf = d
		case *errdetails.RetryInfo:
			retry = d
		}
	}
	if info.GetReason() != ReasonBudgetExhausted || qf == nil || retry == nil || info.GetMetadata()["page_token"] == "" {
		t.Fatalf("details: info %v, quota failure %v, retry %v", info, qf, retry)
	}
	if used, reserved := h.used(t); used != 6012 || reserved != 0 { // two pages of 500 rows and a probe row, 6 units each
		t.Fatalf("ledger used %d reserved %d, want 6012 and 0: a denial must cost nothing", used, reserved)
	}
	// With room in the budget again (a fresh ledger, the same token key and
	// the same data), the error's token resumes exactly where it stopped.
	roomy := newHarness(t, harnessOptions{pageRows: 500})
	q.token = info.GetMetadata()["page_token"]
	rest, err := roomy.stream(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	if all := append(got, flatten(rest)...); !equalIDs(all, want) {
		t.Fatalf("resumed stream: %d rows in all, want %d", len(all), len(want))
	}
}

func equalIDs(a, b []string) bool { return strings.Join(a, "\n") == strings.Join(b, "\n") }

// TestTenantLimit: a tenant's own limit stops it before the pool's, with
// TENANT_LIMIT_REACHED.
func TestTenantLimit(t *testing.T) {
	h := newHarness(t, harnessOptions{tenants: map[string]int64{DefaultTenant: 100}})
	_, err := h.list(context.Background(), query{data: paging.Backlinks, p: paging.Params{Target: "sized-300.example"}, pageSize: 100})
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "tenant") {
		t.Fatalf("got %v, want RESOURCE_EXHAUSTED for the tenant", err)
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() != ReasonTenantLimitReached {
			t.Fatalf("reason %s, want %s", info.GetReason(), ReasonTenantLimitReached)
		}
	}
}

// TestCancelledStreamLeavesNothingReserved: a caller that goes away stops
// the pager, and every reservation is settled or released. A page cut in
// flight is charged provisionally in full; a reconciliation with the
// upstream's usage brings the ledger to exactly what the upstream charged.
func TestCancelledStreamLeavesNothingReserved(t *testing.T) {
	h := newHarness(t, harnessOptions{pageRows: 200})
	h.sim.SetLatency(20 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	st, err := h.backlinks.StreamBacklinks(ctx, &v1.StreamBacklinksRequest{Target: "sized-50000.example", PageSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	// The server notices the cancellation asynchronously; wait for its
	// handler to finish, not for a fixed time.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, reserved := h.used(t); reserved == 0 && h.server.active.Load() == 0 {
			break
		}
		if time.Now().After(deadline) {
			used, reserved := h.used(t)
			t.Fatalf("after cancelling: %d reserved, ledger used %d, simulator charged %d", reserved, used, h.sim.Usage())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if used, _ := h.used(t); used > 4*200*6+100 {
		t.Fatalf("the pager went on after the cancellation: %d units spent", used)
	}
	// A request cut during the simulator's latency may still be charged
	// when its handler ends; let it.
	time.Sleep(100 * time.Millisecond)
	if _, err := h.ledger.Reconcile(context.Background(), simUsage{h.sim}); err != nil {
		t.Fatal(err)
	}
	if used, _ := h.used(t); used != h.sim.Usage() {
		t.Fatalf("after a reconcile the ledger has %d, the upstream charged %d", used, h.sim.Usage())
	}
}

// simUsage reads the simulator's usage as the reconciler reads the
// upstream's limits-and-usage.
type simUsage struct{ sim *ahrefssim.Server }

func (u simUsage) UpstreamUsage(context.Context) (int64, time.Time, error) {
	return u.sim.Usage(), time.Time{}, nil
}

func TestEstimateCost(t *testing.T) {
	h := newHarness(t, harnessOptions{pageRows: 1000})
	resp, err := h.backlinks.EstimateCost(context.Background(), &v1.EstimateCostRequest{
		Request: &v1.EstimateCostRequest_Backlinks{Backlinks: &v1.ListBacklinksRequest{
			Target: "x.example", Select: []string{"url_from,traffic"}, Filter: "domain_rating_source > 50", OrderBy: "traffic:desc",
		}},
		Rows: 2500,
	})
	if err != nil {
		t.Fatal(err)
	}
	// url_from 1 + traffic 10 + domain_rating_source 1 + tie-breaker url_to 1.
	if resp.GetPerRowUnits() != 13 {
		t.Fatalf("per row %d, want 13", resp.GetPerRowUnits())
	}
	// Pages of 1000, 1000 and 500 rows, each asking for one row more (which
	// is the next page's first row).
	if want := int64(13*1001 + 13*1001 + 13*501); resp.GetUnitsForRows() != want || resp.GetPages() != 3 {
		t.Fatalf("units for 2500 rows %d in %d pages, want %d in 3", resp.GetUnitsForRows(), resp.GetPages(), want)
	}
	if resp.GetFirstPageUnits() != 13*101 {
		t.Fatalf("first page %d, want %d", resp.GetFirstPageUnits(), 13*101)
	}
	var tie bool
	for _, f := range resp.GetChargedFields() {
		if f.GetField() == "url_to" && f.GetReasons()[0] == v1.ChargeReason_CHARGE_REASON_TIE_BREAKER {
			tie = true
		}
	}
	if !tie {
		t.Fatalf("charged fields %v do not show the url_to tie-breaker", resp.GetChargedFields())
	}
	if h.sim.Usage() != 0 {
		t.Fatal("estimating called the upstream")
	}
}

func TestBacklinksStats(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	resp, err := h.backlinks.GetBacklinksStats(context.Background(), &v1.GetBacklinksStatsRequest{Target: "sized-700.example", Date: "2026-11-01"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetAllTime() != 700 || resp.GetLive() > 700 || resp.GetLive() == 0 {
		t.Fatalf("stats %v, want all_time 700", resp)
	}
	if used, _ := h.used(t); used != resp.GetCost().GetUnitsCharged() || used != h.sim.Usage() {
		t.Fatalf("ledger %d, page %d, simulator %d", used, resp.GetCost().GetUnitsCharged(), h.sim.Usage())
	}
}

// TestRepeatedPageIsFree: a page asked for again within the cache's TTL
// costs nothing and is served even when the budget is spent.
func TestRepeatedPageIsFree(t *testing.T) {
	h := newHarness(t, harnessOptions{poolLimit: 700})
	h.sim.SetCacheTTL(-1) // only linkgate's own cache can make it free
	q := query{data: paging.Backlinks, p: paging.Params{Target: "sized-500.example"}, pageSize: 100}
	first, err := h.list(context.Background(), q)
	if err != nil || first.units != 606 {
		t.Fatalf("first page: %v, %d units, want 606", err, first.units)
	}
	again, err := h.list(context.Background(), q)
	if err != nil {
		t.Fatalf("the same page with 94 units left: %v", err)
	}
	if again.units != 0 || !equalIDs(again.ids, first.ids) || again.token != first.token {
		t.Fatalf("repeated page: %d units, same rows %v, same token %v", again.units, equalIDs(again.ids, first.ids), again.token == first.token)
	}
	if used, _ := h.used(t); used != 606 || h.sim.Usage() != 606 {
		t.Fatalf("ledger %d, simulator %d, want 606 each", used, h.sim.Usage())
	}
	q.token = first.token
	if _, err := h.list(context.Background(), q); code(err) != codes.ResourceExhausted {
		t.Fatalf("a new page over budget: %v, want RESOURCE_EXHAUSTED", err)
	}
}
