package upstream_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/clock"
	"github.com/linkgate/linkgate/upstream"
	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

type simEnv struct {
	sim *ahrefssim.Server
	c   *upstream.Client
	// clock is shared by the simulator and the client: the client's
	// backoff sleeps advance the simulator's rate-limit window, so
	// Retry-After is honoured end to end without sleeping.
	clock *clock.Fake
}

func newSimEnv(t *testing.T, mod ...func(*upstream.Config)) *simEnv {
	t.Helper()
	clk := clock.NewFake(time.Now().Add(time.Hour).Truncate(time.Second))
	sim := ahrefssim.New(ahrefssim.Config{
		Keys:   []string{"integration-key"},
		Clock:  clk,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	cfg := upstream.Config{
		BaseURL: srv.URL, Key: "integration-key",
		Clock:  clk,
		Jitter: func(d time.Duration) time.Duration { return d },
	}
	for _, m := range mod {
		m(&cfg)
	}
	c, err := upstream.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &simEnv{sim: sim, c: c, clock: clk}
}

// list reads one page of q, its rows keyed by field name (null and absent
// fields are nil).
func (e *simEnv) list(t *testing.T, q *upstream.Query) ([]map[string]any, upstream.Result, error) {
	t.Helper()
	var rows []map[string]any
	res, err := e.c.ListRecords(context.Background(), q, func(r upstream.Record) error {
		row := make(map[string]any, len(r))
		for i, v := range r {
			row[q.Select[i]] = v.Any()
		}
		rows = append(rows, row)
		return nil
	})
	return rows, res, err
}

// sameRows compares the client's rows with the simulator's reference answer
// (which keeps dates as strings).
func sameRows(t *testing.T, got []map[string]any, want []map[string]any) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d rows, want %d", len(got), len(want))
	}
	for i := range want {
		for k, w := range want[i] {
			g := got[i][k]
			if tm, ok := g.(time.Time); ok {
				ws, _ := w.(string)
				wt, err := upstream.ParseTime(ws)
				if err != nil || !tm.Equal(wt) {
					t.Fatalf("row %d %s = %v, want %v", i, k, g, w)
				}
				continue
			}
			if !reflect.DeepEqual(g, w) {
				t.Fatalf("row %d %s = %T %v, want %T %v", i, k, g, g, w, w)
			}
		}
	}
}

func TestSimEndpointsAndModes(t *testing.T) {
	e := newSimEnv(t)
	selects := map[upstream.Endpoint][]string{
		upstream.AllBacklinks:    {"url_from", "url_to", "anchor", "domain_rating_source", "first_seen_link", "last_seen", "is_dofollow", "http_code", "languages"},
		upstream.RefDomains:      {"domain", "domain_rating", "links_to_target", "first_seen", "last_seen", "is_spam"},
		upstream.BrokenBacklinks: {"url_from", "url_to", "http_code_target", "last_visited_target", "domain_rating_source"},
	}
	orders := map[upstream.Endpoint][]upstream.Order{
		upstream.AllBacklinks:    {{Field: "url_from"}, {Field: "url_to"}},
		upstream.RefDomains:      {{Field: "domain"}},
		upstream.BrokenBacklinks: {{Field: "domain_rating_source", Desc: true}, {Field: "url_from"}},
	}
	for _, ep := range upstream.Endpoints() {
		for _, mode := range []upstream.Mode{"", upstream.ModeExact, upstream.ModePrefix, upstream.ModeDomain, upstream.ModeSubdomains} {
			t.Run(fmt.Sprintf("%s/%s", ep, mode), func(t *testing.T) {
				target := "sized-3000.example"
				if mode == upstream.ModeExact || mode == upstream.ModePrefix {
					target = "https://sized-3000.example/"
				}
				q := &upstream.Query{Endpoint: ep, Target: target, Mode: mode, Select: selects[ep], OrderBy: orders[ep], Limit: 40}
				rows, res, err := e.list(t, q)
				if err != nil {
					t.Fatal(err)
				}
				all, err := e.sim.All(q)
				if err != nil {
					t.Fatal(err)
				}
				sameRows(t, rows, all[:min(len(all), 40)])
				if res.Cost.Rows != len(rows) || res.Cost.PerRow != q.PerRowCost() || res.Cost.Total != q.Estimate(len(rows)) || res.Cost.Estimated {
					t.Errorf("cost = %+v for %d rows, per row %d", res.Cost, len(rows), q.PerRowCost())
				}
			})
		}
	}
}

func TestSimFiltersAndCosts(t *testing.T) {
	e := newSimEnv(t)
	q := &upstream.Query{
		Endpoint: upstream.AllBacklinks, Target: "sized-5000.example",
		Select: []string{"url_from", "domain_rating_source", "is_dofollow", "traffic_domain"},
		Where: upstream.And{
			upstream.Is{Field: "domain_rating_source", Cond: upstream.Cond{Op: upstream.OpGte, Value: int64(30)}},
			upstream.Is{Field: "is_dofollow", Cond: upstream.Cond{Op: upstream.OpEq, Value: true}},
			upstream.Not{X: upstream.Is{Field: "url_from", Cond: upstream.Cond{Op: upstream.OpSubstring, Value: "zzz"}}},
		},
		OrderBy: []upstream.Order{{Field: "domain_rating_source", Desc: true}, {Field: "url_from"}},
		History: upstream.HistoryLive,
		Limit:   100,
	}
	before := e.sim.KeyUsage("integration-key")
	rows, res, err := e.list(t, q)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r["domain_rating_source"].(float64) < 30 || r["is_dofollow"] != true {
			t.Fatalf("row %v does not match the filter", r)
		}
	}
	all, _ := e.sim.All(q)
	sameRows(t, rows, all[:min(len(all), 100)])
	if res.Cost.PerRow != 1+1+1+10 || res.Cost.Cache != "miss" {
		t.Errorf("cost = %+v", res.Cost)
	}
	if got := e.sim.KeyUsage("integration-key") - before; got != res.Spent {
		t.Errorf("simulator charged %d, client says %d", got, res.Spent)
	}

	t.Run("a repeated request is a free cache hit", func(t *testing.T) {
		_, res, err := e.list(t, q)
		if err != nil || res.Cost.Cache != "hit" || res.Cost.Actual != 0 || res.Spent != 0 {
			t.Errorf("res = %+v, err = %v", res, err)
		}
	})
	t.Run("keyset page after the last key", func(t *testing.T) {
		last := rows[len(rows)-1]
		q2 := *q
		q2.Where = append(append(upstream.And{}, q.Where.(upstream.And)...), upstream.Or{
			upstream.Is{Field: "domain_rating_source", Cond: upstream.Cond{Op: upstream.OpLt, Value: last["domain_rating_source"]}},
			upstream.And{
				upstream.Is{Field: "domain_rating_source", Cond: upstream.Cond{Op: upstream.OpEq, Value: last["domain_rating_source"]}},
				upstream.Is{Field: "url_from", Cond: upstream.Cond{Op: upstream.OpGt, Value: last["url_from"]}},
			},
		})
		next, _, err := e.list(t, &q2)
		if err != nil {
			t.Fatal(err)
		}
		sameRows(t, next, all[100:min(len(all), 200)])
	})
}

func TestSimErrors(t *testing.T) {
	q := func() *upstream.Query {
		return &upstream.Query{Endpoint: upstream.RefDomains, Target: "sized-500.example", Select: []string{"domain"}, Limit: 10}
	}
	t.Run("wrong key", func(t *testing.T) {
		e := newSimEnv(t, func(c *upstream.Config) { c.Key = "wrong-key" })
		_, res, err := e.list(t, q())
		if !errors.Is(err, upstream.ErrUnauthorized) || res.Attempts != 1 {
			t.Errorf("err = %v, attempts = %d", err, res.Attempts)
		}
	})
	t.Run("unknown target", func(t *testing.T) {
		e := newSimEnv(t)
		qq := q()
		qq.Target = "nowhere.invalid"
		_, _, err := e.list(t, qq)
		if !errors.Is(err, upstream.ErrNotFound) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("limit above the plan", func(t *testing.T) {
		e := newSimEnv(t)
		e.sim.Update(func(c *ahrefssim.Config) { c.MaxLimit = 5 })
		_, _, err := e.list(t, q())
		var apiErr *upstream.APIError
		if !errors.Is(err, upstream.ErrBadRequest) || !errors.As(err, &apiErr) || !strings.Contains(apiErr.Message, "limit") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("units exhausted", func(t *testing.T) {
		e := newSimEnv(t)
		limit := int64(10)
		e.sim.SetUnitsLimitAPIKey(&limit)
		e.sim.AddUsage("integration-key", 10)
		_, _, err := e.list(t, q())
		if !errors.Is(err, upstream.ErrForbidden) {
			t.Errorf("err = %v", err)
		}
		l, err := e.c.LimitsAndUsage(context.Background())
		if err != nil || l.UnitsLimitAPIKey == nil || *l.UnitsLimitAPIKey != 10 || l.UnitsUsageAPIKey != 10 {
			t.Errorf("limits = %+v, err = %v", l, err)
		}
	})
	t.Run("500s are retried", func(t *testing.T) {
		e := newSimEnv(t)
		e.sim.FailNext(2)
		rows, res, err := e.list(t, q())
		if err != nil || len(rows) != 10 || res.Attempts != 3 {
			t.Errorf("err = %v, rows = %d, attempts = %d", err, len(rows), res.Attempts)
		}
		e.sim.FailNext(5)
		_, res, err = e.list(t, q())
		if !errors.Is(err, upstream.ErrUpstreamUnavailable) || res.Attempts != upstream.DefaultMaxAttempts {
			t.Errorf("err = %v, attempts = %d", err, res.Attempts)
		}
	})
	t.Run("429 JSON with Retry-After, then HTML", func(t *testing.T) {
		e := newSimEnv(t)
		e.sim.SetRequestsPerMinute(1)
		e.sim.SetRateLimitStyle(ahrefssim.RateLimitAlternate)
		e.sim.Update(func(c *ahrefssim.Config) { c.RetryAfter = true })
		if _, _, err := e.list(t, q()); err != nil {
			t.Fatal(err)
		}
		// The second request is refused with Retry-After; the client waits on
		// the shared clock and the retry is admitted.
		start := e.clock.Now()
		qq := q()
		qq.Limit = 11 // not the cached answer
		_, res, err := e.list(t, qq)
		if err != nil || res.Attempts != 2 || e.clock.Now().Sub(start) < 59*time.Second {
			t.Errorf("err = %v, attempts = %d, waited %v", err, res.Attempts, e.clock.Now().Sub(start))
		}
		// The next refusal is an HTML page without Retry-After: under a short
		// deadline (shorter than the first 500ms backoff) the client returns it
		// rather than wait past it.
		ctx, cancel := context.WithDeadline(context.Background(), e.clock.Now().Add(400*time.Millisecond))
		defer cancel()
		qq.Limit = 12
		_, err = e.c.ListRecords(ctx, qq, func(upstream.Record) error { return nil })
		var apiErr *upstream.APIError
		if !errors.Is(err, upstream.ErrRateLimited) || !errors.As(err, &apiErr) || !strings.Contains(apiErr.Message, "429 Too Many Requests") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("429 without Retry-After, as Ahrefs answers", func(t *testing.T) {
		// No Retry-After: the client backs off exponentially (500ms, then
		// 1s) and tells the gate, which pauses the key for its own interval.
		gate := &throttleGate{}
		e := newSimEnv(t, func(c *upstream.Config) { c.Gate = gate })
		e.sim.Update(func(c *ahrefssim.Config) { c.RequestsPerMinute, c.RateWindow = 1, time.Second })
		if _, _, err := e.list(t, q()); err != nil {
			t.Fatal(err)
		}
		start := e.clock.Now()
		qq := q()
		qq.Limit = 11
		_, res, err := e.list(t, qq)
		waited := e.clock.Now().Sub(start)
		if err != nil || res.Attempts != 3 || waited != 1500*time.Millisecond {
			t.Errorf("err = %v, attempts = %d, waited %v", err, res.Attempts, waited)
		}
		if fmt.Sprint(gate.throttled) != "[0s 0s]" {
			t.Errorf("gate told %v, want two 429s without Retry-After", gate.throttled)
		}
	})
	t.Run("body cut short after the headers", func(t *testing.T) {
		e := newSimEnv(t)
		before := e.sim.KeyUsage("integration-key")
		e.sim.TruncateNext(1)
		qq := q()
		qq.Limit = 200
		_, res, err := e.list(t, qq)
		if res.Rows > 0 {
			// Cut after some rows: no retry, the error says so, the charge is known.
			if !errors.Is(err, upstream.ErrUpstreamUnavailable) || res.Attempts != 1 {
				t.Errorf("err = %v, res = %+v", err, res)
			}
		} else if err == nil && res.Attempts != 2 {
			t.Errorf("res = %+v", res)
		}
		if !res.Cost.Known || e.sim.KeyUsage("integration-key")-before != res.Spent {
			t.Errorf("cost = %+v, spent %d, simulator charged %d", res.Cost, res.Spent, e.sim.KeyUsage("integration-key")-before)
		}
	})
}

func TestSimStatsAndUsage(t *testing.T) {
	e := newSimEnv(t)
	st, res, err := e.c.BacklinksStats(context.Background(), upstream.StatsQuery{Target: "sized-2000.example", Mode: upstream.ModeDomain})
	cost := res.Cost
	if err != nil {
		t.Fatal(err)
	}
	if st.Live <= 0 || st.Live > st.AllTime || st.LiveRefdomains > st.AllTimeRefdomains || st.AllTimeRefdomains > st.AllTime {
		t.Errorf("stats = %+v", st)
	}
	if cost.Actual != upstream.MinUnits || cost.PerRow != 12 {
		t.Errorf("cost = %+v", cost)
	}
	used, reset, err := e.c.UpstreamUsage(context.Background())
	if err != nil || used != upstream.MinUnits || !reset.After(e.clock.Now()) {
		t.Errorf("used = %d, reset = %v, err = %v", used, reset, err)
	}
}

// throttleGate admits every attempt and records what Throttled was told.
type throttleGate struct {
	mu        sync.Mutex
	throttled []time.Duration
}

func (g *throttleGate) Wait(context.Context) error { return nil }

func (g *throttleGate) Throttled(_ context.Context, d time.Duration) {
	g.mu.Lock()
	g.throttled = append(g.throttled, d)
	g.mu.Unlock()
}
