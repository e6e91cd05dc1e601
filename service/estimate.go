package service

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/service/filter"
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
		d      *dataset
		lr     listRequest
		prefix string // the oneof field, which names the inner request's fields in errors
	)
	switch r := req.GetRequest().(type) {
	case *v1.EstimateCostRequest_Backlinks:
		d, lr, prefix = backlinksData, r.Backlinks, "backlinks."
	case *v1.EstimateCostRequest_RefDomains:
		d, lr, prefix = refDomainsData, r.RefDomains, "ref_domains."
	case *v1.EstimateCostRequest_BrokenBacklinks:
		d, lr, prefix = brokenBacklinksData, r.BrokenBacklinks, "broken_backlinks."
	case *v1.EstimateCostRequest_NewLostBacklinks:
		d, lr, prefix = newLostData, r.NewLostBacklinks, "new_lost_backlinks."
	default:
		return nil, toStatus(badField("request", "name the request to estimate: backlinks, ref_domains, broken_backlinks or new_lost_backlinks"), "")
	}
	if n := req.GetRows(); n < 0 || n > MaxRows {
		return nil, toStatus(badField("rows", "must be between 0 and %d, got %d", int64(MaxRows), n), "")
	}
	pl, err := compile(d, paramsOf(lr), caller.Tenant)
	if err != nil {
		return nil, toStatus(within(prefix, err), "")
	}
	size, err := pageSize(lr.GetPageSize(), DefaultListPageSize)
	if err != nil {
		return nil, toStatus(within(prefix, err), "")
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

// within names the field of a caller error as a path inside the request
// (backlinks.filter), as the bounds name them.
func within(prefix string, err error) error {
	var (
		invalid   *InvalidArgument
		filterErr *filter.Error
	)
	switch {
	case errors.As(err, &invalid):
		return &InvalidArgument{Field: prefix + invalid.Field, Description: invalid.Description}
	case errors.As(err, &filterErr):
		return &InvalidArgument{Field: prefix + "filter", Description: strings.TrimPrefix(filterErr.Error(), "filter: ")}
	}
	return err
}

// streamCost is what a stream of rows rows costs and how many upstream
// requests it makes: pages of pageRows rows, every page after the first
// asking again for the last row of the one before (the keyset continuation
// starts at the last key), the last page asking for one more row to tell
// whether the data goes on. It is closed-form, so any rows costs the same
// few operations: a first page of pageRows rows, pages-2 middle pages of
// pageRows+1, and a last page of its rows plus the overlap and the probe.
func streamCost(perRow int, rows int64, pageRows int) (units, pages int64) {
	if rows <= 0 || pageRows <= 0 {
		return 0, 0
	}
	size := int64(pageRows)
	pages = (rows + size - 1) / size
	last := rows - (pages-1)*size
	if pages == 1 {
		return upstream.Units(perRow, int(rows+1)), 1
	}
	units = upstream.Units(perRow, int(size)) +
		(pages-2)*upstream.Units(perRow, int(size+1)) +
		upstream.Units(perRow, int(last+2))
	return units, pages
}

// GetBacklinksStats returns a target's backlink and referring domain counts.
func (s *BacklinksServer) GetBacklinksStats(ctx context.Context, req *v1.GetBacklinksStatsRequest) (*v1.GetBacklinksStatsResponse, error) {
	caller, ok := CallerFrom(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no caller")
	}
	target := strings.TrimSpace(req.GetTarget())
	if target == "" {
		return nil, toStatus(badField("target", "is required: a domain or URL"), "")
	}
	day := s.cfg.Now().UTC().Truncate(24 * time.Hour)
	if req.GetDate() != "" {
		var err error
		if day, err = time.Parse(time.DateOnly, req.GetDate()); err != nil {
			return nil, toStatus(badField("date", "needs a date YYYY-MM-DD, got %q", req.GetDate()), "")
		}
	}
	ledgerCtx := context.WithoutCancel(ctx)
	res, err := s.cfg.Ledger.Reserve(ledgerCtx, caller.Tenant, statsLabel, upstream.Units(statsPerRow, 1))
	if err != nil {
		return nil, toStatus(err, "")
	}
	stats, cost, err := s.cfg.Upstream.BacklinksStats(ctx, upstream.StatsQuery{
		Target: target, Mode: modes[req.GetMode()], Protocol: protocols[req.GetProtocol()], Date: day,
	})
	if cost.Known {
		err = errors.Join(err, s.cfg.Ledger.Settle(ledgerCtx, res, cost.Actual))
	} else {
		err = errors.Join(err, s.cfg.Ledger.Release(ledgerCtx, res))
	}
	if err != nil {
		return nil, toStatus(err, "")
	}
	pc := &v1.PageCost{UnitsCharged: cost.Actual, Cached: cost.Cache == "hit", UpstreamRequests: 1}
	if u, err := s.cfg.Ledger.Usage(ledgerCtx, caller.Tenant); err == nil {
		pc.RemainingUnits = remaining(u)
	}
	return &v1.GetBacklinksStatsResponse{
		Live: stats.Live, AllTime: stats.AllTime, LiveRefdomains: stats.LiveRefdomains,
		AllTimeRefdomains: stats.AllTimeRefdomains, Cost: pc,
	}, nil
}
