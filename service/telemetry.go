package service

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/linkgate/linkgate/internal/clock"
	"github.com/linkgate/linkgate/paging"
	"github.com/linkgate/linkgate/quota"
	"github.com/linkgate/linkgate/scheduler"
	"github.com/linkgate/linkgate/upstream"
)

// instrumentationName names linkgate's tracer and meter.
const instrumentationName = "github.com/linkgate/linkgate/service"

// Attribute keys of linkgate's spans and metrics. Metrics use the short
// forms (tenant, dataset) that read well as Prometheus labels.
const (
	AttrDataset       = attribute.Key("linkgate.dataset")
	AttrTenant        = attribute.Key("linkgate.tenant")
	AttrPage          = attribute.Key("linkgate.page")
	AttrRows          = attribute.Key("linkgate.rows")
	AttrUnitsReserved = attribute.Key("linkgate.units.reserved")
	AttrUnitsCharged  = attribute.Key("linkgate.units.charged")
	AttrCache         = attribute.Key("linkgate.cache")
	AttrAttempts      = attribute.Key("linkgate.upstream.attempts")
)

// PageSpanName is the name of the span of one upstream page in the pager.
const PageSpanName = "linkgate.page"

// TelemetryConfig configures a Telemetry. Nil providers mean the global ones,
// so that production code installs its providers once with otel.Set… and
// tests pass their own without touching global state.
type TelemetryConfig struct {
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	// BudgetEvery is the longest the budget gauge reuses a reading of the
	// ledger: scrapes must not turn into a load on a shared Redis. Default 5s.
	BudgetEvery time.Duration
	// Clock is the clock of the budget gauge's cache; nil means
	// clock.System.
	Clock clock.Clock
}

// Telemetry holds linkgate's tracer and instruments. It is also the
// upstream client's Observer. A nil *Telemetry is not valid; use
// NewTelemetry(TelemetryConfig{}) for the global providers.
type Telemetry struct {
	cfg    TelemetryConfig
	tracer trace.Tracer
	meter  metric.Meter

	unitsReserved, unitsCharged, unitsRefunded metric.Int64Counter
	denials                                    metric.Int64Counter
	upstreamRequests, retries, rateLimitWaits  metric.Int64Counter
	upstreamDuration, rateLimitWaitDuration    metric.Float64Histogram
	rowsStreamed, pages                        metric.Int64Counter
	orderViolations                            metric.Int64Counter
	pageDuration                               metric.Float64Histogram
	activeStreams                              metric.Int64UpDownCounter

	budgetMu   sync.Mutex
	budgetAt   time.Time
	budget     quota.Report
	budgetErr  error
	budgetReg  metric.Registration
	budgetOnce sync.Once
}

// NewTelemetry creates the tracer and every instrument.
func NewTelemetry(cfg TelemetryConfig) (*Telemetry, error) {
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = otel.GetTracerProvider()
	}
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = otel.GetMeterProvider()
	}
	if cfg.BudgetEvery <= 0 {
		cfg.BudgetEvery = 5 * time.Second
	}
	cfg.Clock = clock.Or(cfg.Clock)
	t := &Telemetry{
		cfg:    cfg,
		tracer: cfg.TracerProvider.Tracer(instrumentationName),
		meter:  cfg.MeterProvider.Meter(instrumentationName),
	}
	m := t.meter
	// Latencies of upstream pages run from tens of milliseconds to a minute
	// and more for large pages; the SDK's default buckets stop at 10s.
	secs := metric.WithExplicitBucketBoundaries(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
	var errs []error
	counter := func(name, desc string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithDescription(desc), metric.WithUnit("{unit}"))
		errs = append(errs, err)
		return c
	}
	count := func(name, desc, unit string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithDescription(desc), metric.WithUnit(unit))
		errs = append(errs, err)
		return c
	}
	hist := func(name, desc string) metric.Float64Histogram {
		h, err := m.Float64Histogram(name, metric.WithDescription(desc), metric.WithUnit("s"), secs)
		errs = append(errs, err)
		return h
	}
	t.unitsReserved = counter("linkgate.units.reserved", "Upstream units reserved in the ledger before a page, by tenant and dataset.")
	t.unitsCharged = counter("linkgate.units.charged", "Upstream units settled as spent after a page (what the upstream charged), by tenant and dataset.")
	t.unitsRefunded = counter("linkgate.units.refunded", "Reserved units given back: released, or settled below the estimate, by tenant and dataset.")
	t.denials = count("linkgate.quota.denials", "Reservations the ledger refused, by tenant, dataset and scope (pool or tenant).", "{request}")
	t.upstreamRequests = count("linkgate.upstream.requests", "Requests sent to the upstream, by endpoint and HTTP status (0: no response).", "{request}")
	t.upstreamDuration = hist("linkgate.upstream.duration", "Duration of one upstream request, by endpoint and HTTP status.")
	t.retries = count("linkgate.upstream.retries", "Upstream requests retried, by the HTTP status of the failed attempt (0: transport error).", "{retry}")
	t.rateLimitWaits = count("linkgate.upstream.rate_limit.waits", "Requests delayed by linkgate's own limiter of the upstream key.", "{wait}")
	t.rateLimitWaitDuration = hist("linkgate.upstream.rate_limit.wait.duration", "How long requests waited for linkgate's limiter of the upstream key.")
	t.rowsStreamed = count("linkgate.rows", "Rows sent to callers (List responses and Stream messages), by tenant and dataset.", "{row}")
	t.pages = count("linkgate.pages", "Upstream pages fetched by the pager, by tenant, dataset and cache status.", "{page}")
	t.orderViolations = count("linkgate.paging.order_violations", "Upstream pages refused because they contradict the order asked for or rows returned before (paging on would skip or repeat rows), by dataset.", "{page}")
	t.pageDuration = hist("linkgate.page.duration", "Duration of one upstream page in the pager (reserve, fetch, settle), by dataset.")
	asc, err := m.Int64UpDownCounter("linkgate.streams.active", metric.WithDescription("Stream RPCs in progress, by dataset."), metric.WithUnit("{stream}"))
	errs = append(errs, err)
	t.activeStreams = asc
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return t, nil
}

// BudgetReader is the part of the ledger the budget gauge reads.
type BudgetReader interface {
	AllUsage(ctx context.Context) (quota.Report, error)
}

// ObserveBudget registers the gauge linkgate.budget.remaining over the
// ledger: the pool (scope=pool) and every tenant (scope=tenant). A reading
// is reused for BudgetEvery so that frequent scrapes by several collectors
// cost one ledger read. Only the first call registers.
func (t *Telemetry) ObserveBudget(l BudgetReader) error {
	var err error
	t.budgetOnce.Do(func() {
		var g metric.Int64ObservableGauge
		g, err = t.meter.Int64ObservableGauge("linkgate.budget.remaining",
			metric.WithDescription("Units the pool (scope=pool) or a tenant (scope=tenant) may still spend this period."),
			metric.WithUnit("{unit}"))
		if err != nil {
			return
		}
		t.budgetReg, err = t.meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
			r, err := t.readBudget(ctx, l)
			if err != nil {
				return err
			}
			o.ObserveInt64(g, r.Pool.Remaining, metric.WithAttributes(attribute.String("scope", "pool")))
			for _, a := range r.Tenants {
				o.ObserveInt64(g, a.Remaining, metric.WithAttributes(attribute.String("scope", "tenant"), attribute.String("tenant", a.Name)))
			}
			return nil
		}, g)
	})
	return err
}

// Close unregisters the budget gauge, so that a collection after the ledger
// closed does not read it.
func (t *Telemetry) Close() error {
	if t.budgetReg != nil {
		return t.budgetReg.Unregister()
	}
	return nil
}

func (t *Telemetry) readBudget(ctx context.Context, l BudgetReader) (quota.Report, error) {
	t.budgetMu.Lock()
	defer t.budgetMu.Unlock()
	now := t.cfg.Clock.Now()
	if !t.budgetAt.IsZero() && now.Sub(t.budgetAt) < t.cfg.BudgetEvery {
		return t.budget, t.budgetErr
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	t.budget, t.budgetErr = l.AllUsage(ctx)
	t.budgetAt = now
	return t.budget, t.budgetErr
}

// Upstream client observer: requests, retries and rate-limit waits. The
// client adds the matching span events itself.

var _ upstream.Observer = (*Telemetry)(nil)

// Response counts one upstream attempt by endpoint and status.
func (t *Telemetry) Response(ctx context.Context, endpoint string, status int, _ upstream.Cost, elapsed time.Duration) {
	attrs := metric.WithAttributes(attribute.String("endpoint", endpoint), attribute.String("status", strconv.Itoa(status)))
	t.upstreamRequests.Add(ctx, 1, attrs)
	t.upstreamDuration.Record(ctx, elapsed.Seconds(), attrs)
}

// Retry counts a retried attempt by the status that failed it.
func (t *Telemetry) Retry(ctx context.Context, _ int, _ time.Duration, err error) {
	status := 0
	var apiErr *upstream.APIError
	if errors.As(err, &apiErr) {
		status = apiErr.Status
	}
	t.retries.Add(ctx, 1, metric.WithAttributes(attribute.String("status", strconv.Itoa(status))))
}

// RateLimitWait counts a delay by linkgate's own limiter of the key.
func (t *Telemetry) RateLimitWait(ctx context.Context, wait time.Duration) {
	t.rateLimitWaits.Add(ctx, 1)
	t.rateLimitWaitDuration.Record(ctx, wait.Seconds())
}

// pageTrace follows one upstream page of the pager: its span and the
// metrics recorded when it ends.
type pageTrace struct {
	t       *Telemetry
	span    trace.Span
	start   time.Time
	dataset string
	labels  attribute.Set // tenant, dataset
	// cache is set when linkgate's own page cache served the page, which
	// no upstream response then describes.
	cache string
}

var _ paging.Observer = (*Telemetry)(nil)

// StartPage opens the span of page n (1-based within a run).
func (t *Telemetry) StartPage(ctx context.Context, tenant, dataset string, n int) (context.Context, paging.PageTrace) {
	return t.startCall(ctx, PageSpanName, tenant, dataset, AttrPage.Int(n))
}

// Charged adds a page's units to the request's log line.
func (t *Telemetry) Charged(ctx context.Context, units int64) { noteRequest(ctx, 0, units) }

// startCall opens the span of one paid upstream call.
func (t *Telemetry) startCall(ctx context.Context, name, tenant, dataset string, attrs ...attribute.KeyValue) (context.Context, *pageTrace) {
	ctx, span := t.tracer.Start(ctx, name, trace.WithAttributes(
		append([]attribute.KeyValue{AttrDataset.String(dataset), AttrTenant.String(tenant)}, attrs...)...,
	))
	return ctx, &pageTrace{t: t, span: span, start: time.Now(), dataset: dataset,
		labels: attribute.NewSet(attribute.String("tenant", tenant), attribute.String("dataset", dataset))}
}

// Scheduled adds to the span and the metrics what the scheduler did for
// one paid call: its wait for a rate slot, and its reservation and
// settlement, or its denial, or that a cache or another caller's request
// served it.
func (p *pageTrace) Scheduled(ctx context.Context, res scheduler.Result, err error) {
	// Shorter waits are the queue's hand-off, not the key's rate.
	if res.Waited >= time.Millisecond {
		p.span.AddEvent("linkgate.rate_limit_wait", trace.WithAttributes(attribute.Int64("wait_ms", res.Waited.Milliseconds())))
		p.t.RateLimitWait(ctx, res.Waited)
	}
	switch {
	case res.Cached:
		p.cache = "linkgate"
		p.span.AddEvent("linkgate.cache_hit")
		return
	case res.Shared:
		p.cache = "shared"
		p.span.AddEvent("linkgate.coalesced")
		return
	}
	var d *quota.DeniedError
	if errors.As(err, &d) {
		attrs := []attribute.KeyValue{attribute.Int64("units", d.Asked), attribute.String("scope", d.Scope.String()),
			attribute.Int64("remaining", d.Remaining), attribute.Int64("reserved", d.Reserved)}
		p.span.AddEvent("linkgate.denied", trace.WithAttributes(attrs...))
		p.t.denials.Add(ctx, 1, metric.WithAttributeSet(p.labels), metric.WithAttributes(attribute.String("scope", d.Scope.String())))
		return
	}
	if res.Reserved == 0 {
		return // refused by the queue, or failed before a reservation
	}
	p.span.SetAttributes(AttrUnitsReserved.Int64(res.Reserved))
	p.span.AddEvent("linkgate.reserve", trace.WithAttributes(attribute.Int64("units", res.Reserved)))
	p.t.unitsReserved.Add(ctx, res.Reserved, metric.WithAttributeSet(p.labels))
	refund := max(0, res.Reserved-res.Charged)
	name := "linkgate.settle"
	if !res.Reported && !res.Provisional {
		name = "linkgate.release"
	}
	p.span.SetAttributes(AttrUnitsCharged.Int64(res.Charged))
	p.span.AddEvent(name, trace.WithAttributes(attribute.Int64("units", res.Charged), attribute.Int64("refunded", refund),
		attribute.Bool("provisional", res.Provisional)))
	p.t.unitsCharged.Add(ctx, res.Charged, metric.WithAttributeSet(p.labels))
	if refund > 0 {
		p.t.unitsRefunded.Add(ctx, refund, metric.WithAttributeSet(p.labels))
	}
}

// End closes the span with the call's outcome and records it.
func (p *pageTrace) End(ctx context.Context, res scheduler.Result, rows int, err error) {
	cache := p.cache
	if cache == "" {
		cache = "unknown"
		switch {
		case res.UpstreamCached:
			cache = "hit"
		case res.Requests > 0 && err == nil:
			cache = "miss"
		}
	}
	p.span.SetAttributes(AttrRows.Int(rows), AttrCache.String(cache), AttrAttempts.Int(res.Requests))
	if err != nil {
		p.span.RecordError(err)
		p.span.SetStatus(codes.Error, err.Error())
	}
	p.span.End()
	p.t.pages.Add(ctx, 1, metric.WithAttributeSet(p.labels), metric.WithAttributes(attribute.String("cache", cache)))
	p.t.pageDuration.Record(ctx, time.Since(p.start).Seconds(), metric.WithAttributes(attribute.String("dataset", p.dataset)))
}

// streamStarted counts an active stream until the returned func is called.
func (t *Telemetry) streamStarted(ctx context.Context, dataset string) func() {
	attrs := metric.WithAttributes(attribute.String("dataset", dataset))
	t.activeStreams.Add(ctx, 1, attrs)
	return func() { t.activeStreams.Add(context.WithoutCancel(ctx), -1, attrs) }
}

// OrderViolation counts a page refused by the pager's order checks.
func (t *Telemetry) OrderViolation(ctx context.Context, dataset string) {
	t.orderViolations.Add(context.WithoutCancel(ctx), 1, metric.WithAttributes(attribute.String("dataset", dataset)))
}

// sent counts rows sent to the caller, for the metrics and the request's
// log line. units are the units charged for the page the rows came from.
func (t *Telemetry) sent(ctx context.Context, tenant, dataset string, rows int, units int64) {
	noteRequest(ctx, int64(rows), units)
	if rows > 0 {
		t.rowsStreamed.Add(ctx, int64(rows), metric.WithAttributes(attribute.String("tenant", tenant), attribute.String("dataset", dataset)))
	}
}

// traceID is the request log line's trace_id: the otelgrpc stats handler
// has put the RPC's span in the context before any interceptor runs, so a
// log line leads to its trace. Empty when tracing is off.
func traceID(ctx context.Context) slog.Attr {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.HasTraceID() {
		return slog.String("trace_id", "")
	}
	return slog.String("trace_id", sc.TraceID().String())
}
