package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

// TestHealthFollowsOutcomes: everything is SERVING while the ledger answers
// and upstream calls succeed. After HealthFailures failed calls in a row the
// data service is NOT_SERVING, over gRPC and in /healthz, while the server
// and its quota service stay ready: callers still reach the quota and get
// UNAVAILABLE from data RPCs instead of finding no endpoint at all. The next
// successful call makes it SERVING again. Health sends no probe of its own:
// the simulator sees only the callers' requests.
func TestHealthFollowsOutcomes(t *testing.T) {
	sim := ahrefssim.New(ahrefssim.Config{Keys: []string{upstreamKey}})
	srv := httptest.NewServer(sim)
	defer srv.Close()
	cfg := testConfig(t, srv.URL)
	cfg.HealthFailures = 2
	s, _ := startTest(t, cfg)
	conn := dialServer(t, s)
	health := healthpb.NewHealthClient(conn)
	backlinksClient := v1.NewBacklinksServiceClient(conn)
	status := func(service string) healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		resp, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetStatus()
	}
	const backlinks, quota = "linkgate.v1.BacklinksService", "linkgate.v1.QuotaService"
	for _, svc := range []string{"", backlinks, quota} {
		if st := status(svc); st != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("%q with everything up: %v", svc, st)
		}
	}
	started := sim.Requests() // the reconciliation at start reads the upstream's usage
	s.checkReadiness()
	if got := sim.Requests() - started; got != 0 {
		t.Fatalf("health sent %d requests to the upstream, want none", got)
	}
	list := func() error {
		_, err := backlinksClient.ListBacklinks(as(context.Background(), keyA), &v1.ListBacklinksRequest{Target: "example.com", PageSize: 1})
		return err
	}
	// Each call fails all its attempts (3, with backoff); one failure is
	// not enough.
	sim.FailNext(3)
	if list() == nil {
		t.Fatal("a call to a failing upstream succeeded")
	}
	if st := status(backlinks); st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("after one failure: %v, want SERVING", st)
	}
	sim.FailNext(3)
	if list() == nil {
		t.Fatal("a call to a failing upstream succeeded")
	}
	want := map[string]healthpb.HealthCheckResponse_ServingStatus{
		"": healthpb.HealthCheckResponse_SERVING, quota: healthpb.HealthCheckResponse_SERVING,
		backlinks: healthpb.HealthCheckResponse_NOT_SERVING,
	}
	for svc, w := range want {
		if st := status(svc); st != w {
			t.Fatalf("%q after two failures: %v, want %v", svc, st, w)
		}
	}
	resp, err := http.Get("http://" + s.httpAddr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]string
	json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || body["backlinks"] != "NOT_SERVING" || body["quota"] != "SERVING" {
		t.Fatalf("/healthz with the upstream down: %d %v", resp.StatusCode, body)
	}
	s.checkReadiness() // the ledger's check keeps the upstream's verdict
	if st := status(backlinks); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("after a readiness check: %v, want NOT_SERVING still", st)
	}
	if err := list(); err != nil {
		t.Fatal(err)
	}
	if st := status(backlinks); st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("after a success: %v, want SERVING", st)
	}
}
