package service

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/paging"
)

// TestEstimateAgreesWithCharges: what EstimateCost says is what List
// paging, a stream and a stats call then cost, with the simulator's cache
// off so that every page is paid.
func TestEstimateAgreesWithCharges(t *testing.T) {
	h := newHarness(t, harnessOptions{pageRows: 1000})
	h.sim.SetCacheTTL(-1)
	ctx := context.Background()
	estimate := func(req *v1.EstimateCostRequest) *v1.EstimateCostResponse {
		t.Helper()
		r, err := h.backlinks.EstimateCost(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	spent := func(f func()) int64 {
		before := h.sim.Usage()
		f()
		return h.sim.Usage() - before
	}

	// Three 10-row List pages, each of 11 rows: the next starts at the
	// probe row of the one before (the report: 210 units charged, 186
	// estimated, when a token started at the last row returned).
	lr := &v1.ListBacklinksRequest{Target: "sized-500.example", PageSize: 10}
	e := estimate(&v1.EstimateCostRequest{Request: &v1.EstimateCostRequest_Backlinks{Backlinks: lr}, Rows: 30})
	got := spent(func() {
		q := query{data: paging.Backlinks, p: paging.Params{Target: "sized-500.example"}, pageSize: 10}
		for range 3 {
			s, err := h.list(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			q.token = s.token
		}
	})
	if e.GetListUnitsForRows() != got || e.GetListPages() != 3 || e.GetPageSize() != 10 {
		t.Errorf("three List pages: estimated %d units in %d calls (page size %d), charged %d", e.GetListUnitsForRows(), e.GetListPages(), e.GetPageSize(), got)
	}

	// A stream whose result is an exact multiple of the upstream page: no
	// request is made only to learn that nothing follows.
	e = estimate(&v1.EstimateCostRequest{Request: &v1.EstimateCostRequest_Backlinks{Backlinks: &v1.ListBacklinksRequest{Target: "sized-2000.example"}}, Rows: 2000})
	var requests int32
	got = spent(func() {
		st, err := h.backlinks.StreamBacklinks(ctx, &v1.StreamBacklinksRequest{Target: "sized-2000.example"})
		if err != nil {
			t.Fatal(err)
		}
		for {
			m, err := st.Recv()
			if err != nil {
				break
			}
			requests += m.GetCost().GetUpstreamRequests()
		}
	})
	// The estimate prices the probe row of the last page, which the end of
	// the data does not return: the charge is at most 6 units less.
	if e.GetUnitsForRows() < got || e.GetUnitsForRows()-got > 6 || e.GetPages() != 2 || requests != 2 || e.GetStreamPageRows() != 1000 {
		t.Errorf("stream of 2000 rows: estimated %d units in %d pages of %d, charged %d in %d requests", e.GetUnitsForRows(), e.GetPages(), e.GetStreamPageRows(), got, requests)
	}

	// A stream cut by max_rows.
	e = estimate(&v1.EstimateCostRequest{Request: &v1.EstimateCostRequest_Backlinks{Backlinks: &v1.ListBacklinksRequest{Target: "sized-5000.example"}}, Rows: 2500})
	got = spent(func() {
		q := query{data: paging.Backlinks, p: paging.Params{Target: "sized-5000.example"}, maxRows: 2500}
		if _, err := h.stream(ctx, q); err != nil {
			t.Fatal(err)
		}
	})
	if e.GetUnitsForRows() != got {
		t.Errorf("stream of 2500 rows: estimated %d, charged %d", e.GetUnitsForRows(), got)
	}

	// Stats.
	sr := &v1.GetBacklinksStatsRequest{Target: "sized-700.example", Date: "2026-11-01"}
	e = estimate(&v1.EstimateCostRequest{Request: &v1.EstimateCostRequest_Stats{Stats: sr}})
	got = spent(func() {
		if _, err := h.backlinks.GetBacklinksStats(ctx, sr); err != nil {
			t.Fatal(err)
		}
	})
	if e.GetFirstPageUnits() != got || e.GetUnitsForRows() != got {
		t.Errorf("stats: estimated %d, charged %d", e.GetFirstPageUnits(), got)
	}

	// A new/lost window: the estimate bounds what it costs.
	nl := &v1.ListNewLostBacklinksRequest{Target: "sized-3000.example", Since: "2025-06-01", PageSize: 1000}
	e = estimate(&v1.EstimateCostRequest{Request: &v1.EstimateCostRequest_NewLostBacklinks{NewLostBacklinks: nl}, Rows: 1000})
	got = spent(func() {
		if _, err := h.backlinks.ListNewLostBacklinks(ctx, nl); err != nil {
			t.Fatal(err)
		}
	})
	if got == 0 || e.GetFirstPageUnits() < got || e.GetListUnitsForRows() < got {
		t.Errorf("new/lost page: estimated %d (first page) %d (list), charged %d", e.GetFirstPageUnits(), e.GetListUnitsForRows(), got)
	}
}

// TestEstimateRefusesWhatListRefuses: a page token List would reject, or a
// stats request without a target, is INVALID_ARGUMENT here too.
func TestEstimateRefusesWhatListRefuses(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	for name, req := range map[string]*v1.EstimateCostRequest{
		"bad token": {Request: &v1.EstimateCostRequest_Backlinks{Backlinks: &v1.ListBacklinksRequest{Target: "x.example", PageToken: "garbage"}}},
		"new/lost bad token": {Request: &v1.EstimateCostRequest_NewLostBacklinks{NewLostBacklinks: &v1.ListNewLostBacklinksRequest{
			Target: "x.example", Since: "2025-01-01", PageToken: "garbage"}}},
		"stats without target": {Request: &v1.EstimateCostRequest_Stats{Stats: &v1.GetBacklinksStatsRequest{}}},
		"negative page size":   {Request: &v1.EstimateCostRequest_Backlinks{Backlinks: &v1.ListBacklinksRequest{Target: "x.example", PageSize: -1}}},
	} {
		if _, err := h.backlinks.EstimateCost(ctx, req); code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want INVALID_ARGUMENT", name, err)
		}
	}
	// A token from another request is refused as List refuses it.
	first, err := h.backlinks.ListBacklinks(ctx, &v1.ListBacklinksRequest{Target: "sized-300.example", PageSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.backlinks.EstimateCost(ctx, &v1.EstimateCostRequest{Request: &v1.EstimateCostRequest_Backlinks{Backlinks: &v1.ListBacklinksRequest{
		Target: "sized-300.example", PageSize: 10, PageToken: first.GetNextPageToken(), OrderBy: "anchor"}}})
	if code(err) != codes.InvalidArgument {
		t.Errorf("a token of another request: %v", err)
	}
}
