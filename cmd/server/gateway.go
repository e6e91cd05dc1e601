package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/dynamicpb"

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
	// strictQuery answers through the mux, which exists only once
	// NewServeMux returns: it holds the variable, not the value.
	var gw *runtime.ServeMux
	gw = runtime.NewServeMux(
		// Ahrefs' snake_case names on the wire, as the protos spell them. A
		// JSON body with a field the request does not have is refused, as
		// an unknown query parameter is: ignoring it would answer another
		// request than the one asked.
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
			MarshalOptions: protojson.MarshalOptions{UseProtoNames: true},
		}),
		runtime.WithMarshalerOption(mimeCSV, newCSVMarshaler()),
		runtime.SetQueryParameterParser(queryParser{}),
		runtime.WithMiddlewares(strictQuery(&gw)),
		runtime.WithErrorHandler(errorHandler),
		runtime.WithStreamErrorHandler(streamErrorHandler),
		runtime.WithRoutingErrorHandler(routingErrorHandler),
		// gRPC metadata (content-type: application/grpc among it) is the
		// transport's business, not a REST response header.
		runtime.WithOutgoingHeaderMatcher(dropMetadata),
		runtime.WithOutgoingTrailerMatcher(dropMetadata),
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
	mux.Handle("/", csvOutput(gw))
	mux.HandleFunc("/openapi.json", onlyGET(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(openapi.JSON)
	}))
	mux.HandleFunc("/healthz", onlyGET(func(w http.ResponseWriter, r *http.Request) {
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
	}))
	return mux, conn.Close, nil
}

// onlyGET answers other methods than GET and HEAD with 405 and Allow.
func onlyGET(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, r.Method+" is not allowed on "+r.URL.Path+": use GET", http.StatusMethodNotAllowed)
			return
		}
		h(w, r)
	}
}

// strictQuery checks the query string of every gateway request with the
// one query parser before the request goes further, so that a refused
// parameter comes back with its BadRequest detail (the generated code
// would flatten the error to its text). Endpoints whose request is the
// JSON body take no query parameters at all. It also lets the stream
// error handler reach the response headers, for Retry-After.
func strictQuery(gw **runtime.ServeMux) runtime.Middleware {
	return func(next runtime.HandlerFunc) runtime.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request, pathParams map[string]string) {
			ctx := context.WithValue(r.Context(), responseHeaderKey{}, w.Header())
			r = r.WithContext(ctx)
			if err := checkQuery(r); err != nil {
				_, m := runtime.MarshalerForRequest(*gw, r)
				errorHandler(ctx, *gw, m, w, r, err)
				return
			}
			next(w, r, pathParams)
		}
	}
}

// checkQuery parses r's query string into a fresh request message of its
// endpoint, and refuses any query parameter on an endpoint whose request
// is its body.
func checkQuery(r *http.Request) error {
	rt, _ := routeFor(r.Method, r.URL.Path)
	if rt == nil {
		return nil
	}
	values, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return (&queryError{Param: "query", Description: "is malformed: " + err.Error()}).GRPCStatus().Err()
	}
	if rt.body == "*" {
		for k := range values {
			return badParam(k, "%s %s takes its request as a JSON body, not in the query string", rt.method, rt.path).GRPCStatus().Err()
		}
		return checkBody(r, rt)
	}
	if err := parseQuery(dynamicpb.NewMessage(rt.input), values, nil); err != nil {
		if st, ok := status.FromError(err); ok {
			return st.Err()
		}
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return nil
}

// checkBody decodes a JSON request body as the gateway will, strictly, so
// that a field the request does not have, or a value of the wrong type,
// is named in BadRequest (the generated code would flatten the error to
// its text). The body, already bounded by withBodyLimit, is put back for
// the gateway, its enum values spelled as protojson reads them.
func checkBody(r *http.Request, rt *route) error {
	if r.Body == nil {
		return nil
	}
	b, err := io.ReadAll(r.Body)
	r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(b))
	if err != nil {
		return status.Error(codes.InvalidArgument, "the request body cannot be read: "+err.Error())
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	if protojson.Unmarshal(b, dynamicpb.NewMessage(rt.input)) == nil {
		return nil
	}
	// Enum values in another spelling than their proto name are the
	// usual reason; the gateway then reads the body with proto names.
	canonical, qe := canonicalEnums(rt.input, b)
	if qe != nil {
		return qe.GRPCStatus().Err()
	}
	if err := protojson.Unmarshal(canonical, dynamicpb.NewMessage(rt.input)); err != nil {
		return bodyError(err).GRPCStatus().Err()
	}
	r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(canonical)), int64(len(canonical))
	return nil
}

// jsonField finds the field a protojson error is about.
var jsonField = regexp.MustCompile(`unknown field "([^"]+)"|invalid value for \w+ field (\w+)|field (\w+)`)

// bodyError names the field of a protojson decoding error, or "body".
func bodyError(err error) *queryError {
	msg := err.Error()
	// "proto: (line 1:39): unknown field "rowz"": the position helps,
	// the package prefix does not.
	desc := strings.TrimPrefix(msg, "proto: ")
	field := "body"
	if m := jsonField.FindStringSubmatch(msg); m != nil {
		field = m[1] + m[2] + m[3]
	}
	return &queryError{Param: clip(field), Description: "is not accepted: " + desc}
}

// routingErrorHandler answers a wrong method with 405 and the Allow header
// (the gateway's default is 501), and an unknown path with 404 pointing to
// the API's description.
func routingErrorHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
	switch httpStatus {
	case http.StatusMethodNotAllowed:
		_, allowed := routeFor(r.Method, r.URL.Path)
		if len(allowed) > 0 {
			w.Header().Set("Allow", strings.Join(allowed, ", "))
		}
		errorHandler(ctx, mux, m, w, r, &runtime.HTTPStatusError{HTTPStatus: http.StatusMethodNotAllowed,
			Err: status.Errorf(codes.Unimplemented, "%s is not allowed on %s: use %s", r.Method, r.URL.Path, strings.Join(allowed, " or "))})
	case http.StatusNotFound:
		errorHandler(ctx, mux, m, w, r, status.Errorf(codes.NotFound, "no endpoint %s %s: the API is described at /openapi.json", r.Method, clip(r.URL.Path)))
	default:
		runtime.DefaultRoutingErrorHandler(ctx, mux, m, w, r, httpStatus)
	}
}

// responseHeaderKey holds the response headers of a gateway request, for
// the stream error handler, which gets only the context.
type responseHeaderKey struct{}

// streamErrorHandler converts a stream's error with every detail of its
// status, so that ErrorInfo.metadata.page_token (the deadline, a shutdown,
// the budget) reaches HTTP callers in the last NDJSON line as it reaches
// gRPC ones, and sets Retry-After from its RetryInfo: a stream refused
// before its first message (429, 503) is then answered like a List.
func streamErrorHandler(ctx context.Context, err error) *status.Status {
	st := status.Convert(err)
	if h, ok := ctx.Value(responseHeaderKey{}).(http.Header); ok {
		setRetryAfter(h, st)
	}
	return st
}

// errorHandler is the gateway's default error handler plus a Retry-After
// header taken from the status's RetryInfo, so HTTP clients back off as
// they would on any 429 or 503.
func errorHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	if st, ok := status.FromError(err); ok {
		setRetryAfter(w.Header(), st)
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
}

func dropMetadata(string) (string, bool) { return "", false }

// setRetryAfter sets Retry-After from a status's RetryInfo. Every answer
// that tells callers to come back (429, 503) carries one: linkgate's own
// statuses have a RetryInfo; one without (the gateway's connection to the
// gRPC listener failing, during a shutdown) gets defaultRetryAfter.
func setRetryAfter(h http.Header, st *status.Status) {
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			secs := math.Ceil(ri.GetRetryDelay().AsDuration().Seconds())
			h.Set("Retry-After", strconv.Itoa(int(max(1, secs))))
			return
		}
	}
	switch runtime.HTTPStatusFromCode(st.Code()) {
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		h.Set("Retry-After", defaultRetryAfter)
	}
}

// defaultRetryAfter is the hint of a 429 or 503 that came without one.
const defaultRetryAfter = "5"
