package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"cloud.google.com/go/longrunning/autogen/longrunningpb"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"

	"github.com/linkgate/linkgate/export"
	"github.com/linkgate/linkgate/export/parts"
	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/service"
)

// exportConfig is where exports write their parts and how the runner of
// this replica runs them.
type exportConfig struct {
	// ExportBucket is a gocloud.dev blob URL (s3://, gs://, file:///);
	// empty means a folder under the data directory.
	ExportBucket string
	// ExportTTL is how long a finished export and its parts are kept.
	ExportTTL time.Duration
	// ExportLease is how long a replica's claim on an export lasts
	// unrenewed: how long a dead replica's exports wait to be taken over.
	ExportLease time.Duration
	// ExportMaxRunning bounds the exports this replica runs at once;
	// ExportMaxPerTenant a tenant's exports running at once on all
	// replicas together.
	ExportMaxRunning, ExportMaxPerTenant int
	// A part ends at the first page boundary past ExportPartRows rows,
	// ExportPartBytes bytes or ExportPartInterval: the interval bounds what
	// a crash costs (the pages since the last part are fetched again).
	ExportPartRows     int64
	ExportPartBytes    byteSize
	ExportPartInterval time.Duration
	// ExportSignedURLExpiry is how long a part's signed URL works, where
	// the bucket signs.
	ExportSignedURLExpiry time.Duration
}

func defaultExportConfig() exportConfig {
	return exportConfig{ExportTTL: 7 * 24 * time.Hour, ExportLease: 30 * time.Second, ExportMaxRunning: 2,
		ExportMaxPerTenant: 1, ExportPartRows: 100_000, ExportPartBytes: 64 << 20, ExportPartInterval: time.Minute,
		ExportSignedURLExpiry: time.Hour}
}

func (c *exportConfig) settings() []setting {
	return []setting{
		{"export-bucket", "blob URL of the bucket exports write to (s3://bucket?region=…, gs://…, file:///dir); empty: <data-dir>/exports", &c.ExportBucket},
		{"export-ttl", "how long a finished export and its parts are kept", &c.ExportTTL},
		{"export-lease", "how long a replica's claim on an export lasts unrenewed (how soon another replica takes over a dead one's)", &c.ExportLease},
		{"export-max-running", "exports this replica runs at once", &c.ExportMaxRunning},
		{"export-max-per-tenant", "exports of one tenant running at once across every replica", &c.ExportMaxPerTenant},
		{"export-part-rows", "rows after which a part ends (at the next page boundary)", &c.ExportPartRows},
		{"export-part-bytes", "bytes after which a part ends (at the next page boundary), e.g. 64MiB", &c.ExportPartBytes},
		{"export-part-interval", "time after which a part ends (at the next page boundary): what a crash costs at most", &c.ExportPartInterval},
		{"export-signed-url-expiry", "how long a part's signed URL works, where the bucket signs", &c.ExportSignedURLExpiry},
	}
}

func (c *exportConfig) validate() []error {
	var errs []error
	if c.ExportTTL <= 0 || c.ExportLease <= 0 || c.ExportPartInterval <= 0 || c.ExportSignedURLExpiry <= 0 {
		errs = append(errs, errors.New("export-ttl, export-lease, export-part-interval and export-signed-url-expiry must be positive"))
	}
	if c.ExportMaxRunning < 1 || c.ExportMaxPerTenant < 1 || c.ExportPartRows < 1 || c.ExportPartBytes < 1 {
		errs = append(errs, errors.New("export-max-running, export-max-per-tenant, export-part-rows and export-part-bytes must be positive"))
	}
	if c.ExportBucket != "" {
		if u, err := url.Parse(c.ExportBucket); err != nil || u.Scheme == "" {
			errs = append(errs, fmt.Errorf("export-bucket must be a blob URL such as s3://bucket or file:///dir, got %q", c.ExportBucket))
		}
	}
	return errs
}

// LogValue is the export settings as logged at start. A bucket URL names
// no secret: credentials come from the environment (AWS_*, GOOGLE_*).
func (c exportConfig) LogValue() slog.Value {
	return slog.GroupValue(slog.String("bucket", c.ExportBucket), slog.String("ttl", c.ExportTTL.String()),
		slog.String("lease", c.ExportLease.String()), slog.Int("max_running", c.ExportMaxRunning),
		slog.Int("max_per_tenant", c.ExportMaxPerTenant), slog.Int64("part_rows", c.ExportPartRows),
		slog.Int64("part_bytes", int64(c.ExportPartBytes)), slog.String("part_interval", c.ExportPartInterval.String()))
}

// startExports opens the bucket and the job store (Redis when the replicas
// share one, else a bolt file in the data directory), registers the export
// services on every gRPC server, and starts the runner, which stopRunner
// stops with a handover of its jobs.
func (s *server) startExports(ctx context.Context, servers []*grpc.Server) error {
	bucketURL := s.cfg.ExportBucket
	if bucketURL == "" {
		dir, err := filepath.Abs(filepath.Join(s.cfg.DataDir, "exports"))
		if err != nil {
			return fmt.Errorf("export bucket: %w", err)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("export bucket: %w", err)
		}
		bucketURL = (&url.URL{Scheme: "file", Path: filepath.ToSlash(dir)}).String()
		if s.rdb != nil {
			s.log.Warn("exports are written to this replica's data directory: replicas that share Redis must share the bucket too "+
				"(set LINKGATE_EXPORT_BUCKET), or an export taken over by another replica loses its parts", "bucket", bucketURL)
		}
	}
	bucket, err := parts.OpenBucket(ctx, bucketURL)
	if err != nil {
		return fmt.Errorf("export bucket: %w", err)
	}
	s.cleanups = append(s.cleanups, bucket.Close)
	store, err := s.exportStore()
	if err != nil {
		return err
	}
	runner, err := export.NewRunner(export.RunnerConfig{Store: store, Source: &service.ExportSource{Backlinks: s.backlinks},
		Bucket: bucket, Lease: s.cfg.ExportLease, MaxRunning: s.cfg.ExportMaxRunning, MaxPerTenant: s.cfg.ExportMaxPerTenant,
		PartRows: s.cfg.ExportPartRows, PartBytes: int64(s.cfg.ExportPartBytes), PartInterval: s.cfg.ExportPartInterval,
		TTL: s.cfg.ExportTTL, Describe: service.DescribeExport, PageToken: service.CheckpointPageToken, Logger: s.log})
	if err != nil {
		return err
	}
	exports, ops, err := service.NewExportServers(service.ExportsConfig{Jobs: runner, Backlinks: s.backlinks,
		Bucket: bucket, BucketURL: bucketURL, SignedURLExpiry: s.cfg.ExportSignedURLExpiry, Logger: s.log})
	if err != nil {
		return err
	}
	for _, srv := range servers {
		srv.RegisterService(service.GuardDecoding(&v1.ExportService_ServiceDesc, s.log), exports)
		srv.RegisterService(service.GuardDecoding(&longrunningpb.Operations_ServiceDesc, s.log), ops)
	}
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := runner.Run(runCtx); err != nil {
			s.log.Error("export runner", "err", err)
		}
	})
	var once sync.Once
	s.stopRunner = func() { once.Do(func() { stop(); wg.Wait() }) }
	// A start that fails later stops the runner with everything else.
	s.cleanups = append(s.cleanups, func() error { s.stopRunner(); return nil })
	s.log.Info("exports", "bucket", bucketURL, "store", fmt.Sprintf("%T", store))
	return nil
}

// exportStore keeps export jobs where the ledger keeps the budget: in the
// Redis the replicas share, or in a bolt file of the data directory.
func (s *server) exportStore() (export.Store, error) {
	if s.rdb != nil {
		return export.NewRedisStore(s.rdb, export.WithRedisKeyPrefix("linkgate:export:"+s.cfg.BudgetName)), nil
	}
	if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	db, err := bolt.Open(filepath.Join(s.cfg.DataDir, "exports.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("export store: %w", err)
	}
	s.cleanups = append(s.cleanups, db.Close)
	return export.NewBoltStore(db, nil)
}

// stopExports hands this replica's exports over at shutdown: each closes
// its part, commits its checkpoint and releases its lease, so another
// replica continues at once. It waits at most timeout.
func (s *server) stopExports(timeout time.Duration) {
	if s.stopRunner == nil {
		return
	}
	done := make(chan struct{})
	go func() { s.stopRunner(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		s.log.Warn("exports still handing over after the shutdown timeout; their leases hand them over", "timeout", timeout.String())
	}
}
