package service

import (
	"context"
	"slices"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/upstream"
)

// statsLabel is the ledger label of backlinks-stats calls.
const statsLabel = "backlinks_stats"

// EstimateCost prices a request as the pager would run it, without calling
// the upstream. It refuses what the RPC it prices would refuse, page token
// included.
func (s *BacklinksServer) EstimateCost(ctx context.Context, req *v1.EstimateCostRequest) (*v1.EstimateCostResponse, error) {
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
	case *v1.EstimateCostRequest_Stats:
		sq, err := s.statsQuery(ctx, r.Stats)
		if err != nil {
			return nil, err
		}
		units, requests := upstream.StatsUnits(sq.IPs), int64(1)
		if sq.IPs {
			requests = 2
		}
		return &v1.EstimateCostResponse{PerRowUnits: int64(upstream.StatsPerRow(sq.IPs)), FirstPageUnits: units, UnitsForRows: units,
			Pages: requests, ListUnitsForRows: units, ListPages: requests, PageSize: 1, StreamPageRows: 1}, nil
	default:
		return nil, toStatus(badField("request", "name the request to estimate: backlinks, ref_domains, broken_backlinks, new_lost_backlinks or stats"), "")
	}
	if n := req.GetRows(); n < 0 || n > MaxRows {
		return nil, toStatus(badField("rows", "must be between 0 and %d, got %d", int64(MaxRows), n), "")
	}
	var (
		pr    *prepared
		feeds []*plan
		err   error
	)
	if d == newLostData {
		if pr, _, err = s.prepareEvents(ctx, lr, DefaultListPageSize); err != nil {
			return nil, within(prefix, err)
		}
		for _, f := range pr.plan.feeds {
			feeds = append(feeds, f.plan)
		}
	} else {
		if pr, err = s.prepare(ctx, d, lr, DefaultListPageSize); err != nil {
			return nil, within(prefix, err)
		}
		feeds = []*plan{pr.plan}
	}
	// Under the key's learned row cap pages keep fewer rows beside the
	// probe row.
	streamRows, listRows := s.pager.pageRows(s.cfg.UpstreamPageRows, 0), s.pager.pageRows(pr.pageSize, 0)
	resp := &v1.EstimateCostResponse{PageSize: int32(pr.pageSize), StreamPageRows: int32(streamRows)}
	rows := req.GetRows()
	if rows == 0 {
		rows = int64(pr.pageSize)
	}
	seen := map[string]*v1.ChargedField{}
	for _, fp := range feeds {
		perRow := fp.perRow()
		resp.PerRowUnits = max(resp.PerRowUnits, int64(perRow))
		// A List page asks for page_size rows and one more, to tell whether
		// another page follows.
		resp.FirstPageUnits += upstream.Units(perRow, listRows+1)
		u, n := pagedCost(perRow, rows, streamRows)
		resp.UnitsForRows, resp.Pages = resp.UnitsForRows+u, resp.Pages+n
		u, n = pagedCost(perRow, rows, listRows)
		resp.ListUnitsForRows, resp.ListPages = resp.ListUnitsForRows+u, max(resp.ListPages, n)
		for _, c := range fp.query.Charges() {
			cf := seen[c.Field]
			if cf == nil {
				cf = &v1.ChargedField{Field: c.Field, Units: int64(c.Cost)}
				seen[c.Field] = cf
				resp.ChargedFields = append(resp.ChargedFields, cf)
			}
			for _, in := range c.In {
				reason := v1.ChargeReason_CHARGE_REASON_UNSPECIFIED
				switch {
				case in == "select" && slices.Contains(pr.plan.selected, c.Field):
					reason = v1.ChargeReason_CHARGE_REASON_SELECTED
				case in == "where":
					reason = v1.ChargeReason_CHARGE_REASON_FILTERED
				case in == "order_by" && slices.Contains(pr.plan.tieBreakerFields, c.Field):
					reason = v1.ChargeReason_CHARGE_REASON_TIE_BREAKER
				case in == "order_by":
					reason = v1.ChargeReason_CHARGE_REASON_ORDERED
				}
				if reason != v1.ChargeReason_CHARGE_REASON_UNSPECIFIED && !slices.Contains(cf.Reasons, reason) {
					cf.Reasons = append(cf.Reasons, reason)
				}
			}
		}
	}
	return resp, nil
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

// pagedCost is what reading rows rows costs and how many upstream requests
// it makes, in pages of size rows, by stream or by List. Every page asks for
// one row more than it keeps, which tells whether the data goes on (so the
// end never costs a request of its own); the next page, or the page a token
// resumes, starts at that row, so it is not paid twice. It is closed-form,
// so any rows costs the same few operations.
func pagedCost(perRow int, rows int64, size int) (units, pages int64) {
	if rows <= 0 || size <= 0 {
		return 0, 0
	}
	n := int64(size)
	pages = (rows + n - 1) / n
	last := rows - (pages-1)*n
	units = (pages-1)*upstream.Units(perRow, int(n+1)) + upstream.Units(perRow, int(last+1))
	return units, pages
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
		return upstream.StatsQuery{}, toStatus(badField("target", "is required: a domain or URL"), "")
	}
	day := s.cfg.Now().UTC().Truncate(24 * time.Hour)
	if req.GetDate() != "" {
		var err error
		if day, err = time.Parse(time.DateOnly, req.GetDate()); err != nil {
			return upstream.StatsQuery{}, toStatus(badField("date", "needs a date YYYY-MM-DD, got %q", req.GetDate()), "")
		}
	}
	return upstream.StatsQuery{Target: target, Mode: modes[req.GetMode()], Protocol: protocols[req.GetProtocol()], Date: day,
		IPs: req.GetIncludeIps()}, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
