package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// config is every setting of the server. Each comes from an environment
// variable and may be overridden by the flag of the same name.
type config struct {
	GRPCAddr string // LINKGATE_GRPC_ADDR
	HTTPAddr string // LINKGATE_HTTP_ADDR

	// UpstreamURL is the Ahrefs API. "simulator" runs the built-in
	// simulator on a loopback port; so does empty, on the embedded default
	// only (authentication off).
	UpstreamURL     string
	UpstreamKey     secret
	UpstreamKeyFile string
	UpstreamRPM     float64
	// UpstreamPageRows is the rows a stream asks per upstream request.
	UpstreamPageRows int
	// CheckBoundaries proves each continued page against the upstream's
	// own order (paging.Config.TrustCollation, inverted). Default true.
	CheckBoundaries bool
	// PageCacheTTL and PageCacheBytes size the page cache (0 bytes: off);
	// PageCacheShared lets tenants share cached pages.
	PageCacheTTL    time.Duration
	PageCacheBytes  int
	PageCacheShared bool
	// HealthFailures is how many upstream failures in a row turn
	// BacklinksService NOT_SERVING.
	HealthFailures int

	DataDir      string // the bolt ledger and the token key live here
	BudgetName   string
	BudgetUnits  int64
	ResetDay     int
	Lease        time.Duration
	TokenKey     secret
	TokenKeyFile string
	TokenTTL     time.Duration

	ReconcileEvery  time.Duration
	ShutdownTimeout time.Duration
	DrainDelay      time.Duration
	LogFormat       string
	LogLevel        slog.Level

	securityConfig // security.go
	redisConfig    // redis.go: a Redis shared by replicas instead of bolt
	exportConfig   // exports.go

	// otel replaces the providers configured by OTEL_* variables (tests).
	otel *otelOverride
}

// simulatorURL, as LINKGATE_UPSTREAM_URL, asks for the built-in simulator
// by name.
const simulatorURL = "simulator"

// simulated reports whether the upstream is the built-in simulator.
func (c config) simulated() bool { return c.UpstreamURL == "" || c.UpstreamURL == simulatorURL }

// setting is one configuration variable and its flag.
type setting struct {
	name, usage string
	ptr         any
}

// secret is a string that never prints.
type secret string

func (s secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// LogValue keeps secrets out of structured logs.
func (s secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

func defaultConfig() config {
	return config{
		GRPCAddr:         "127.0.0.1:9090",
		HTTPAddr:         "127.0.0.1:8080",
		UpstreamRPM:      60,
		UpstreamPageRows: 1000,
		PageCacheTTL:     time.Minute,
		PageCacheBytes:   32 << 20,
		HealthFailures:   5,
		DataDir:          "data",
		BudgetName:       "default",
		BudgetUnits:      1_000_000,
		ResetDay:         1,
		Lease:            2 * time.Minute,
		TokenTTL:         24 * time.Hour,
		ReconcileEvery:   10 * time.Minute,
		ShutdownTimeout:  15 * time.Second,
		DrainDelay:       2 * time.Second,
		LogFormat:        "json",
		CheckBoundaries:  true,
		LogLevel:         slog.LevelInfo,
		securityConfig:   defaultSecurityConfig(),
		redisConfig:      defaultRedisConfig(),
		exportConfig:     defaultExportConfig(),
	}
}

// loadConfig reads the environment, then the flags, and validates the
// result.
func loadConfig(args []string, getenv func(string) string) (config, error) {
	c := defaultConfig()
	fs := flag.NewFlagSet("linkgate", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // main prints the error, and the usage for -h
	vars := []setting{
		{"grpc-addr", "gRPC listen address", &c.GRPCAddr},
		{"http-addr", "REST listen address", &c.HTTPAddr},
		{"upstream-url", "Ahrefs API base URL; \"simulator\" (or empty, with authentication off) runs the built-in simulator", &c.UpstreamURL},
		{"upstream-key", "Ahrefs API key (prefer LINKGATE_UPSTREAM_KEY_FILE)", &c.UpstreamKey},
		{"upstream-key-file", "file holding the Ahrefs API key", &c.UpstreamKeyFile},
		{"upstream-rpm", "requests per minute of the upstream key as a whole, shared by every replica", &c.UpstreamRPM},
		{"upstream-page-rows", "rows a stream asks per upstream request (a plan's row cap lowers it once learned)", &c.UpstreamPageRows},
		{"check-boundaries", "prove every continued page whose where compares text with a one-row request, so that an upstream comparing text otherwise than it sorts stops the stream instead of losing rows; false only once docs/first-run.md showed the upstream consistent (true/false)", &c.CheckBoundaries},
		{"page-cache-ttl", "how long an upstream page stays fresh in the page cache", &c.PageCacheTTL},
		{"page-cache-bytes", "bytes of upstream pages the page cache keeps (0: off); in Redis when redis-addr is set", &c.PageCacheBytes},
		{"page-cache-shared", "let tenants share cached and coalesced pages (true/false)", &c.PageCacheShared},
		{"health-failures", "upstream failures in a row that turn BacklinksService NOT_SERVING", &c.HealthFailures},
		{"data-dir", "directory of the bolt ledger and the page token key", &c.DataDir},
		{"budget-name", "name of the budget in the ledger", &c.BudgetName},
		{"budget-units", "units the pool may spend per period", &c.BudgetUnits},
		{"budget-reset-day", "day of the month (UTC) the period starts, as usage_reset_date", &c.ResetDay},
		{"lease", "how long a reservation may stay unsettled before it is charged in full", &c.Lease},
		{"token-key", "HMAC keys of page tokens, shared by replicas, comma-separated: the first signs, all verify (prefer the file)", &c.TokenKey},
		{"token-key-file", "file holding the page token keys, one a line (or comma-separated): the first signs, all verify", &c.TokenKeyFile},
		{"token-ttl", "lifetime of page tokens", &c.TokenTTL},
		{"reconcile-every", "how often the ledger is compared with the upstream's usage (0: only at start and when the ledger must be rebuilt)", &c.ReconcileEvery},
		{"shutdown-timeout", "how long shutdown waits for requests to finish", &c.ShutdownTimeout},
		{"drain-delay", "how long health reports NOT_SERVING before the listeners stop", &c.DrainDelay},
		{"log-format", "json or text", &c.LogFormat},
	}
	vars = append(vars, c.securityConfig.settings()...)
	vars = append(vars, c.redisConfig.settings()...)
	vars = append(vars, c.exportConfig.settings()...)
	for _, v := range vars {
		env := "LINKGATE_" + strings.ToUpper(strings.ReplaceAll(v.name, "-", "_"))
		if s := getenv(env); s != "" {
			if err := setValue(v.ptr, s); err != nil {
				return c, fmt.Errorf("%s: %w", env, err)
			}
		}
		fs.Var(flagValue{v.ptr}, v.name, v.usage+" ($"+env+")")
	}
	level := getenv("LINKGATE_LOG_LEVEL")
	fs.StringVar(&level, "log-level", level, "debug, info, warn or error ($LINKGATE_LOG_LEVEL)")
	if err := fs.Parse(args); err != nil {
		return c, usageError{fs, err}
	}
	if fs.NArg() > 0 {
		return c, usageError{fs, fmt.Errorf("unexpected argument %q: linkgate takes flags only", fs.Arg(0))}
	}
	if level != "" {
		if err := c.LogLevel.UnmarshalText([]byte(level)); err != nil {
			return c, fmt.Errorf("log level: %w", err)
		}
	}
	if err := c.readSecrets(); err != nil {
		return c, err
	}
	return c, c.validate()
}

func (c *config) readSecrets() error {
	if c.UpstreamKeyFile != "" {
		b, err := os.ReadFile(c.UpstreamKeyFile)
		if err != nil {
			return fmt.Errorf("upstream key file: %w", err)
		}
		c.UpstreamKey = secret(strings.TrimSpace(string(b)))
	}
	if c.TokenKeyFile != "" {
		b, err := os.ReadFile(c.TokenKeyFile)
		if err != nil {
			return fmt.Errorf("token key file: %w", err)
		}
		c.TokenKey = secret(strings.TrimSpace(string(b)))
	}
	return c.redisConfig.readSecrets()
}

func (c *config) validate() error {
	var errs []error
	for name, addr := range map[string]string{"grpc-addr": c.GRPCAddr, "http-addr": c.HTTPAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	switch {
	case c.UpstreamURL == "" && c.TenantsFile != "":
		// Real callers (authentication is on) must never get the
		// simulator's synthetic data because a variable was forgotten.
		errs = append(errs, fmt.Errorf("LINKGATE_UPSTREAM_URL is not set: set it to the upstream (https://api.ahrefs.com), "+
			"or to %q to serve the built-in simulator's synthetic data on purpose", simulatorURL))
	case c.UpstreamURL != "" && !c.simulated() && c.UpstreamKey == "":
		errs = append(errs, errors.New("upstream-url is set but no key: set LINKGATE_UPSTREAM_KEY or LINKGATE_UPSTREAM_KEY_FILE"))
	}
	if c.UpstreamRPM <= 0 {
		errs = append(errs, errors.New("upstream-rpm must be positive"))
	}
	if c.UpstreamPageRows < 1 || c.UpstreamPageRows > 100_000 {
		errs = append(errs, errors.New("upstream-page-rows must be between 1 and 100000"))
	}
	if c.PageCacheTTL <= 0 || c.PageCacheBytes < 0 || c.HealthFailures < 1 {
		errs = append(errs, errors.New("page-cache-ttl and health-failures must be positive, page-cache-bytes not negative"))
	}
	if c.BudgetUnits <= 0 {
		errs = append(errs, errors.New("budget-units must be positive"))
	}
	if c.ResetDay < 1 || c.ResetDay > 28 {
		errs = append(errs, errors.New("budget-reset-day must be between 1 and 28"))
	}
	if c.Lease <= 0 || c.TokenTTL <= 0 || c.ShutdownTimeout <= 0 || c.DrainDelay < 0 || c.ReconcileEvery < 0 {
		errs = append(errs, errors.New("lease, token-ttl and shutdown-timeout must be positive; drain-delay and reconcile-every not negative"))
	}
	for i, k := range c.tokenKeys() {
		if len(k) < 16 {
			errs = append(errs, fmt.Errorf("page token key %d of %d must be at least 16 bytes", i+1, len(c.tokenKeys())))
		}
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		errs = append(errs, fmt.Errorf("log-format must be json or text, not %q", c.LogFormat))
	}
	errs = append(errs, c.securityConfig.validate()...)
	errs = append(errs, c.redisConfig.validate()...)
	errs = append(errs, c.exportConfig.validate()...)
	errs = append(errs, c.checkAuthListeners())
	return errors.Join(errs...)
}

// tokenKeys are the page token keys: the first signs, every one verifies,
// so that a key can be rotated without refusing the tokens of the one
// before it. They are separated by commas or line breaks.
func (c config) tokenKeys() []string {
	var keys []string
	for _, k := range strings.FieldsFunc(string(c.TokenKey), func(r rune) bool { return r == ',' || r == '\n' || r == '\r' }) {
		if k = strings.TrimSpace(k); k != "" {
			keys = append(keys, k)
		}
	}
	return keys
}

// LogValue is the configuration as logged at start, secrets redacted.
func (c config) LogValue() slog.Value {
	upstream := c.UpstreamURL
	if c.simulated() {
		upstream = "built-in simulator"
	}
	ledger := "bolt:" + c.DataDir
	if c.RedisAddr != "" {
		ledger = "redis:" + c.RedisAddr
	}
	return slog.GroupValue(
		slog.String("grpc_addr", c.GRPCAddr), slog.String("http_addr", c.HTTPAddr),
		slog.String("upstream", upstream), slog.Any("upstream_key", c.UpstreamKey),
		slog.Float64("upstream_rpm", c.UpstreamRPM), slog.Int("upstream_page_rows", c.UpstreamPageRows), slog.Bool("check_boundaries", c.CheckBoundaries),
		slog.String("page_cache_ttl", c.PageCacheTTL.String()), slog.Int("page_cache_bytes", c.PageCacheBytes),
		slog.Bool("page_cache_shared", c.PageCacheShared), slog.String("ledger", ledger),
		slog.String("budget", c.BudgetName), slog.Int64("budget_units", c.BudgetUnits),
		slog.Int("reset_day", c.ResetDay), slog.String("lease", c.Lease.String()),
		slog.Any("token_key", c.TokenKey), slog.String("token_ttl", c.TokenTTL.String()),
		slog.Any("security", c.securityConfig), slog.Any("redis", c.redisConfig),
		slog.Any("exports", c.exportConfig),
	)
}

// flagValue lets one flag set hold fields of several types.
type flagValue struct{ ptr any }

func (f flagValue) String() string {
	if f.ptr == nil {
		return ""
	}
	switch p := f.ptr.(type) {
	case *secret:
		return p.String()
	}
	return fmt.Sprint(reflect.ValueOf(f.ptr).Elem())
}

func (f flagValue) Set(s string) error { return setValue(f.ptr, s) }

func setValue(ptr any, s string) error {
	switch p := ptr.(type) {
	case *string:
		*p = s
	case *secret:
		*p = secret(s)
	case *int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return err
		}
		*p = n
	case *int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return err
		}
		*p = n
	case *byteSize:
		n, err := parseByteSize(s)
		if err != nil {
			return err
		}
		*p = n
	case *bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		*p = b
	case *float64:
		n, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return err
		}
		*p = n
	case *time.Duration:
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*p = d
	default:
		return fmt.Errorf("unsupported setting type %T", ptr)
	}
	return nil
}

// byteSize is a number of bytes, written as 536870912, 512MiB, 1GiB, 64KiB
// (or the Kubernetes spelling 512Mi).
type byteSize int64

func parseByteSize(s string) (byteSize, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = rest, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is not a size in bytes (e.g. 512MiB)", s)
	}
	return byteSize(n * mult), nil
}
