package service

import (
	"context"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/paging"
	"github.com/linkgate/linkgate/scheduler"
	"github.com/linkgate/linkgate/upstream"
)

// statsSpanName is the name of the span of one backlinks-stats call.
const statsSpanName = "linkgate.stats"

// backlinksStats runs one backlinks-stats call through the scheduler, as
// every paid call: interactive class, reserved just before it is sent,
// settled with what the upstream reported, and counted in the same units
// metrics and request log as pages.
func (s *BacklinksServer) backlinksStats(ctx context.Context, tenant string, q upstream.StatsQuery) (upstream.Stats, *v1.PageCost, error) {
	ctx, pt := s.cfg.Telemetry.startCall(ctx, statsSpanName, tenant, statsLabel)
	var stats upstream.Stats
	call := scheduler.Call{
		Tenant: tenant, Label: statsLabel, Class: scheduler.Interactive,
		Units: upstream.StatsUnits(q.IPs),
		Send: func(ctx context.Context) (scheduler.Response, error) {
			st, res, err := s.cfg.Upstream.BacklinksStats(ctx, q)
			stats = st
			return paging.ResponseOf(res), err
		},
	}
	res, err := s.cfg.Scheduler.Do(ctx, call)
	err = panicked(s.cfg.Logger, "stats", err)
	pt.Scheduled(ctx, res, err)
	pt.End(ctx, res, 0, err)
	s.cfg.Telemetry.sent(ctx, tenant, statsLabel, 0, res.Charged)
	if err != nil {
		return upstream.Stats{}, nil, err
	}
	pc := &v1.PageCost{UnitsCharged: res.Charged, Cached: res.UpstreamCached, UpstreamRequests: int32(res.Requests),
		RemainingUnits: res.Remaining}
	return stats, pc, nil
}
