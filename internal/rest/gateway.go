package rest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/dynamicpb"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/gen/openapi"
	"github.com/linkgate/linkgate/service"
)

// Config is what the REST edge needs from the server that runs it.
type Config struct {
	// Conn reaches the gRPC services the gateway forwards to: a loopback
	// connection, never in-process registration, which cannot stream.
	Conn grpc.ClientConnInterface
	// Health answers /healthz.
	Health healthpb.HealthServer
	// Auth checks credentials before a request's body is read, and names
	// the caller of a verified client certificate.
	Auth *service.Authenticator
	// CORSOrigins are the origins whose pages may call the API (exact
	// matches); none turns CORS off.
	CORSOrigins []string
	// BodyTimeout is how long a request's body may take to arrive once
	// its headers have; MaxRequestBytes bounds its size.
	BodyTimeout     time.Duration
	MaxRequestBytes int64
	// Proved, when set, learns the remote address of each request whose
	// credentials were valid (its connection has shown a key).
	Proved func(remoteAddr string)
}

// New returns the REST handler: the gateway behind CORS, the credentials
// (checked before any body is read), the body's time and size limits and
// the strict query parser; the OpenAPI document; and /healthz.
func New(c Config) (http.Handler, error) {
	if c.Conn == nil || c.Health == nil || c.Auth == nil {
		return nil, errors.New("rest: Conn, Health and Auth are required")
	}
	gw := newServeMux()
	// The handlers ignore the context they are registered with.
	ctx := context.Background()
	if err := v1.RegisterBacklinksServiceHandlerClient(ctx, gw, v1.NewBacklinksServiceClient(c.Conn)); err != nil {
		return nil, err
	}
	if err := v1.RegisterQuotaServiceHandlerClient(ctx, gw, v1.NewQuotaServiceClient(c.Conn)); err != nil {
		return nil, err
	}
	if err := registerExports(ctx, gw, c.Conn); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/", csvOutput(gw))
	// A part's download is the file as stored, whatever the Accept header.
	mux.Handle("GET /v1/exports/", gw)
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
			if resp, err := c.Health.Check(r.Context(), &healthpb.HealthCheckRequest{Service: name}); err == nil {
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
	return withCORS(c.CORSOrigins, withCredentials(c.Auth, c.Proved, withBodyTimeout(c.BodyTimeout,
		withBodyLimit(c.MaxRequestBytes, withQuery(withCertificateCaller(c.Auth, mux)))))), nil
}

// newServeMux is the gateway's mux with linkgate's marshalers, query
// parser and error handlers.
func newServeMux() *runtime.ServeMux {
	// strictQuery answers through the mux, which exists only once
	// NewServeMux returns: it holds the variable, not the value.
	var gw *runtime.ServeMux
	gw = runtime.NewServeMux(
		// Ahrefs' snake_case names on the wire, as the protos spell them. A
		// JSON body with a field the request does not have is refused, as
		// an unknown query parameter is: ignoring it would answer another
		// request than the one asked.
		runtime.WithMarshalerOption(runtime.MIMEWildcard, newJSONMarshaler()),
		runtime.WithMarshalerOption(mimeCSV, newCSVMarshaler()),
		runtime.SetQueryParameterParser(queryParser{}),
		runtime.WithMiddlewares(strictQuery(&gw)),
		runtime.WithForwardResponseOption(writeCSVRows),
		runtime.WithErrorHandler(errorHandler),
		runtime.WithStreamErrorHandler(streamErrorHandler),
		runtime.WithRoutingErrorHandler(routingErrorHandler),
		// gRPC metadata (content-type: application/grpc among it) is the
		// transport's business, not a REST response header.
		runtime.WithOutgoingHeaderMatcher(dropMetadata),
		runtime.WithOutgoingTrailerMatcher(dropMetadata),
	)
	return gw
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
			ctx := context.WithValue(r.Context(), responseWriterKey{}, w)
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

// checkQuery parses r's query parameters into a fresh request message of
// its endpoint, and refuses any query parameter on an endpoint whose
// request is its body.
func checkQuery(r *http.Request) error {
	rt, _ := routeFor(r.Method, r.URL.Path)
	if rt == nil {
		return nil
	}
	values, err := query(r)
	if err != nil {
		return err.GRPCStatus().Err()
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

// responseWriterKey holds the response writer of a gateway request, for
// the stream error handler, which gets only the context.
type responseWriterKey struct{}

// streamErrorHandler converts a stream's error with every detail of its
// status, so that ErrorInfo.metadata.page_token (the deadline, a shutdown,
// the budget) reaches HTTP callers in the last NDJSON line as it reaches
// gRPC ones, and sets Retry-After from its RetryInfo: a stream refused
// before its first message (429, 503) is then answered like a List. A CSV
// stream reports the error in its trailers.
func streamErrorHandler(ctx context.Context, err error) *status.Status {
	st := status.Convert(err)
	if w, ok := ctx.Value(responseWriterKey{}).(http.ResponseWriter); ok {
		setRetryAfter(w.Header(), st)
		if cw, ok := w.(*csvWriter); ok {
			cw.fail(st)
		}
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

// jsonMarshaler is the gateway's JSON, with Ahrefs' snake_case names as
// the protos spell them, and names its streams for what they are:
// newline-delimited JSON, as the OpenAPI document says. An error answered
// before a stream's first message is one JSON object, application/json.
type jsonMarshaler struct{ runtime.JSONPb }

func newJSONMarshaler() *jsonMarshaler {
	return &jsonMarshaler{runtime.JSONPb{MarshalOptions: protojson.MarshalOptions{UseProtoNames: true}}}
}

// StreamContentType implements runtime.StreamContentType.
func (*jsonMarshaler) StreamContentType(any) string { return mimeNDJSON }

const mimeNDJSON = "application/x-ndjson"
