package service

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

// APIKey is one caller key: the SHA-256 of the key and the caller it names.
// Only hashes are configured, so a leaked tenants file leaks no key.
type APIKey struct {
	SHA256 [sha256.Size]byte
	Caller Caller
}

// AuthConfig configures how callers are identified.
type AuthConfig struct {
	// Disabled makes every caller the DefaultTenant with RoleAdmin. The
	// server allows it only while every listener is on loopback.
	Disabled bool
	// Keys are the accepted API keys.
	Keys []APIKey
	// CertNames maps a verified client certificate's common name or DNS
	// name to its caller (mutual TLS).
	CertNames map[string]Caller
}

// Authenticator turns a request's credentials into its Caller.
type Authenticator struct {
	cfg AuthConfig
	// proof is a random secret of this process. The REST gateway sends it
	// with the certificate name of a REST caller it verified (see
	// GatewayIdentity): only a holder of the proof can speak for a
	// certificate it did not present itself.
	proof string
}

// Metadata keys of a REST caller identified by its client certificate,
// as the gateway forwards it to the gRPC service.
const (
	GatewayCertNameKey = "linkgate-cert-name"
	GatewayProofKey    = "linkgate-gateway-proof"
)

// NewAuthenticator checks the configuration and returns an authenticator.
func NewAuthenticator(cfg AuthConfig) (*Authenticator, error) {
	if cfg.Disabled {
		return &Authenticator{cfg: cfg}, nil
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	proof := hex.EncodeToString(raw)
	for _, k := range cfg.Keys {
		if k.Caller.Tenant == "" || (k.Caller.Role != RoleReader && k.Caller.Role != RoleAdmin) {
			return nil, errors.New("service: every API key needs a tenant and a role")
		}
	}
	for name, c := range cfg.CertNames {
		if name == "" || c.Tenant == "" || (c.Role != RoleReader && c.Role != RoleAdmin) {
			return nil, errors.New("service: every certificate name needs a tenant and a role")
		}
	}
	return &Authenticator{cfg: cfg, proof: proof}, nil
}

// GatewayIdentity returns what the REST gateway forwards for a REST caller
// who presented a verified client certificate: the gRPC service sees only
// the gateway's own connection, not the caller's certificate. ok is false
// when the certificate names no tenant.
func (a *Authenticator) GatewayIdentity(leaf *x509.Certificate) (name, proof string, ok bool) {
	if a.cfg.Disabled || a.proof == "" {
		return "", "", false
	}
	for _, n := range append([]string{leaf.Subject.CommonName}, leaf.DNSNames...) {
		if _, ok := a.cfg.CertNames[n]; ok && n != "" {
			return n, a.proof, true
		}
	}
	return "", "", false
}

// fromGateway returns the caller the REST gateway identified by a client
// certificate, if the request carries the gateway's proof.
func (a *Authenticator) fromGateway(md metadata.MD) (c Caller, present bool, err error) {
	proofs, names := md.Get(GatewayProofKey), md.Get(GatewayCertNameKey)
	if len(proofs) == 0 && len(names) == 0 {
		return Caller{}, false, nil
	}
	if len(proofs) != 1 || len(names) != 1 || a.proof == "" ||
		subtle.ConstantTimeCompare([]byte(proofs[0]), []byte(a.proof)) != 1 {
		return Caller{}, true, errForgedIdentity
	}
	c, ok := a.cfg.CertNames[names[0]]
	if !ok {
		return Caller{}, true, errForgedIdentity
	}
	return c, true, nil
}

// Errors callers see; they never echo what was sent, which may be a key.
var (
	errNoCredentials = status.Error(codes.Unauthenticated,
		"authentication required: send \"authorization: Bearer <API key>\" or a client certificate")
	errBadKey        = status.Error(codes.Unauthenticated, "the API key is not valid")
	errBadAuthHeader = status.Error(codes.Unauthenticated,
		"the authorization header must be \"Bearer <API key>\"")
	errForgedIdentity = status.Error(codes.Unauthenticated,
		"linkgate-* metadata is reserved for linkgate's own gateway")
)

// parseBearer returns the token of an Authorization header value of the
// Bearer scheme (RFC 6750; the scheme name is case-insensitive).
func parseBearer(header string) (string, bool) {
	const scheme = "bearer "
	if len(header) <= len(scheme) || !strings.EqualFold(header[:len(scheme)], scheme) {
		return "", false
	}
	token := strings.TrimLeft(header[len(scheme):], " ")
	if token == "" || strings.ContainsAny(token, " \t\r\n") {
		return "", false
	}
	return token, true
}

// LookupKey returns the caller of an API key. Every configured hash is
// compared, in constant time and without stopping at a match, so the time
// taken tells nothing about which keys exist or how close a guess was.
func (a *Authenticator) LookupKey(key string) (Caller, bool) {
	sum := sha256.Sum256([]byte(key))
	found := -1
	for i := range a.cfg.Keys {
		eq := subtle.ConstantTimeCompare(sum[:], a.cfg.Keys[i].SHA256[:])
		found = subtle.ConstantTimeSelect(eq, i, found)
	}
	if found < 0 {
		return Caller{}, false
	}
	return a.cfg.Keys[found].Caller, true
}

// Authenticate identifies the caller of a request from its metadata (an
// API key) or its verified client certificate. An authorization header,
// when sent, decides alone: a wrong key is refused even over mutual TLS,
// so a mistake is never silently accepted as another identity.
func (a *Authenticator) Authenticate(ctx context.Context) (Caller, error) {
	if a.cfg.Disabled {
		return Caller{Tenant: DefaultTenant, Role: RoleAdmin}, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	if vals := md.Get("authorization"); len(vals) > 0 {
		if len(vals) > 1 {
			return Caller{}, errBadAuthHeader
		}
		key, ok := parseBearer(vals[0])
		if !ok {
			return Caller{}, errBadAuthHeader
		}
		c, ok := a.LookupKey(key)
		if !ok {
			return Caller{}, errBadKey
		}
		return c, nil
	}
	if c, present, err := a.fromGateway(md); present {
		return c, err
	}
	if c, ok := a.fromCertificate(ctx); ok {
		return c, nil
	}
	return Caller{}, errNoCredentials
}

// fromCertificate finds the caller named by a client certificate that the
// TLS handshake verified against the configured client CA.
func (a *Authenticator) fromCertificate(ctx context.Context) (Caller, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return Caller{}, false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return Caller{}, false
	}
	return a.LookupCertificate(info.State.VerifiedChains[0][0])
}

// LookupCertificate returns the caller a verified leaf certificate names by
// its common name or one of its DNS names.
func (a *Authenticator) LookupCertificate(leaf *x509.Certificate) (Caller, bool) {
	for _, name := range append([]string{leaf.Subject.CommonName}, leaf.DNSNames...) {
		if c, ok := a.cfg.CertNames[name]; ok && name != "" {
			return c, true
		}
	}
	return Caller{}, false
}

// public methods answer without credentials: health checks come from
// load balancers and orchestrators, which hold no API key.
func public(method string) bool {
	return strings.HasPrefix(method, "/"+healthpb.Health_ServiceDesc.ServiceName+"/")
}

// TapCredentials returns a gRPC InTapHandle that checks a call's
// credentials as soon as its headers arrive, before grpc-go creates its
// stream: a call without a valid key is answered UNAUTHENTICATED at once
// and holds nothing, where an interceptor would first wait for the request
// message, holding a stream and a goroutine for as long as the peer pleases.
// admit is told of every call let through (public ones without
// credentials) and may refuse it in turn; it must not block, as the handle
// runs on the connection's reading goroutine. The interceptors still
// authenticate: they serve connections without this handle too.
func TapCredentials(a *Authenticator, admit func(ctx context.Context, public bool) error) tap.ServerInHandle {
	return func(ctx context.Context, info *tap.Info) (context.Context, error) {
		if public(info.FullMethodName) {
			return ctx, admit(ctx, true)
		}
		if _, err := a.Authenticate(ctx); err != nil {
			return ctx, err
		}
		return ctx, admit(ctx, false)
	}
}

func authUnary(a *Authenticator) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if public(info.FullMethod) {
			return handler(ctx, req)
		}
		c, err := a.Authenticate(ctx)
		if err != nil {
			return nil, err
		}
		return handler(withCaller(ctx, c), req)
	}
}

func authStream(a *Authenticator) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if public(info.FullMethod) {
			return handler(srv, ss)
		}
		c, err := a.Authenticate(ss.Context())
		if err != nil {
			return err
		}
		return handler(srv, &wrappedStream{ServerStream: ss, ctx: withCaller(ss.Context(), c)})
	}
}
