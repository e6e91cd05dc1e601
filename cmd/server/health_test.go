package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

// TestHealthFollowsReadiness: everything is SERVING while the ledger and
// the upstream answer. Once the upstream stops answering the data service
// is NOT_SERVING, over gRPC and in /healthz, while the server and its quota
// service stay ready: callers still reach the quota and get UNAVAILABLE
// from data RPCs instead of finding no endpoint at all.
func TestHealthFollowsReadiness(t *testing.T) {
	sim := httptest.NewServer(ahrefssim.New(ahrefssim.Config{Keys: []string{upstreamKey}}))
	defer sim.Close()
	s, _ := startTest(t, testConfig(t, sim.URL))
	health := healthpb.NewHealthClient(dialServer(t, s))
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
	sim.Close()
	s.checkReadiness()
	want := map[string]healthpb.HealthCheckResponse_ServingStatus{
		"": healthpb.HealthCheckResponse_SERVING, quota: healthpb.HealthCheckResponse_SERVING,
		backlinks: healthpb.HealthCheckResponse_NOT_SERVING,
	}
	for svc, w := range want {
		if st := status(svc); st != w {
			t.Fatalf("%q with the upstream down: %v, want %v", svc, st, w)
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
}
