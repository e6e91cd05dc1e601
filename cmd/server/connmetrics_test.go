package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// points reads every int64 gauge and sum of reader by name and attributes:
// "linkgate.connections.closed{listener=grpc,reason=room}".
func points(t *testing.T, reader sdkmetric.Reader) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	add := func(name string, attrs attribute.Set, v int64) {
		out[name+"{"+attrs.Encoded(attribute.DefaultEncoder())+"}"] = v
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					add(m.Name, p.Attributes, p.Value)
				}
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					add(m.Name, p.Attributes, p.Value)
				}
			}
		}
	}
	return out
}

// TestConnectionLimitMetrics: a listener's connection limit reports the
// connections it holds and those on probation, and counts those it closed
// on probation (to make room, or at the end of the probation) and the new
// ones that waited for room.
func TestConnectionLimitMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	m, err := newConnMetrics(mp.Meter("test"))
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The probation's end is brought about by the test (expire), not by time.
	l := newConnLimit(lis, "grpc", 2, time.Hour, slog.New(slog.DiscardHandler), m)
	t.Cleanup(func() { _ = l.Close() })
	connect := func() *limitedConn {
		t.Helper()
		c, err := net.Dial("tcp", lis.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		a, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return a.(*limitedConn)
	}
	const (
		open      = "linkgate.connections.open{listener=grpc}"
		probation = "linkgate.connections.on_probation{listener=grpc}"
		room      = "linkgate.connections.closed{listener=grpc,reason=room}"
		ended     = "linkgate.connections.closed{listener=grpc,reason=probation_ended}"
		waits     = "linkgate.connections.limit_waits{listener=grpc}"
	)
	expect := func(step string, want map[string]int64) {
		t.Helper()
		got := points(t, reader)
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: %s = %d, want %d (all: %v)", step, k, got[k], v, got)
			}
		}
	}

	first, second := connect(), connect()
	expect("two connections without a key", map[string]int64{open: 2, probation: 2, room: 0, ended: 0})
	l.prove(first.addr)
	expect("the first showed a key", map[string]int64{open: 2, probation: 1})
	third := connect()
	expect("a third, the listener full", map[string]int64{open: 2, probation: 1, room: 1})
	if second.probation != nil {
		t.Fatal("the connection on probation was not the one to make room")
	}
	third.expire()
	expect("the third's probation ended", map[string]int64{open: 1, probation: 0, room: 1, ended: 1})

	l.prove(connect().addr)
	expect("full of connections with a key", map[string]int64{open: 2, probation: 0, waits: 0})
	accepted := make(chan *limitedConn)
	go func() {
		c, err := net.Dial("tcp", lis.Addr().String())
		if err != nil {
			t.Error(err)
			close(accepted)
			return
		}
		defer c.Close()
		a, _ := l.Accept()
		accepted <- a.(*limitedConn)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for points(t, reader)[waits] != 1 {
		if time.Now().After(deadline) {
			t.Fatal("a connection waiting for room is not counted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	first.Close()
	if <-accepted == nil {
		t.FailNow()
	}
	expect("one with a key left, the waiting one came in", map[string]int64{open: 2, probation: 1, waits: 1, room: 1, ended: 1})
}

// metricValue reads the value of the first series of name whose labels
// hold every one of labels in a Prometheus text exposition.
func metricValue(text, name string, labels ...string) (float64, bool) {
	for _, l := range strings.Split(text, "\n") {
		series, value, ok := strings.Cut(l, " ")
		if !ok || !strings.HasPrefix(series, name+"{") {
			continue
		}
		all := true
		for _, want := range labels {
			all = all && strings.Contains(series, want)
		}
		if all {
			v, err := strconv.ParseFloat(value, 64)
			return v, err == nil
		}
	}
	return 0, false
}

// scrape reads /metrics of a server.
func scrape(t *testing.T, s *server) string {
	t.Helper()
	resp, err := http.Get("http://" + s.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	return string(body)
}
