package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisConfig is how linkgate reaches the Redis its replicas share (the
// ledger, the key's rate, the page cache): one server, a master that
// Sentinel fails over, or a Cluster, with a password or ACL user and TLS
// as the operator runs it.
type redisConfig struct {
	// RedisAddr is host:port of the server or of any node of a cluster;
	// comma-separated, several nodes of a cluster, or the sentinels when
	// RedisMasterName is set.
	RedisAddr string
	// RedisMode is auto, single, cluster or sentinel. auto: the sentinels
	// with a master name, a cluster with several addresses, and with one
	// address what the server itself reports (INFO's redis_mode).
	RedisMode       string
	RedisMasterName string // the master's name at the sentinels
	RedisUsername   string // an ACL user; empty: the default user
	RedisPassword   secret
	// RedisPasswordFile holds the password (of RedisUsername, or of the
	// default user).
	RedisPasswordFile         string
	RedisSentinelPassword     secret // the sentinels' own password, if they have one
	RedisSentinelPasswordFile string
	// RedisTLS connects with TLS, verifying the servers against the
	// system's roots, or against RedisTLSCAFile, which implies it.
	RedisTLS           bool
	RedisTLSCAFile     string
	RedisTLSCertFile   string // a client certificate, for servers that ask for one
	RedisTLSKeyFile    string
	RedisTLSServerName string // the name the servers' certificates carry, if not their address
}

const (
	redisAuto     = "auto"
	redisSingle   = "single"
	redisCluster  = "cluster"
	redisSentinel = "sentinel"
)

func defaultRedisConfig() redisConfig { return redisConfig{RedisMode: redisAuto} }

func (c *redisConfig) settings() []setting {
	return []setting{
		{"redis-addr", "Redis shared by replicas (instead of bolt): host:port of the server or any cluster node; comma-separated cluster nodes or sentinels", &c.RedisAddr},
		{"redis-mode", "auto, single, cluster or sentinel (auto: asks the server)", &c.RedisMode},
		{"redis-master-name", "the master's name at the sentinels (redis-addr lists the sentinels)", &c.RedisMasterName},
		{"redis-username", "Redis ACL user (empty: the default user)", &c.RedisUsername},
		{"redis-password", "Redis password (prefer the file)", &c.RedisPassword},
		{"redis-password-file", "file holding the Redis password", &c.RedisPasswordFile},
		{"redis-sentinel-password", "the sentinels' password, if they have one (prefer the file)", &c.RedisSentinelPassword},
		{"redis-sentinel-password-file", "file holding the sentinels' password", &c.RedisSentinelPasswordFile},
		{"redis-tls", "connect to Redis with TLS (true/false); implied by redis-tls-ca-file", &c.RedisTLS},
		{"redis-tls-ca-file", "PEM CA bundle that signs the Redis servers' certificates (default: the system's roots)", &c.RedisTLSCAFile},
		{"redis-tls-cert-file", "PEM client certificate for Redis servers that ask for one", &c.RedisTLSCertFile},
		{"redis-tls-key-file", "PEM private key of redis-tls-cert-file", &c.RedisTLSKeyFile},
		{"redis-tls-server-name", "the name the Redis servers' certificates carry, if not their address", &c.RedisTLSServerName},
	}
}

func (c *redisConfig) readSecrets() error {
	for _, f := range []struct {
		env, path string
		to        *secret
	}{
		{"LINKGATE_REDIS_PASSWORD_FILE", c.RedisPasswordFile, &c.RedisPassword},
		{"LINKGATE_REDIS_SENTINEL_PASSWORD_FILE", c.RedisSentinelPasswordFile, &c.RedisSentinelPassword},
	} {
		if f.path == "" {
			continue
		}
		b, err := os.ReadFile(f.path)
		if err != nil {
			return fmt.Errorf("%s: %w", f.env, err)
		}
		*f.to = secret(strings.TrimRight(string(b), "\r\n"))
	}
	return nil
}

func (c *redisConfig) addrs() []string {
	var a []string
	for s := range strings.SplitSeq(c.RedisAddr, ",") {
		if s = strings.TrimSpace(s); s != "" {
			a = append(a, s)
		}
	}
	return a
}

func (c *redisConfig) validate() []error {
	var errs []error
	if c.RedisAddr == "" {
		if c.RedisMasterName != "" || c.RedisUsername != "" || c.RedisPassword != "" || c.tls() || c.RedisMode != redisAuto {
			errs = append(errs, errors.New("Redis settings are given but LINKGATE_REDIS_ADDR is not set"))
		}
		return errs
	}
	for _, a := range c.addrs() {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("LINKGATE_REDIS_ADDR: %w", err))
		}
	}
	switch c.RedisMode {
	case redisAuto, redisCluster:
	case redisSingle:
		if len(c.addrs()) > 1 {
			errs = append(errs, errors.New("LINKGATE_REDIS_ADDR: one address in single mode"))
		}
	case redisSentinel:
		if c.RedisMasterName == "" {
			errs = append(errs, errors.New("LINKGATE_REDIS_MASTER_NAME: needed in sentinel mode"))
		}
	default:
		errs = append(errs, fmt.Errorf("LINKGATE_REDIS_MODE must be auto, single, cluster or sentinel, not %q", c.RedisMode))
	}
	if c.RedisMasterName != "" && c.RedisMode != redisAuto && c.RedisMode != redisSentinel {
		errs = append(errs, fmt.Errorf("LINKGATE_REDIS_MASTER_NAME names a Sentinel master, but LINKGATE_REDIS_MODE is %s", c.RedisMode))
	}
	if (c.RedisTLSCertFile == "") != (c.RedisTLSKeyFile == "") {
		errs = append(errs, errors.New("LINKGATE_REDIS_TLS_CERT_FILE and LINKGATE_REDIS_TLS_KEY_FILE go together"))
	}
	return errs
}

func (c *redisConfig) tls() bool {
	return c.RedisTLS || c.RedisTLSCAFile != "" || c.RedisTLSCertFile != "" || c.RedisTLSServerName != ""
}

// LogValue is the Redis configuration as logged at start, passwords
// redacted.
func (c redisConfig) LogValue() slog.Value {
	if c.RedisAddr == "" {
		return slog.StringValue("off")
	}
	return slog.GroupValue(slog.String("addr", c.RedisAddr), slog.String("mode", c.RedisMode),
		slog.String("master_name", c.RedisMasterName), slog.String("username", c.RedisUsername),
		slog.Any("password", c.RedisPassword), slog.Any("sentinel_password", c.RedisSentinelPassword),
		slog.Bool("tls", c.tls()), slog.String("tls_ca_file", c.RedisTLSCAFile),
		slog.String("tls_cert_file", c.RedisTLSCertFile))
}

// tlsConfig is the client side of TLS to Redis, nil without TLS.
func (c *redisConfig) tlsConfig() (*tls.Config, error) {
	if !c.tls() {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.RedisTLSServerName}
	if c.RedisTLSCAFile != "" {
		pool, err := readPool(x509.NewCertPool(), c.RedisTLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("LINKGATE_REDIS_TLS_CA_FILE: %w", err)
		}
		cfg.RootCAs = pool
	}
	if c.RedisTLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.RedisTLSCertFile, c.RedisTLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("LINKGATE_REDIS_TLS_CERT_FILE and _KEY_FILE: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// connect returns one client for every mode, and the mode it is for. In
// auto mode with one address it asks the server whether it runs a
// cluster (INFO's redis_mode, as cluster_enabled), so that naming any
// node of a cluster is enough: a plain client of a node reaches only the
// slots that node serves.
func (c *redisConfig) connect(ctx context.Context) (redis.UniversalClient, string, error) {
	tlsCfg, err := c.tlsConfig()
	if err != nil {
		return nil, "", err
	}
	opts := &redis.UniversalOptions{Addrs: c.addrs(), MasterName: c.RedisMasterName, Username: c.RedisUsername,
		Password: string(c.RedisPassword), SentinelPassword: string(c.RedisSentinelPassword), TLSConfig: tlsCfg}
	mode := cmp.Or(c.RedisMode, redisAuto)
	switch {
	case mode == redisSentinel || c.RedisMasterName != "":
		return redis.NewFailoverClient(opts.Failover()), redisSentinel, nil
	case mode == redisCluster || (mode == redisAuto && len(opts.Addrs) > 1):
		return redis.NewClusterClient(opts.Cluster()), redisCluster, nil
	case mode == redisSingle:
		return redis.NewClient(opts.Simple()), redisSingle, nil
	}
	one := redis.NewClient(opts.Simple())
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	info, err := one.Info(ctx, "server").Result()
	switch {
	case err != nil:
		err = fmt.Errorf("LINKGATE_REDIS_ADDR: asking %s whether it runs a cluster: %w "+
			"(LINKGATE_REDIS_MODE=single or cluster starts without asking)", c.RedisAddr, err)
	case strings.Contains(info, "redis_mode:standalone"):
		return one, redisSingle, nil
	case strings.Contains(info, "redis_mode:cluster"):
		_ = one.Close()
		return redis.NewClusterClient(opts.Cluster()), redisCluster, nil
	case strings.Contains(info, "redis_mode:sentinel"):
		err = fmt.Errorf("LINKGATE_REDIS_ADDR: %s is a sentinel: name its master in LINKGATE_REDIS_MASTER_NAME", c.RedisAddr)
	default:
		err = fmt.Errorf("LINKGATE_REDIS_ADDR: %s does not say its redis_mode (LINKGATE_REDIS_MODE=single or cluster starts without asking)", c.RedisAddr)
	}
	_ = one.Close()
	return nil, "", err
}

// connectRedis makes the one Redis client of the ledger, the key's rate
// limiter and the shared page cache.
func (s *server) connectRedis(ctx context.Context) error {
	c, mode, err := s.cfg.connect(ctx)
	if err != nil {
		return err
	}
	s.rdb = c
	s.cleanups = append(s.cleanups, c.Close)
	s.log.Info("connected to Redis", "mode", mode, "addr", s.cfg.RedisAddr)
	return nil
}

// redisWatchEvery is how often the watch asks which server holds the
// budget: a failover is noticed within about this long of go-redis
// reaching the new master.
const redisWatchEvery = time.Second

// watchRedis calls switched whenever the Redis server that holds the
// budget is another than at the last look: after a failover (Sentinel's,
// or a Cluster's for the budget's slot) the new master may lack writes the
// old one acknowledged, and after a restart without persistence it has
// none. Every start of a server draws a new run_id, which INFO reports.
func (s *server) watchRedis(ctx context.Context, switched func()) {
	key := "{" + s.cfg.BudgetName + "}" // the slot of the budget's keys (quota.RedisStore)
	last, refused := "", false
	look := func() {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		id, err := redisRunID(ctx, s.rdb, key)
		var re redis.Error
		if errors.As(err, &re) && !refused {
			// Redis answered, but not with its run_id: an ACL without INFO.
			s.log.Warn("cannot watch Redis for failovers: allow INFO to linkgate's Redis user (+info)", "err", err)
		}
		refused = errors.As(err, &re)
		if err != nil {
			return // readiness reports an unreachable Redis; the next look finds who answers
		}
		if last != "" && id != last {
			s.log.Warn("another Redis server holds the budget now (a failover or a restart): reconciling",
				"run_id", id, "was", last)
			switched()
		}
		last = id
	}
	// The first look is part of the start (bounded by its timeout): a
	// switch right after the start is then seen as one.
	look()
	s.every(ctx, redisWatchEvery, look)
}

// redisRunID is the run_id of the master that serves key.
func redisRunID(ctx context.Context, c redis.UniversalClient, key string) (string, error) {
	var node redis.Cmdable = c
	if cc, ok := c.(*redis.ClusterClient); ok {
		m, err := cc.MasterForKey(ctx, key)
		if err != nil {
			return "", err
		}
		node = m
	}
	info, err := node.Info(ctx, "server").Result()
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(info) {
		if id, ok := strings.CutPrefix(strings.TrimSpace(line), "run_id:"); ok {
			return id, nil
		}
	}
	return "", errors.New("redis: INFO server without a run_id")
}

// redisLog carries go-redis' own messages (a sentinel naming a new master,
// a node that cannot be reached) into linkgate's structured log.
type redisLog struct{ log *slog.Logger }

func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.InfoContext(ctx, "redis client", "detail", fmt.Sprintf(format, v...))
}
