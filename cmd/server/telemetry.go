package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/linkgate/linkgate/service"
	"github.com/linkgate/linkgate/upstream"
)

// serviceName is the default service.name; OTEL_SERVICE_NAME overrides it.
const serviceName = "linkgate"

// otelOverride replaces the tracer provider configured from OTEL_*
// variables. Only tests set it (config.otel), to read spans from an
// in-memory exporter without touching the global providers; production
// leaves it nil.
type otelOverride struct {
	TracerProvider trace.TracerProvider
}

// observability is the OpenTelemetry wiring of one server: its providers,
// the Prometheus registry behind /metrics, and linkgate's own instruments.
type observability struct {
	tracer     trace.TracerProvider
	meter      metric.MeterProvider
	propagator propagation.TextMapPropagator
	registry   *prometheus.Registry
	tel        *service.Telemetry
	conns      *connMetrics
	// shutdown flushes and stops the providers this server created.
	shutdown []func(context.Context) error
}

// setupTelemetry builds the providers from the standard OTEL_* variables,
// read by autoexport:
//
//   - traces: OTEL_TRACES_EXPORTER (otlp, console or none; unset means
//     none, unlike autoexport's own default, so that tracing costs nothing
//     until someone configures a backend), OTEL_EXPORTER_OTLP_PROTOCOL,
//     OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_SAMPLER…;
//   - metrics: always on /metrics of the REST listener; also pushed when
//     OTEL_METRICS_EXPORTER is set (otlp, console; unset means none);
//   - resource: service.name=linkgate, overridden by OTEL_SERVICE_NAME and
//     OTEL_RESOURCE_ATTRIBUTES.
//
// In production the providers become the global ones, so that any library
// instrumented through otel.Get… reports into them. With an override
// (tests) nothing global is changed.
func setupTelemetry(ctx context.Context, override *otelOverride) (_ *observability, err error) {
	o := &observability{
		propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, o.close())
		}
	}()
	// WithFromEnv comes after the default so that OTEL_SERVICE_NAME wins.
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(serviceName)),
		resource.WithFromEnv(), resource.WithTelemetrySDK(), resource.WithHost(), resource.WithProcessPID())
	if err != nil {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}

	if override != nil && override.TracerProvider != nil {
		o.tracer = override.TracerProvider
	} else {
		exp, err := autoexport.NewSpanExporter(ctx, autoexport.WithFallbackSpanExporter(
			func(context.Context) (sdktrace.SpanExporter, error) { return nil, nil }))
		if err != nil {
			return nil, fmt.Errorf("trace exporter (OTEL_TRACES_EXPORTER): %w", err)
		}
		if exp == nil || autoexport.IsNoneSpanExporter(exp) {
			// Off: the global no-op provider, whose spans cost nothing. An
			// incoming traceparent still reaches the request log's trace_id.
			o.tracer = otel.GetTracerProvider()
		} else {
			tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
			o.shutdown = append(o.shutdown, tp.Shutdown)
			otel.SetTracerProvider(tp)
			o.tracer = tp
		}
		otel.SetTextMapPropagator(o.propagator)
	}

	// A registry of our own rather than the default one: two servers in one
	// process (tests) must not collide, and /metrics shows exactly this
	// server.
	o.registry = prometheus.NewRegistry()
	o.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	prom, err := otelprom.New(otelprom.WithRegisterer(o.registry))
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	opts := []sdkmetric.Option{sdkmetric.WithResource(res), sdkmetric.WithReader(prom)}
	reader, err := autoexport.NewMetricReader(ctx, autoexport.WithFallbackMetricReader(
		func(context.Context) (sdkmetric.Reader, error) { return nil, nil }))
	if err != nil {
		return nil, fmt.Errorf("metric reader (OTEL_METRICS_EXPORTER): %w", err)
	}
	if reader != nil && !autoexport.IsNoneMetricReader(reader) {
		opts = append(opts, sdkmetric.WithReader(reader))
	}
	mp := sdkmetric.NewMeterProvider(opts...)
	o.shutdown = append(o.shutdown, mp.Shutdown)
	o.meter = mp
	if override == nil {
		otel.SetMeterProvider(mp)
	}

	o.tel, err = service.NewTelemetry(service.TelemetryConfig{TracerProvider: o.tracer, MeterProvider: o.meter})
	if err != nil {
		return nil, fmt.Errorf("telemetry instruments: %w", err)
	}
	if o.conns, err = newConnMetrics(o.meter.Meter(instrumentationName)); err != nil {
		return nil, fmt.Errorf("telemetry instruments: %w", err)
	}
	return o, nil
}

// instrumentationName is the scope of the instruments cmd/server makes.
const instrumentationName = "github.com/linkgate/linkgate/cmd/server"

// connMetrics are the instruments of the listeners' connection limits
// (peers.go): the connections a listener holds, those that have not shown
// a key yet, and what the limit closed or made wait. Its methods do
// nothing on nil.
type connMetrics struct {
	closed, waits metric.Int64Counter
	mu            sync.Mutex
	limits        []*connLimit // observed by the gauges
}

func newConnMetrics(m metric.Meter) (*connMetrics, error) {
	c := &connMetrics{}
	var errs [5]error
	c.closed, errs[0] = m.Int64Counter("linkgate.connections.closed", metric.WithUnit("{connection}"),
		metric.WithDescription("Connections closed on probation (before they showed a key), by listener and reason: "+
			"probation_ended (the header timeout passed), room (the listener was full and a new connection came)."))
	c.waits, errs[1] = m.Int64Counter("linkgate.connections.limit_waits", metric.WithUnit("{connection}"),
		metric.WithDescription("New connections that waited for another to close, by listener: every connection held had shown a key."))
	open, err := m.Int64ObservableGauge("linkgate.connections.open", metric.WithUnit("{connection}"),
		metric.WithDescription("Connections a listener holds, by listener."))
	errs[2] = err
	probation, err := m.Int64ObservableGauge("linkgate.connections.on_probation", metric.WithUnit("{connection}"),
		metric.WithDescription("Connections that have not shown a key yet, by listener."))
	errs[3] = err
	if err := errors.Join(errs[:]...); err != nil {
		return nil, err
	}
	_, errs[4] = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		c.mu.Lock()
		limits := slices.Clone(c.limits)
		c.mu.Unlock()
		for _, l := range limits {
			n, unproven := l.counts()
			at := metric.WithAttributes(attribute.String("listener", l.name))
			o.ObserveInt64(open, int64(n), at)
			o.ObserveInt64(probation, int64(unproven), at)
		}
		return nil
	}, open, probation)
	return c, errs[4]
}

// watch adds a listener's limit to the gauges.
func (c *connMetrics) watch(l *connLimit) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.limits = append(c.limits, l)
}

// closedOnProbation counts a connection closed before it showed a key.
func (c *connMetrics) closedOnProbation(listener, reason string) {
	if c == nil {
		return
	}
	c.closed.Add(context.Background(), 1, metric.WithAttributes(attribute.String("listener", listener), attribute.String("reason", reason)))
}

// waited counts a new connection that waited for room.
func (c *connMetrics) waited(listener string) {
	if c == nil {
		return
	}
	c.waits.Add(context.Background(), 1, metric.WithAttributes(attribute.String("listener", listener)))
}

// close flushes pending spans and metrics and stops the providers. It runs
// last in the ordered shutdown, after the listeners stopped, so that the
// spans of the last requests are exported.
func (o *observability) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var errs []error
	for _, fn := range o.shutdown {
		errs = append(errs, fn(ctx))
	}
	o.shutdown = nil
	return errors.Join(errs...)
}

// grpcFilter leaves health checks and reflection out of traces and RPC
// metrics: balancers probe health every few seconds.
var grpcFilter = filters.None(filters.ServicePrefix("grpc.health."), filters.ServicePrefix("grpc.reflection."))

// serverOption is the gRPC server's stats handler: one span per RPC, child
// of the caller's (or the gateway's) span, whose context the interceptors
// and handlers inherit.
func (o *observability) serverOption() grpc.ServerOption {
	return grpc.StatsHandler(otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(o.tracer), otelgrpc.WithMeterProvider(o.meter),
		otelgrpc.WithPropagators(o.propagator), otelgrpc.WithFilter(grpcFilter)))
}

// dialOption is the gateway connection's stats handler: it injects the
// REST request's trace context into the gRPC metadata.
func (o *observability) dialOption() grpc.DialOption {
	return grpc.WithStatsHandler(otelgrpc.NewClientHandler(
		otelgrpc.WithTracerProvider(o.tracer), otelgrpc.WithMeterProvider(o.meter),
		otelgrpc.WithPropagators(o.propagator), otelgrpc.WithFilter(grpcFilter)))
}

// metricsHandler is /metrics: tenant names, budgets and spend, which only
// operators may read, so it is served on the REST listener only while
// authentication is off (everything on loopback) and otherwise on the
// metrics listener of its own (LINKGATE_METRICS_ADDR).
func (o *observability) metricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.registry, promhttp.HandlerOpts{}))
	return mux
}

// httpHandler traces every REST request (the server span honours an
// incoming traceparent and baggage header) and, with withMetrics, serves
// /metrics beside them.
func (o *observability) httpHandler(next http.Handler, withMetrics bool) http.Handler {
	mux := http.NewServeMux()
	if withMetrics {
		mux.Handle("/metrics", o.metricsHandler())
	}
	mux.Handle("/", otelhttp.NewHandler(next, "linkgate.http",
		otelhttp.WithTracerProvider(o.tracer), otelhttp.WithMeterProvider(o.meter),
		otelhttp.WithPropagators(o.propagator),
		// Paths carry no identifiers (the target is a parameter), so the
		// path keeps span names low in cardinality.
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method + " " + r.URL.Path }),
		otelhttp.WithFilter(func(r *http.Request) bool { return !strings.HasPrefix(r.URL.Path, "/healthz") }),
	))
	return mux
}

// wrapTransport gives the upstream client a span per HTTP attempt, child of
// the page's span. It injects no trace headers: the upstream is a third
// party, and trace ids and baggage are internal. otelhttp records no
// request headers, so the Authorization header never reaches a span.
func (o *observability) wrapTransport(rt http.RoundTripper) http.RoundTripper {
	return otelhttp.NewTransport(rt,
		otelhttp.WithTracerProvider(o.tracer), otelhttp.WithMeterProvider(o.meter),
		otelhttp.WithPropagators(propagation.NewCompositeTextMapPropagator()),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return "ahrefs " + r.Method + " " + r.URL.Path }),
	)
}

// observer is the upstream client's Observer: linkgate's metrics of
// upstream requests, retries and rate-limit waits.
func (o *observability) observer() upstream.Observer { return o.tel }
