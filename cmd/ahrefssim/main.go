// Command ahrefssim serves the Ahrefs API v3 simulator alone, for running,
// testing and benchmarking linkgate offline.
//
//	go run ./cmd/ahrefssim -addr 127.0.0.1:8787 -key sim-key -rpm 60
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

func main() {
	if err := run(context.Background(), os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "ahrefssim:", err)
		os.Exit(1)
	}
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("ahrefssim", flag.ContinueOnError)
	addr := fs.String("addr", env("AHREFSSIM_ADDR", "127.0.0.1:8787"), "listen address (env AHREFSSIM_ADDR)")
	keys := fs.String("key", env("AHREFSSIM_KEY", ahrefssim.DefaultKey), "accepted API key(s), comma-separated (env AHREFSSIM_KEY)")
	rpm := fs.Int("rpm", 0, "requests per minute per key before 429 (0: unlimited)")
	style := fs.String("429", "json", "shape of a 429: json, html, alternate")
	retryAfter := fs.Bool("retry-after", false, "send Retry-After on a JSON 429 (Ahrefs is reported not to)")
	latency := fs.Duration("latency", 0, "latency added to every data response")
	errRate := fs.Float64("error-rate", 0, "fraction of data requests answered 500")
	truncRate := fs.Float64("truncate-rate", 0, "fraction of list bodies cut mid-row")
	seed := fs.Uint64("seed", 1, "seed of the fault injection")
	cacheTTL := fs.Duration("cache-ttl", ahrefssim.DefaultCacheTTL, "upstream cache lifetime (negative: off)")
	keyLimit := fs.Int64("key-limit", 0, "units a key may spend before 403 (0: unlimited)")
	rowCap := fs.Int("row-cap", 0, "rows per request a key's plan allows; a larger limit is silently capped (0: none)")
	collation := fs.String("collation", "bytes", "how order_by sorts and where compares text: bytes, caseless or locale")
	whereCollation := fs.String("where-collation", "", "make where compare text another way than order_by sorts it (an inconsistent upstream); empty: as -collation")
	float32s := fs.Bool("float32", false, "keep numbers as 32-bit floats: sorting and where see 97.30000305 where the JSON shows 97.3")
	verbose := fs.Bool("v", false, "log every request")
	if err := fs.Parse(args); err != nil {
		return err
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg := ahrefssim.Config{
		Keys: strings.Split(*keys, ","), RequestsPerMinute: *rpm, Latency: *latency,
		ErrorRate: *errRate, TruncateRate: *truncRate, Seed: *seed, CacheTTL: *cacheTTL, RowCap: *rowCap, Logger: log,
		RetryAfter: *retryAfter,
	}
	switch *style {
	case "json":
	case "html":
		cfg.RateLimitStyle = ahrefssim.RateLimitHTML
	case "alternate":
		cfg.RateLimitStyle = ahrefssim.RateLimitAlternate
	default:
		return fmt.Errorf("-429 must be json, html or alternate, not %q", *style)
	}
	if *keyLimit > 0 {
		cfg.UnitsLimitAPIKey = keyLimit
	}
	var err error
	if cfg.Collation, err = ahrefssim.ParseCollation(*collation); err != nil {
		return fmt.Errorf("-collation: %w", err)
	}
	if *whereCollation != "" {
		if cfg.WhereCollation, err = ahrefssim.ParseCollation(*whereCollation); err != nil {
			return fmt.Errorf("-where-collation: %w", err)
		}
	}
	cfg.Float32 = *float32s
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	sim := ahrefssim.New(cfg)
	bound, done, err := sim.Start(ctx, *addr)
	if err != nil {
		return err
	}
	// The keys are secrets: log how many there are, never what they are.
	log.Info("ahrefssim serving", "addr", "http://"+bound+"/v3", "keys", len(cfg.Keys), "rpm", *rpm,
		"latency", *latency, "error_rate", *errRate, "truncate_rate", *truncRate, "cache_ttl", *cacheTTL, "row_cap", *rowCap,
		"collation", cfg.Collation, "where_collation", cfg.WhereCollation, "float32", cfg.Float32)
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	log.Info("ahrefssim shutting down")
	select {
	case err := <-done:
		return err
	case <-time.After(6 * time.Second):
		return fmt.Errorf("shutdown timed out")
	}
}
