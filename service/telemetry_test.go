package service

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/linkgate/linkgate/internal/clock"
	"github.com/linkgate/linkgate/quota"
	"github.com/linkgate/linkgate/upstream"
)

// countingLedger is a BudgetReader that counts its reads.
type countingLedger struct{ reads int }

func (c *countingLedger) AllUsage(context.Context) (quota.Report, error) {
	c.reads++
	return quota.Report{
		Pool:    quota.Account{Name: "default", Remaining: 900},
		Tenants: []quota.Account{{Name: "a", Remaining: 100}, {Name: "b", Remaining: 900}},
	}, nil
}

func collect(t *testing.T, r *sdkmetric.ManualReader) map[string]metricdata.Aggregation {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m.Data
		}
	}
	return out
}

// TestBudgetGauge: the gauge reports the pool and every tenant, and reads
// the ledger at most once per BudgetEvery however often it is collected.
func TestBudgetGauge(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	tel, err := NewTelemetry(TelemetryConfig{
		MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)),
		BudgetEvery:   5 * time.Second, Clock: clk,
	})
	if err != nil {
		t.Fatal(err)
	}
	l := &countingLedger{}
	if err := tel.ObserveBudget(l); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		advance time.Duration
		reads   int
	}{{0, 1}, {time.Second, 1}, {3 * time.Second, 1}, {time.Second, 2}} {
		clk.Advance(step.advance)
		data := collect(t, reader)
		if l.reads != step.reads {
			t.Fatalf("after +%s: %d ledger reads, want %d", step.advance, l.reads, step.reads)
		}
		g, ok := data["linkgate.budget.remaining"].(metricdata.Gauge[int64])
		if !ok || len(g.DataPoints) != 3 {
			t.Fatalf("gauge: %#v", data["linkgate.budget.remaining"])
		}
		for _, dp := range g.DataPoints {
			scope, _ := dp.Attributes.Value("scope")
			tenant, _ := dp.Attributes.Value("tenant")
			want := map[string]int64{"pool/": 900, "tenant/a": 100, "tenant/b": 900}[scope.AsString()+"/"+tenant.AsString()]
			if dp.Value != want {
				t.Errorf("%s: %d, want %d", dp.Attributes.Encoded(attribute.DefaultEncoder()), dp.Value, want)
			}
		}
	}
	if err := tel.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestUpstreamObserver: requests by endpoint and status, retries by the
// failed attempt's status, rate-limit waits.
func TestUpstreamObserver(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	tel, err := NewTelemetry(TelemetryConfig{MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tel.Response(ctx, "/v3/site-explorer/refdomains", 429, upstream.Cost{}, time.Second)
	tel.Response(ctx, "/v3/site-explorer/refdomains", 200, upstream.Cost{}, time.Second)
	tel.Retry(ctx, 1, time.Second, &upstream.APIError{Status: 429})
	tel.Retry(ctx, 1, time.Second, errors.New("connection reset"))
	tel.RateLimitWait(ctx, 2*time.Second)

	data := collect(t, reader)
	sums := func(name string) map[string]int64 {
		s, _ := data[name].(metricdata.Sum[int64])
		out := map[string]int64{}
		for _, dp := range s.DataPoints {
			out[dp.Attributes.Encoded(attribute.DefaultEncoder())] = dp.Value
		}
		return out
	}
	if got := sums("linkgate.upstream.requests"); got["endpoint=/v3/site-explorer/refdomains,status=429"] != 1 || got["endpoint=/v3/site-explorer/refdomains,status=200"] != 1 {
		t.Errorf("requests: %v", got)
	}
	if got := sums("linkgate.upstream.retries"); got["status=429"] != 1 || got["status=0"] != 1 {
		t.Errorf("retries: %v", got)
	}
	if got := sums("linkgate.upstream.rate_limit.waits"); got[""] != 1 {
		t.Errorf("rate-limit waits: %v", got)
	}
	if h, ok := data["linkgate.upstream.rate_limit.wait.duration"].(metricdata.Histogram[float64]); !ok || h.DataPoints[0].Sum != 2 {
		t.Errorf("rate-limit wait duration: %#v", data["linkgate.upstream.rate_limit.wait.duration"])
	}
}
