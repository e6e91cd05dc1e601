package main

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/url"
	"runtime/debug"
	"strings"
	"time"

	"google.golang.org/grpc/keepalive"

	"github.com/linkgate/linkgate/service"
)

// securityConfig is the part of the configuration about who may call and
// how much they may send: authentication, TLS, CORS and limits.
type securityConfig struct {
	TenantsFile     string // LINKGATE_TENANTS_FILE; empty: authentication off (loopback only)
	TLSCertFile     string // LINKGATE_TLS_CERT_FILE: both listeners serve TLS
	TLSKeyFile      string // LINKGATE_TLS_KEY_FILE
	TLSClientCAFile string // LINKGATE_TLS_CLIENT_CA_FILE: verify client certificates (mTLS)
	TLSCAFile       string // LINKGATE_TLS_CA_FILE: extra roots the gateway trusts for the gRPC listener
	TLSServerName   string // LINKGATE_TLS_SERVER_NAME: the name the gateway checks in the gRPC certificate
	CORSOrigins     string // LINKGATE_CORS_ORIGINS: comma-separated allowed origins

	MaxStreamsPerTenant int // LINKGATE_MAX_STREAMS_PER_TENANT
	// MaxStreams bounds the streams of all tenants together
	// (LINKGATE_MAX_STREAMS); 0 derives it from the memory limit.
	MaxStreams int
	// MemoryLimit is the replica's memory (LINKGATE_MEMORY_LIMIT, e.g. the
	// container's limit); 0 means GOMEMLIMIT, or 1 GiB without either.
	MemoryLimit     byteSize
	MaxRequestBytes int // LINKGATE_MAX_REQUEST_BYTES: gRPC message and REST body
	MaxHeaderBytes  int // LINKGATE_MAX_HEADER_BYTES: REST request headers

	// What a peer may hold (peers.go). MaxConnections bounds each
	// listener's connections (LINKGATE_MAX_CONNECTIONS); 0 derives it from
	// the memory limit.
	MaxConnections int
	// MaxStreamsPerConnection bounds a gRPC connection's concurrent calls
	// (LINKGATE_MAX_STREAMS_PER_CONNECTION), and a REST HTTP/2 one's.
	MaxStreamsPerConnection int
	// HeaderTimeout (LINKGATE_HEADER_TIMEOUT) is the time a new connection
	// has to finish its handshakes and send a request with a valid key (a
	// health check does not count), and a REST request to send its headers.
	HeaderTimeout time.Duration
	// BodyTimeout (LINKGATE_BODY_TIMEOUT) is the time a REST request's body
	// has to arrive after its headers.
	BodyTimeout time.Duration
	// IdleTimeout (LINKGATE_IDLE_TIMEOUT) closes a connection without a
	// request in flight for that long.
	IdleTimeout time.Duration

	// MetricsAddr is the listener of /metrics (LINKGATE_METRICS_ADDR):
	// with authentication on it is the only place /metrics is served,
	// by default on loopback; "off" serves no /metrics. With
	// authentication off /metrics is on the REST listener too.
	MetricsAddr string
}

// defaultMetricsAddr keeps /metrics on the machine unless an operator
// opens it: it shows tenant names, budgets and spend.
const defaultMetricsAddr = "127.0.0.1:9102"

func defaultSecurityConfig() securityConfig {
	return securityConfig{MaxStreamsPerTenant: 8, MaxRequestBytes: 64 << 10, MaxHeaderBytes: 64 << 10,
		MetricsAddr: defaultMetricsAddr, MaxStreamsPerConnection: 100,
		HeaderTimeout: 10 * time.Second, BodyTimeout: 15 * time.Second, IdleTimeout: 2 * time.Minute}
}

// memoryLimit is the memory the stream bound is derived from: the
// configured limit, else GOMEMLIMIT, else 0 (service.DefaultMemoryLimit).
func (c securityConfig) memoryLimit() int64 {
	if c.MemoryLimit > 0 {
		return int64(c.MemoryLimit)
	}
	if l := debug.SetMemoryLimit(-1); l != math.MaxInt64 {
		return l
	}
	return 0
}

// maxStreams is the bound on all tenants' streams together.
func (c securityConfig) maxStreams() int {
	if c.MaxStreams > 0 {
		return c.MaxStreams
	}
	return service.MaxStreamsFor(c.memoryLimit())
}

// securitySettings are the variables and flags of securityConfig.
func (c *securityConfig) settings() []setting {
	return []setting{
		{"tenants-file", "JSON file of tenants, their roles, limits and API key hashes; unset: authentication off (loopback only)", &c.TenantsFile},
		{"tls-cert-file", "PEM certificate (chain) of both listeners; enables TLS", &c.TLSCertFile},
		{"tls-key-file", "PEM private key of tls-cert-file", &c.TLSKeyFile},
		{"tls-client-ca-file", "PEM CA bundle that signs client certificates (mutual TLS)", &c.TLSClientCAFile},
		{"tls-ca-file", "PEM CA bundle the gateway trusts for the gRPC listener, beyond tls-cert-file itself", &c.TLSCAFile},
		{"tls-server-name", "name the gateway expects in the gRPC certificate (default: its first DNS or IP name)", &c.TLSServerName},
		{"cors-origins", "comma-separated origins (scheme://host[:port]) whose pages may call the REST API", &c.CORSOrigins},
		{"max-streams-per-tenant", "concurrent Stream RPCs per tenant", &c.MaxStreamsPerTenant},
		{"max-streams", "concurrent Stream RPCs of all tenants together; 0: half the memory limit over 512 KiB a stream", &c.MaxStreams},
		{"memory-limit", "memory of the replica (e.g. 512MiB, the container's limit); sets GOMEMLIMIT to 90% of it unless GOMEMLIMIT is set", &c.MemoryLimit},
		{"metrics-addr", "listener of /metrics (loopback by default); off: none", &c.MetricsAddr},
		{"max-request-bytes", "largest gRPC request message and REST request body", &c.MaxRequestBytes},
		{"max-header-bytes", "largest REST request header block", &c.MaxHeaderBytes},
		{"max-connections", "connections of each listener; 0: an eighth of the memory limit at 64 KiB a connection", &c.MaxConnections},
		{"max-streams-per-connection", "concurrent calls on one gRPC (or REST HTTP/2) connection", &c.MaxStreamsPerConnection},
		{"header-timeout", "time a new connection has to send a request with a valid key, and a REST request its headers", &c.HeaderTimeout},
		{"body-timeout", "time a REST request body has to arrive after its headers", &c.BodyTimeout},
		{"idle-timeout", "a connection without a request in flight for this long is closed", &c.IdleTimeout},
	}
}

// corsOrigins is the parsed allow-list.
func (c securityConfig) corsOrigins() []string {
	var out []string
	for _, o := range strings.Split(c.CORSOrigins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			out = append(out, strings.TrimSuffix(o, "/"))
		}
	}
	return out
}

func (c securityConfig) validate() []error {
	var errs []error
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs = append(errs, errors.New("set both LINKGATE_TLS_CERT_FILE and LINKGATE_TLS_KEY_FILE, or neither"))
	}
	if c.TLSCertFile == "" && (c.TLSClientCAFile != "" || c.TLSCAFile != "" || c.TLSServerName != "") {
		errs = append(errs, errors.New("LINKGATE_TLS_CLIENT_CA_FILE, _CA_FILE and _SERVER_NAME need LINKGATE_TLS_CERT_FILE"))
	}
	if c.TLSClientCAFile != "" && c.TenantsFile == "" {
		errs = append(errs, errors.New("LINKGATE_TLS_CLIENT_CA_FILE needs LINKGATE_TENANTS_FILE to map certificate names to tenants"))
	}
	for _, o := range c.corsOrigins() {
		if err := checkOrigin(o); err != nil {
			errs = append(errs, fmt.Errorf("LINKGATE_CORS_ORIGINS: %w", err))
		}
	}
	if c.MaxStreamsPerTenant <= 0 || c.MaxRequestBytes <= 0 || c.MaxHeaderBytes <= 0 {
		errs = append(errs, errors.New("max-streams-per-tenant, max-request-bytes and max-header-bytes must be positive"))
	}
	if c.MaxStreams < 0 || c.MemoryLimit < 0 || c.MaxConnections < 0 {
		errs = append(errs, errors.New("max-streams, max-connections and memory-limit must not be negative (0: derived)"))
	}
	if c.MaxStreamsPerConnection <= 0 || c.HeaderTimeout <= 0 || c.BodyTimeout <= 0 || c.IdleTimeout <= 0 {
		errs = append(errs, errors.New("max-streams-per-connection, header-timeout, body-timeout and idle-timeout must be positive"))
	}
	if c.MetricsAddr != "off" && c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			errs = append(errs, fmt.Errorf("LINKGATE_METRICS_ADDR: %w (or off)", err))
		}
	}
	return errs
}

// checkOrigin accepts an exact origin only: a wildcard would let any web
// page spend the budget with a visitor's credentials.
func checkOrigin(o string) error {
	if o == "*" || o == "null" {
		return fmt.Errorf("%q is not allowed: list each origin (scheme://host[:port])", o)
	}
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil {
		return fmt.Errorf("%q is not an origin (scheme://host[:port])", o)
	}
	return nil
}

// checkAuthListeners refuses to run without authentication unless every
// listener is on loopback, where only this machine can reach it. It runs
// before anything listens.
func (c config) checkAuthListeners() error {
	if c.TenantsFile != "" {
		return nil
	}
	for _, l := range []struct{ env, addr string }{{"LINKGATE_GRPC_ADDR", c.GRPCAddr}, {"LINKGATE_HTTP_ADDR", c.HTTPAddr}} {
		if !isLoopback(l.addr) {
			return fmt.Errorf("authentication is off but %s=%s is not a loopback address: "+
				"set LINKGATE_TENANTS_FILE to a tenants file (see docs/security.md), or listen on 127.0.0.1", l.env, l.addr)
		}
	}
	return nil
}

// isLoopback reports whether a listen address binds loopback only; an
// empty host binds every interface.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// LogValue is the security configuration as logged at start. The tenants
// file holds only key hashes, but its path is all the log needs.
func (c securityConfig) LogValue() slog.Value {
	auth := "off (loopback only)"
	if c.TenantsFile != "" {
		auth = "tenants file " + c.TenantsFile
	}
	tls := "off"
	if c.TLSCertFile != "" {
		tls = "on"
		if c.TLSClientCAFile != "" {
			tls = "mutual"
		}
	}
	return slog.GroupValue(
		slog.String("auth", auth), slog.String("tls", tls), slog.Any("cors_origins", c.corsOrigins()),
		slog.Int("max_streams_per_tenant", c.MaxStreamsPerTenant), slog.Int("max_streams", c.maxStreams()),
		slog.Int64("memory_limit", c.memoryLimit()), slog.String("metrics", c.metricsListener()),
		slog.Int("max_request_bytes", c.MaxRequestBytes), slog.Int("max_header_bytes", c.MaxHeaderBytes),
		slog.Int("max_connections", c.maxConnections()), slog.Int("max_streams_per_connection", c.MaxStreamsPerConnection),
		slog.String("header_timeout", c.HeaderTimeout.String()), slog.String("body_timeout", c.BodyTimeout.String()),
		slog.String("idle_timeout", c.IdleTimeout.String()),
	)
}

// metricsListener says where /metrics is served: with authentication off
// on the REST listener, whatever LINKGATE_METRICS_ADDR says.
func (c securityConfig) metricsListener() string {
	if c.TenantsFile == "" {
		return "the REST listener"
	}
	return c.MetricsAddr
}

// security is what start builds from securityConfig.
type security struct {
	tenants tenants
	auth    *service.Authenticator
	limits  service.LimitsConfig
	tls     *tlsSetup
}

// loadSecurity checks that the listeners may run as configured and loads
// the tenants and certificates. start calls it before anything listens.
func loadSecurity(c config) (*security, error) {
	if err := c.checkAuthListeners(); err != nil {
		return nil, err
	}
	t, err := loadTenants(c.TenantsFile)
	if err != nil {
		return nil, err
	}
	auth, err := service.NewAuthenticator(t.auth)
	if err != nil {
		return nil, err
	}
	tlsSetup, err := loadTLS(c.securityConfig, c.GRPCAddr)
	if err != nil {
		return nil, err
	}
	return &security{
		tenants: t, auth: auth, tls: tlsSetup,
		limits: service.LimitsConfig{MaxStreamsPerTenant: c.MaxStreamsPerTenant, MaxStreams: c.maxStreams(),
			MaxRecvMsgBytes: c.MaxRequestBytes, Keepalive: c.keepalive()},
	}, nil
}

// keepalive is the gRPC server's: service.DefaultKeepalive with the idle
// timeout.
func (c securityConfig) keepalive() *keepalive.ServerParameters {
	ka := service.DefaultKeepalive
	ka.MaxConnectionIdle = c.IdleTimeout
	return &ka
}

// GoString keeps secrets out of %#v too, which ignores String.
func (s secret) GoString() string { return `"` + s.String() + `"` }
