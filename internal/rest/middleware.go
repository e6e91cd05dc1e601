package rest

import (
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/linkgate/linkgate/service"
)

// CORS answers for the REST API. Pages on an allowed origin may call it with
// credentials (an Authorization header or cookies); pages elsewhere get no
// CORS headers, so the browser refuses their requests.
var (
	corsMethods = []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}
	// corsHeaders are the request headers a page may send.
	corsHeaders = []string{"authorization", "content-type", "accept", "grpc-timeout", "x-request-id"}
	// corsExposed are the response headers a page may read: Retry-After on
	// 429/503, and the resume token and error of a CSV answer (csv.go).
	// gRPC metadata is not forwarded to REST responses at all.
	corsExposed = "Retry-After, Linkgate-Next-Page-Token, Linkgate-Error"
)

// corsMaxAge is how long a browser may cache a preflight, in seconds.
const corsMaxAge = 600

// withCORS wraps h with CORS for the allowed origins (exact matches).
func withCORS(origins []string, h http.Handler) http.Handler {
	if len(origins) == 0 {
		return h
	}
	allowed := map[string]bool{}
	for _, o := range origins {
		allowed[o] = true
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Vary on every response, so no cache serves one origin's answer
		// to another.
		w.Header().Add("Vary", "Origin")
		origin := r.Header.Get("Origin")
		preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
		if preflight {
			w.Header().Add("Vary", "Access-Control-Request-Method")
			w.Header().Add("Vary", "Access-Control-Request-Headers")
		}
		if origin == "" || !allowed[origin] {
			if preflight {
				// Nothing but a browser sends a preflight; refusing it
				// plainly makes the mistake visible in its console.
				http.Error(w, "origin not allowed", http.StatusForbidden)
				return
			}
			h.ServeHTTP(w, r)
			return
		}
		// The exact origin, never "*": a wildcard is not allowed with
		// credentials, and would not say which pages were allowed.
		w.Header().Set("Access-Control-Allow-Origin", origin)
		w.Header().Set("Access-Control-Allow-Credentials", "true")
		if !preflight {
			w.Header().Set("Access-Control-Expose-Headers", corsExposed)
			h.ServeHTTP(w, r)
			return
		}
		if !slices.Contains(corsMethods, r.Header.Get("Access-Control-Request-Method")) {
			http.Error(w, "method not allowed", http.StatusForbidden)
			return
		}
		for _, name := range strings.Split(r.Header.Get("Access-Control-Request-Headers"), ",") {
			if name = strings.ToLower(strings.TrimSpace(name)); name != "" && !slices.Contains(corsHeaders, name) {
				http.Error(w, "header "+name+" not allowed", http.StatusForbidden)
				return
			}
		}
		w.Header().Set("Access-Control-Allow-Methods", strings.Join(corsMethods, ", "))
		w.Header().Set("Access-Control-Allow-Headers", strings.Join(corsHeaders, ", "))
		w.Header().Set("Access-Control-Max-Age", strconv.Itoa(corsMaxAge))
		w.WriteHeader(http.StatusNoContent)
	})
}

// withBodyLimit bounds a REST request's body: a declared length beyond the
// limit is refused at once with 413, and an undeclared one is cut at the
// limit (the gateway then answers 400).
func withBodyLimit(limit int64, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > limit {
			http.Error(w, "request body too large: the limit is "+strconv.FormatInt(limit, 10)+" bytes", http.StatusRequestEntityTooLarge)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		h.ServeHTTP(w, r)
	})
}

// withQuery parses a request's query string, the one time it is parsed:
// the values go on in r.Form, where the CSV output, the strict query check
// and the gateway read them. A path or query that is not UTF-8 once
// decoded is refused: protobuf strings must be UTF-8, and the gateway
// would otherwise fail to marshal the request and answer 500 for the
// caller's mistake.
func withQuery(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q, qe := query(r)
		if qe != nil {
			writeStatus(w, qe.GRPCStatus())
			return
		}
		if !utf8.ValidString(r.URL.Path) {
			writeStatus(w, badParam("path", "is not valid UTF-8").GRPCStatus())
			return
		}
		for k, vs := range q {
			if !utf8.ValidString(k) {
				writeStatus(w, badParam(strings.ToValidUTF8(k, "\uFFFD"), "the parameter's name is not valid UTF-8").GRPCStatus())
				return
			}
			for _, v := range vs {
				if !utf8.ValidString(v) {
					writeStatus(w, badParam(k, "is not valid UTF-8").GRPCStatus())
					return
				}
			}
		}
		r.Form = q
		h.ServeHTTP(w, r)
	})
}

// query is r's query parameters: r.Form once withQuery has parsed them,
// else (a request that did not come through it) its query string parsed.
func query(r *http.Request) (url.Values, *queryError) {
	if r.Form != nil {
		return r.Form, nil
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, badParam("query", "is malformed: %v", err)
	}
	return q, nil
}

// writeStatus answers with a status as the gateway would: its HTTP code
// and the JSON of google.rpc.Status.
func writeStatus(w http.ResponseWriter, st *status.Status) {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(st.Proto())
	if err != nil {
		http.Error(w, st.Message(), runtime.HTTPStatusFromCode(st.Code()))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(runtime.HTTPStatusFromCode(st.Code()))
	w.Write(b)
}

// withCertificateCaller forwards the identity of a REST caller who
// presented a verified client certificate and no API key: the gRPC hop
// sees only the gateway's connection. Such headers sent by the caller are
// dropped first, since only the gateway may set them.
func withCertificateCaller(auth *service.Authenticator, next http.Handler) http.Handler {
	const prefix = "Grpc-Metadata-"
	nameHeader := prefix + service.GatewayCertNameKey
	proofHeader := prefix + service.GatewayProofKey
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k := range r.Header {
			if strings.HasPrefix(strings.ToLower(k), strings.ToLower(prefix)+"linkgate-") {
				r.Header.Del(k)
			}
		}
		if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && r.Header.Get("Authorization") == "" {
			if name, proof, ok := auth.GatewayIdentity(r.TLS.VerifiedChains[0][0]); ok {
				r.Header.Set(nameHeader, name)
				r.Header.Set(proofHeader, proof)
			}
		}
		next.ServeHTTP(w, r)
	})
}

// withCredentials refuses a REST request without valid credentials as soon
// as its headers are read, before its body, with the gRPC service's own
// answer (401), and closes its connection; a request with them takes its
// connection off probation. /healthz and /openapi.json need no key. The
// gRPC service still authenticates what the gateway forwards.
func withCredentials(auth *service.Authenticator, proved func(remoteAddr string), next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" || r.URL.Path == "/openapi.json" {
			next.ServeHTTP(w, r)
			return
		}
		md := metadata.MD{"authorization": r.Header.Values("Authorization")}
		ctx := metadata.NewIncomingContext(r.Context(), md)
		if r.TLS != nil {
			ctx = peer.NewContext(ctx, &peer.Peer{AuthInfo: credentials.TLSInfo{State: *r.TLS}})
		}
		if _, err := auth.Authenticate(ctx); err != nil {
			// The body is never read: reading stops now, and the
			// connection closes after the answer rather than wait for
			// the rest of a body nobody will use.
			http.NewResponseController(w).SetReadDeadline(time.Now())
			w.Header().Set("Connection", "close")
			writeStatus(w, status.Convert(err))
			return
		}
		if proved != nil {
			proved(r.RemoteAddr)
		}
		next.ServeHTTP(w, r)
	})
}

// withBodyTimeout gives a REST request's body d to arrive once its headers
// have: a body trickled a byte at a time is cut there. The deadline is
// lifted once the body has been read, so that a long response stream is
// not cut by it.
func withBodyTimeout(d time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			next.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		if err := rc.SetReadDeadline(time.Now().Add(d)); err == nil {
			r.Body = &timedBody{ReadCloser: r.Body, lift: func() { rc.SetReadDeadline(time.Time{}) }}
		}
		next.ServeHTTP(w, r)
	})
}

// timedBody lifts its read deadline when the body has been read to its end.
type timedBody struct {
	io.ReadCloser
	lift func()
	once sync.Once
}

func (b *timedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.once.Do(b.lift)
	}
	return n, err
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
