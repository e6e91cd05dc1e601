package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/gen/openapi"
)

// newGateway returns the REST handler: the gateway over a loopback gRPC
// connection (never in-process registration, which cannot stream), the
// OpenAPI document, and /healthz. dial adds to (and may replace the
// credentials of) the gateway's connection, e.g. TLS (tls.go).
func newGateway(ctx context.Context, grpcAddr string, health healthpb.HealthServer, dial ...grpc.DialOption) (http.Handler, func() error, error) {
	conn, err := grpc.NewClient(grpcAddr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, dial...)...)
	if err != nil {
		return nil, nil, fmt.Errorf("gateway connection: %w", err)
	}
	gw := runtime.NewServeMux(
		// Ahrefs' snake_case names on the wire, as the protos spell them.
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
		}),
		runtime.WithErrorHandler(errorHandler),
		runtime.WithStreamErrorHandler(streamErrorHandler),
	)
	for _, register := range []func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error{
		v1.RegisterBacklinksServiceHandler, v1.RegisterQuotaServiceHandler,
	} {
		if err := register(ctx, gw, conn); err != nil {
			conn.Close()
			return nil, nil, err
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/", gw)
	mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(openapi.JSON)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		// The server's status decides the answer (200 or 503); each
		// service's status is reported beside it.
		out := map[string]string{}
		for key, name := range map[string]string{
			"status":    "",
			"backlinks": v1.BacklinksService_ServiceDesc.ServiceName,
			"quota":     v1.QuotaService_ServiceDesc.ServiceName,
		} {
			st := healthpb.HealthCheckResponse_NOT_SERVING
			if resp, err := health.Check(r.Context(), &healthpb.HealthCheckRequest{Service: name}); err == nil {
				st = resp.GetStatus()
			}
			out[key] = st.String()
		}
		w.Header().Set("Content-Type", "application/json")
		if out["status"] != healthpb.HealthCheckResponse_SERVING.String() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		json.NewEncoder(w).Encode(out)
	})
	return mux, conn.Close, nil
}

// streamErrorHandler ends a REST stream that fails after its first line:
// the last NDJSON line is {"error": status} with every detail of the gRPC
// status, so that ErrorInfo.metadata.page_token (the deadline, a shutdown,
// the budget) reaches HTTP callers as it reaches gRPC ones.
func streamErrorHandler(_ context.Context, err error) *status.Status { return status.Convert(err) }

// errorHandler is the gateway's default error handler plus a Retry-After
// header taken from the status's RetryInfo, so HTTP clients back off as
// they would on any 429 or 503.
func errorHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	if st, ok := status.FromError(err); ok {
		for _, d := range st.Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
				secs := math.Ceil(ri.GetRetryDelay().AsDuration().Seconds())
				w.Header().Set("Retry-After", strconv.Itoa(int(max(1, secs))))
			}
		}
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
}
