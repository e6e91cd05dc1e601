package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

// TestHealthFollowsReadiness: health is SERVING while the ledger and the
// upstream answer, and NOT_SERVING, over gRPC and /healthz, once the
// upstream stops answering.
func TestHealthFollowsReadiness(t *testing.T) {
	sim := httptest.NewServer(ahrefssim.New(ahrefssim.Config{Keys: []string{upstreamKey}}))
	defer sim.Close()
	s, _ := startTest(t, testConfig(t, sim.URL))
	health := healthpb.NewHealthClient(dialServer(t, s))
	status := func() healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		resp, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "linkgate.v1.BacklinksService"})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetStatus()
	}
	if st := status(); st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("with everything up: %v", st)
	}
	sim.Close()
	s.checkReadiness()
	if st := status(); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("with the upstream down: %v", st)
	}
	resp, err := http.Get("http://" + s.httpAddr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/healthz with the upstream down: %d", resp.StatusCode)
	}
}
