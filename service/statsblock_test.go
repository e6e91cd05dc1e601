package service

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
)

// TestStatsBlockHasIPsAndSubnets: the v2 refdomains stats block had ips and
// class_c next to the counts. With include_ips they come from v3's
// batch-analysis, agree with the ip_source of the live referring domains
// the refdomains dataset lists, and cost what EstimateCost said.
func TestStatsBlockHasIPsAndSubnets(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.sim.SetCacheTTL(-1)
	ctx := context.Background()
	req := &v1.GetBacklinksStatsRequest{Target: "sized-3000.example", IncludeIps: true}
	est, err := h.backlinks.EstimateCost(ctx, &v1.EstimateCostRequest{Request: &v1.EstimateCostRequest_Stats{Stats: req}})
	if err != nil {
		t.Fatal(err)
	}
	before := h.sim.Usage()
	resp, err := h.backlinks.GetBacklinksStats(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	charged := h.sim.Usage() - before
	if charged != est.GetFirstPageUnits() || charged != resp.GetCost().GetUnitsCharged() || resp.GetCost().GetUpstreamRequests() != 2 {
		t.Errorf("charged %d (response says %d in %d requests), estimated %d", charged, resp.GetCost().GetUnitsCharged(),
			resp.GetCost().GetUpstreamRequests(), est.GetFirstPageUnits())
	}

	st, err := h.backlinks.StreamRefDomains(ctx, &v1.StreamRefDomainsRequest{Target: "sized-3000.example", History: "live",
		Select: []string{"domain", "ip_source"}})
	if err != nil {
		t.Fatal(err)
	}
	ips, nets, domains := map[string]bool{}, map[string]bool{}, 0
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range m.GetRefDomains() {
			domains++
			if d.IpSource != nil {
				ips[d.GetIpSource()] = true
				nets[d.GetIpSource()[:strings.LastIndexByte(d.GetIpSource(), '.')]] = true
			}
		}
	}
	if int64(domains) != resp.GetLiveRefdomains() {
		t.Errorf("%d live referring domains listed, stats say %d", domains, resp.GetLiveRefdomains())
	}
	if resp.Refips == nil || resp.GetRefips() != int64(len(ips)) || resp.GetRefipsSubnets() != int64(len(nets)) || len(nets) == 0 {
		t.Errorf("refips %v subnets %v; the live referring domains have %d IPs in %d subnets", resp.Refips, resp.RefipsSubnets, len(ips), len(nets))
	}

	plain, err := h.backlinks.GetBacklinksStats(ctx, &v1.GetBacklinksStatsRequest{Target: "sized-3000.example"})
	if err != nil || plain.Refips != nil || plain.GetCost().GetUpstreamRequests() != 1 {
		t.Errorf("without include_ips: %v, refips %v", err, plain.Refips)
	}
}
