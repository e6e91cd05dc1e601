package upstream

import (
	"context"
	"encoding/json"
	"io"
	"net/url"
	"strings"
	"time"
)

// maxObjectBody bounds the bodies of the small object endpoints, which are
// decoded whole: a few hundred bytes in practice.
const maxObjectBody = 1 << 20

// LimitsAndUsage is the key's subscription and unit usage, from the free
// limits-and-usage endpoint.
type LimitsAndUsage struct {
	Subscription         string
	UsageResetDate       time.Time // start of the next billing period (UTC midnight)
	UnitsLimitWorkspace  *int64    // nil: not reported
	UnitsUsageWorkspace  *int64    // nil: not reported
	UnitsLimitAPIKey     *int64    // nil: unlimited
	UnitsUsageAPIKey     int64     // units this key used in the current billing month
	APIKeyExpirationDate time.Time // zero when absent
}

// LimitsAndUsage reads the key's limits and usage. The endpoint is free but
// still counts against the rate limit, so it shares the key's limiter.
func (c *Client) LimitsAndUsage(ctx context.Context) (LimitsAndUsage, error) {
	var out LimitsAndUsage
	_, err := c.call(ctx, LimitsAndUsagePath, url.Values{"output": {"json"}}, 0, func(body io.Reader) (int, error) {
		var doc struct {
			L *struct {
				Subscription         string  `json:"subscription"`
				UsageResetDate       *string `json:"usage_reset_date"`
				UnitsLimitWorkspace  *int64  `json:"units_limit_workspace"`
				UnitsUsageWorkspace  *int64  `json:"units_usage_workspace"`
				UnitsLimitAPIKey     *int64  `json:"units_limit_api_key"`
				UnitsUsageAPIKey     *int64  `json:"units_usage_api_key"`
				APIKeyExpirationDate *string `json:"api_key_expiration_date"`
			} `json:"limits_and_usage"`
		}
		if err := decodeObject(body, &doc); err != nil {
			return 0, err
		}
		l := doc.L
		if l == nil {
			return 0, malformed(`no "limits_and_usage" key in the response`)
		}
		if l.UnitsUsageAPIKey == nil {
			// The reconciler would read a missing usage as zero spend.
			return 0, malformed(`no "units_usage_api_key" in the response`)
		}
		var err error
		if out.UsageResetDate, err = optionalTime("usage_reset_date", l.UsageResetDate); err != nil {
			return 0, err
		}
		if out.APIKeyExpirationDate, err = optionalTime("api_key_expiration_date", l.APIKeyExpirationDate); err != nil {
			return 0, err
		}
		out.Subscription = l.Subscription
		out.UnitsLimitWorkspace = l.UnitsLimitWorkspace
		out.UnitsUsageWorkspace = l.UnitsUsageWorkspace
		out.UnitsLimitAPIKey = l.UnitsLimitAPIKey
		out.UnitsUsageAPIKey = *l.UnitsUsageAPIKey
		return 0, nil
	})
	if err != nil {
		return LimitsAndUsage{}, err
	}
	return out, nil
}

// UpstreamUsage is what the quota reconciler needs: the units this key used
// in the current billing month (units_usage_api_key) and the date usage
// resets.
func (c *Client) UpstreamUsage(ctx context.Context) (used int64, resetDate time.Time, err error) {
	l, err := c.LimitsAndUsage(ctx)
	if err != nil {
		return 0, time.Time{}, err
	}
	return l.UnitsUsageAPIKey, l.UsageResetDate, nil
}

// StatsQuery asks backlinks-stats about a target on a date.
type StatsQuery struct {
	Target   string
	Mode     Mode     // "" means subdomains
	Protocol Protocol // "" means both
	Date     time.Time
	// IPs asks also for the referring IPs and class C subnets, which v3
	// reports in batch-analysis (refips, refips_subnets), not in
	// backlinks-stats: a second request.
	IPs bool
}

// Stats are the backlink and referring-domain totals of a target.
type Stats struct {
	Live              int64
	AllTime           int64
	LiveRefdomains    int64
	AllTimeRefdomains int64
	// RefIPs and RefIPsSubnets are the distinct IP addresses and class C
	// (/24) subnets of the live referring domains, as of the latest crawl
	// (batch-analysis has no date); set when the query asked for IPs.
	RefIPs, RefIPsSubnets int64
}

// statsPerRow is the catalog price of backlinks-stats: live and all_time at
// 1 unit, the two refdomains counts at 5 (the spec's field descriptions).
const statsPerRow = 1 + 1 + 5 + 5

// BatchAnalysisPath is v3's batch-analysis, a POST of up to
// MaxBatchTargets targets with the metrics to select. The spec gives it no
// query parameters: everything, output included, is in the JSON body.
const BatchAnalysisPath = "/v3/batch-analysis/batch-analysis"

// MaxBatchTargets is the most targets one batch-analysis request may carry
// (the spec's maxItems).
const MaxBatchTargets = 100

// ipsPerRow is the price of refips and refips_subnets for one target. The
// spec annotates the fields that cost more (5 or 10 units); these two carry
// no annotation, so they cost the default 1 unit each.
const ipsPerRow = 1 + 1

// StatsUnits is the most a stats query costs: one backlinks-stats row, and
// with IPs one batch-analysis row, each with its 50-unit floor.
func StatsUnits(ips bool) int64 {
	u := Units(statsPerRow, 1)
	if ips {
		u += Units(ipsPerRow, 1)
	}
	return u
}

// StatsRequests is the number of requests a stats query makes: include_ips
// reads refips from batch-analysis in a second one.
func StatsRequests(ips bool) int {
	if ips {
		return 2
	}
	return 1
}

// StatsPerRow is the per-row price of a stats query's fields, both
// requests together.
func StatsPerRow(ips bool) int {
	if ips {
		return statsPerRow + ipsPerRow
	}
	return statsPerRow
}

// BacklinksStats reads the totals of a target. A zero Date means today in
// UTC by the client's clock (the API requires a date). The Cost is returned
// with an error too when the response's headers arrived.
func (c *Client) BacklinksStats(ctx context.Context, q StatsQuery) (Stats, Result, error) {
	if strings.TrimSpace(q.Target) == "" {
		return Stats{}, Result{}, invalid("target", "", "is required")
	}
	switch q.Mode {
	case "", ModeExact, ModePrefix, ModeDomain, ModeSubdomains:
	default:
		return Stats{}, Result{}, invalid("mode", "", "must be exact, prefix, domain or subdomains, not %q", q.Mode)
	}
	switch q.Protocol {
	case "", ProtocolBoth, ProtocolHTTP, ProtocolHTTPS:
	default:
		return Stats{}, Result{}, invalid("protocol", "", "must be both, http or https, not %q", q.Protocol)
	}
	date := q.Date
	if date.IsZero() {
		date = c.cfg.Clock.Now()
	}
	v := url.Values{
		"target": {q.Target},
		"date":   {date.UTC().Format(time.DateOnly)},
		"output": {"json"},
	}
	if q.Mode != "" {
		v.Set("mode", string(q.Mode))
	}
	if q.Protocol != "" {
		v.Set("protocol", string(q.Protocol))
	}
	var out Stats
	res, err := c.call(ctx, BacklinksStatsPath, v, statsPerRow, func(body io.Reader) (int, error) {
		var doc struct {
			M *struct {
				Live              *int64 `json:"live"`
				AllTime           *int64 `json:"all_time"`
				LiveRefdomains    *int64 `json:"live_refdomains"`
				AllTimeRefdomains *int64 `json:"all_time_refdomains"`
			} `json:"metrics"`
		}
		if err := decodeObject(body, &doc); err != nil {
			return 0, err
		}
		if doc.M == nil {
			return 0, malformed(`no "metrics" key in the response`)
		}
		out = Stats{
			Live:              deref(doc.M.Live),
			AllTime:           deref(doc.M.AllTime),
			LiveRefdomains:    deref(doc.M.LiveRefdomains),
			AllTimeRefdomains: deref(doc.M.AllTimeRefdomains),
		}
		return 0, nil
	})
	if err != nil || !q.IPs {
		return out, res, err
	}
	ips, more, err := c.refIPs(ctx, q)
	out.RefIPs, out.RefIPsSubnets = ips.RefIPs, ips.RefIPsSubnets
	return out, res.and(more), err
}

// refIPs reads a target's refips and refips_subnets from batch-analysis.
func (c *Client) refIPs(ctx context.Context, q StatsQuery) (Stats, Result, error) {
	target := map[string]string{"url": q.Target, "mode": string(q.Mode), "protocol": string(q.Protocol)}
	if q.Mode == "" {
		target["mode"] = string(ModeSubdomains)
	}
	if q.Protocol == "" {
		target["protocol"] = string(ProtocolBoth)
	}
	body, err := json.Marshal(map[string]any{"select": []string{"refips", "refips_subnets"}, "targets": []any{target}, "output": "json"})
	if err != nil {
		return Stats{}, Result{}, err
	}
	var out Stats
	res, err := c.send(ctx, BatchAnalysisPath, nil, body, ipsPerRow, func(body io.Reader) (int, error) {
		var doc struct {
			Targets []struct {
				RefIPs        *int64 `json:"refips"`
				RefIPsSubnets *int64 `json:"refips_subnets"`
			} `json:"targets"`
		}
		if err := decodeObject(body, &doc); err != nil {
			return 0, err
		}
		if len(doc.Targets) != 1 {
			return 0, malformed("batch-analysis answered %d targets for one", len(doc.Targets))
		}
		out.RefIPs, out.RefIPsSubnets = deref(doc.Targets[0].RefIPs), deref(doc.Targets[0].RefIPsSubnets)
		return 1, nil
	})
	return out, res, err
}

// and is the result of two requests made as one call.
func (r Result) and(s Result) Result {
	return Result{Rows: r.Rows + s.Rows, Cost: addCosts(r.Cost, s.Cost), Spent: r.Spent + s.Spent,
		Attempts: r.Attempts + s.Attempts, Unanswered: r.Unanswered || s.Unanswered}
}

// addCosts is the cost of two requests made as one call.
func addCosts(a, b Cost) Cost {
	if !b.Known {
		return a
	}
	if !a.Known {
		return b
	}
	cache := a.Cache
	if a.Cache != b.Cache {
		cache = "miss"
	}
	return Cost{Rows: a.Rows + b.Rows, PerRow: a.PerRow + b.PerRow, Total: a.Total + b.Total, Actual: a.Actual + b.Actual,
		Cache: cache, Known: true, Estimated: a.Estimated || b.Estimated}
}

func deref(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

// decodeObject reads a small JSON object whole, classifying errors as
// decodeRows does.
func decodeObject(body io.Reader, v any) error {
	data, err := io.ReadAll(io.LimitReader(body, maxObjectBody+1))
	if err != nil {
		return readErr(err)
	}
	if len(data) > maxObjectBody {
		return malformed("response larger than %d bytes", maxObjectBody)
	}
	if err := json.Unmarshal(data, v); err != nil {
		if len(data) == 0 {
			return io.ErrUnexpectedEOF
		}
		return malformed("invalid JSON: %v", err)
	}
	return nil
}

func optionalTime(name string, s *string) (time.Time, error) {
	if s == nil || *s == "" {
		return time.Time{}, nil
	}
	t, err := ParseTime(*s)
	if err != nil {
		return time.Time{}, malformed("%s: %v", name, err)
	}
	return t, nil
}
