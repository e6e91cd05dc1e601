package service

import (
	"context"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/paging"
	"github.com/linkgate/linkgate/upstream"
)

// statsLabel is the ledger label of backlinks-stats calls.
const statsLabel = "backlinks_stats"

// EstimateCost prices a request as the pager would run it, without calling
// the upstream. It refuses what the RPC it prices would refuse, page token
// included.
func (s *BacklinksServer) EstimateCost(ctx context.Context, req *v1.EstimateCostRequest) (*v1.EstimateCostResponse, error) {
	ctx, err := checkOnce(ctx, req) // rows, and the inner request's fields by their paths
	if err != nil {
		return nil, err
	}
	var (
		d      *paging.Dataset
		lr     listRequest
		prefix string // the oneof field, which names the inner request's fields in errors
	)
	switch r := req.GetRequest().(type) {
	case *v1.EstimateCostRequest_Backlinks:
		d, lr, prefix = paging.Backlinks, r.Backlinks, "backlinks."
	case *v1.EstimateCostRequest_RefDomains:
		d, lr, prefix = paging.RefDomains, r.RefDomains, "ref_domains."
	case *v1.EstimateCostRequest_BrokenBacklinks:
		d, lr, prefix = paging.BrokenBacklinks, r.BrokenBacklinks, "broken_backlinks."
	case *v1.EstimateCostRequest_NewLostBacklinks:
		d, lr, prefix = paging.NewLost, r.NewLostBacklinks, "new_lost_backlinks."
	case *v1.EstimateCostRequest_Stats:
		sq, err := s.statsQuery(ctx, r.Stats)
		if err != nil {
			return nil, err
		}
		units, requests := upstream.StatsUnits(sq.IPs), int64(upstream.StatsRequests(sq.IPs))
		return &v1.EstimateCostResponse{PerRowUnits: int64(upstream.StatsPerRow(sq.IPs)), FirstPageUnits: units, UnitsForRows: units,
			Pages: requests, ListUnitsForRows: units, ListPages: requests, PageSize: 1, StreamPageRows: 1}, nil
	default:
		return nil, toStatus(paging.BadField("request", "name the request to estimate: backlinks, ref_domains, broken_backlinks, new_lost_backlinks or stats"), "")
	}
	r, err := s.prepare(ctx, d, lr, DefaultListPageSize)
	if err != nil {
		return nil, within(prefix, err)
	}
	e := s.engine.Estimate(r.Plan, r.PageSize, req.GetRows())
	resp := &v1.EstimateCostResponse{PerRowUnits: e.PerRowUnits, FirstPageUnits: e.FirstPageUnits,
		UnitsForRows: e.UnitsForRows, Pages: e.Pages, ListUnitsForRows: e.ListUnitsForRows, ListPages: e.ListPages,
		PageSize: int32(e.PageSize), StreamPageRows: int32(e.StreamPageRows)}
	for _, c := range e.Charged {
		cf := &v1.ChargedField{Field: c.Field, Units: c.Units}
		for _, r := range c.Reasons {
			cf.Reasons = append(cf.Reasons, chargeReasons[r])
		}
		resp.ChargedFields = append(resp.ChargedFields, cf)
	}
	return resp, nil
}

var chargeReasons = map[paging.ChargeReason]v1.ChargeReason{
	paging.ChargeSelected:   v1.ChargeReason_CHARGE_REASON_SELECTED,
	paging.ChargeFiltered:   v1.ChargeReason_CHARGE_REASON_FILTERED,
	paging.ChargeTieBreaker: v1.ChargeReason_CHARGE_REASON_TIE_BREAKER,
	paging.ChargeOrdered:    v1.ChargeReason_CHARGE_REASON_ORDERED,
}

// within names the fields of a caller error as paths inside the request
// (backlinks.filter), as the bounds name them.
func within(prefix string, err error) error {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.InvalidArgument {
		return err
	}
	p := st.Proto()
	for i, d := range p.GetDetails() {
		var br errdetails.BadRequest
		if d.UnmarshalTo(&br) != nil {
			continue
		}
		for _, v := range br.GetFieldViolations() {
			v.Field = prefix + v.GetField()
		}
		if named, err := anypb.New(&br); err == nil {
			p.Details[i] = named
		}
	}
	return status.FromProto(p).Err()
}

// GetBacklinksStats returns a target's backlink and referring domain counts.
func (s *BacklinksServer) GetBacklinksStats(ctx context.Context, req *v1.GetBacklinksStatsRequest) (*v1.GetBacklinksStatsResponse, error) {
	caller, ok := CallerFrom(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no caller")
	}
	sq, err := s.statsQuery(ctx, req)
	if err != nil {
		return nil, err
	}
	stats, pc, err := s.backlinksStats(ctx, caller.Tenant, sq)
	if err != nil {
		return nil, toStatus(err, "")
	}
	out := &v1.GetBacklinksStatsResponse{
		Live: stats.Live, AllTime: stats.AllTime, LiveRefdomains: stats.LiveRefdomains,
		AllTimeRefdomains: stats.AllTimeRefdomains, Cost: pc,
	}
	if sq.IPs {
		out.Refips, out.RefipsSubnets = &stats.RefIPs, &stats.RefIPsSubnets
	}
	return out, nil
}

// statsQuery checks a stats request, for GetBacklinksStats and its
// estimate alike.
func (s *BacklinksServer) statsQuery(ctx context.Context, req *v1.GetBacklinksStatsRequest) (upstream.StatsQuery, error) {
	if _, ok := CallerFrom(ctx); !ok {
		return upstream.StatsQuery{}, status.Error(codes.Unauthenticated, "no caller")
	}
	target := strings.TrimSpace(req.GetTarget())
	if target == "" {
		return upstream.StatsQuery{}, toStatus(paging.BadField("target", "is required: a domain or URL"), "")
	}
	day := s.cfg.Clock.Now().UTC().Truncate(24 * time.Hour)
	if req.GetDate() != "" {
		var err error
		if day, err = time.Parse(time.DateOnly, req.GetDate()); err != nil {
			return upstream.StatsQuery{}, toStatus(paging.BadField("date", "needs a date YYYY-MM-DD, got %q", req.GetDate()), "")
		}
	}
	return upstream.StatsQuery{Target: target, Mode: modes[req.GetMode()], Protocol: protocols[req.GetProtocol()], Date: day,
		IPs: req.GetIncludeIps()}, nil
}
