package service

import (
	"context"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/upstream"
)

// statsLabel is the ledger label of backlinks-stats calls.
const statsLabel = "backlinks_stats"

// statsPerRow is the per-row cost of backlinks-stats: live and all_time
// cost 1 unit each, the two refdomains counts 5 each.
const statsPerRow = 12

// EstimateCost prices a request as the pager would run it, without calling
// the upstream.
func (s *BacklinksServer) EstimateCost(ctx context.Context, req *v1.EstimateCostRequest) (*v1.EstimateCostResponse, error) {
	caller, ok := CallerFrom(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no caller")
	}
	var (
		d  *dataset
		lr listRequest
	)
	switch r := req.GetRequest().(type) {
	case *v1.EstimateCostRequest_Backlinks:
		d, lr = backlinksData, r.Backlinks
	case *v1.EstimateCostRequest_RefDomains:
		d, lr = refDomainsData, r.RefDomains
	case *v1.EstimateCostRequest_BrokenBacklinks:
		d, lr = brokenBacklinksData, r.BrokenBacklinks
	case *v1.EstimateCostRequest_NewLostBacklinks:
		d, lr = newLostData, r.NewLostBacklinks
	default:
		return nil, toStatus(badField("request", "name the request to estimate: backlinks, ref_domains, broken_backlinks or new_lost_backlinks"), "")
	}
	if req.GetRows() < 0 {
		return nil, toStatus(badField("rows", "must not be negative"), "")
	}
	pl, err := compile(d, paramsOf(lr), caller.Tenant)
	if err != nil {
		return nil, toStatus(err, "")
	}
	size, err := pageSize(lr.GetPageSize(), DefaultListPageSize)
	if err != nil {
		return nil, toStatus(err, "")
	}
	perRow := pl.perRow()
	resp := &v1.EstimateCostResponse{
		PerRowUnits: int64(perRow),
		// A List page asks for page_size rows and one more, to tell whether
		// another page follows.
		FirstPageUnits: upstream.Units(perRow, size+1),
		PageSize:       int32(size),
	}
	resp.UnitsForRows, resp.Pages = streamCost(perRow, req.GetRows(), s.cfg.UpstreamPageRows)
	for _, c := range pl.query.Charges() {
		cf := &v1.ChargedField{Field: c.Field, Units: int64(c.Cost)}
		for _, in := range c.In {
			switch {
			case in == "select" && slices.Contains(pl.selected, c.Field):
				cf.Reasons = append(cf.Reasons, v1.ChargeReason_CHARGE_REASON_SELECTED)
			case in == "where":
				cf.Reasons = append(cf.Reasons, v1.ChargeReason_CHARGE_REASON_FILTERED)
			case in == "order_by" && slices.Contains(pl.tieBreakerFields, c.Field):
				cf.Reasons = append(cf.Reasons, v1.ChargeReason_CHARGE_REASON_TIE_BREAKER)
			case in == "order_by":
				cf.Reasons = append(cf.Reasons, v1.ChargeReason_CHARGE_REASON_ORDERED)
			}
		}
		resp.ChargedFields = append(resp.ChargedFields, cf)
	}
	return resp, nil
}

// streamCost is what a stream of rows rows costs and how many upstream
// requests it makes: pages of pageRows rows, every page after the first
// asking again for the last row of the one before (the keyset continuation
// starts at the last key), the last page asking for one more row to tell
// whether the data goes on.
func streamCost(perRow int, rows int64, pageRows int) (units, pages int64) {
	skip := int64(0)
	for left := rows; left > 0; {
		want, probe := min(int64(pageRows), left), int64(0)
		if left <= int64(pageRows) {
			probe = 1
		}
		units += upstream.Units(perRow, int(skip+want+probe))
		pages++
		left -= want
		skip = 1
	}
	return units, pages
}

// GetBacklinksStats returns a target's backlink and referring domain counts.
func (s *BacklinksServer) GetBacklinksStats(ctx context.Context, req *v1.GetBacklinksStatsRequest) (*v1.GetBacklinksStatsResponse, error) {
	caller, ok := CallerFrom(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no caller")
	}
	if req.GetTarget() == "" {
		return nil, toStatus(badField("target", "is required: a domain or URL"), "")
	}
	day := s.cfg.Now().UTC().Truncate(24 * time.Hour)
	if req.GetDate() != "" {
		var err error
		if day, err = time.Parse(time.DateOnly, req.GetDate()); err != nil {
			return nil, toStatus(badField("date", "needs a date YYYY-MM-DD, got %q", req.GetDate()), "")
		}
	}
	stats, pc, err := s.backlinksStats(ctx, caller.Tenant, upstream.StatsQuery{
		Target: req.GetTarget(), Mode: modes[req.GetMode()], Protocol: protocols[req.GetProtocol()], Date: day,
	})
	if err != nil {
		return nil, toStatus(err, "")
	}
	return &v1.GetBacklinksStatsResponse{
		Live: stats.Live, AllTime: stats.AllTime, LiveRefdomains: stats.LiveRefdomains,
		AllTimeRefdomains: stats.AllTimeRefdomains, Cost: pc,
	}, nil
}
