package main

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
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

// withValidText refuses a path or query that is not UTF-8 once decoded:
// protobuf strings must be UTF-8, and the gateway would otherwise fail to
// marshal the request and answer 500 for the caller's mistake.
func withValidText(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			writeStatus(w, badParam("query", "is malformed: %v", err).GRPCStatus())
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
		h.ServeHTTP(w, r)
	})
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

// restHandler is the REST listener's handler: the gateway behind CORS,
// the credentials (checked before any body is read; lim learns which
// connections showed a key), and the body's time and size limits.
func restHandler(c securityConfig, auth *service.Authenticator, lim *connLimit, gw http.Handler) http.Handler {
	return withCORS(c.corsOrigins(), withCredentials(auth, lim, withBodyTimeout(c.BodyTimeout,
		withBodyLimit(int64(c.MaxRequestBytes), withValidText(withCertificateCaller(auth, gw))))))
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
