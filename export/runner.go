package export

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"gocloud.dev/blob"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/linkgate/linkgate/export/parts"
)

// RunnerConfig configures a Runner. Zero values take the defaults named.
type RunnerConfig struct {
	Store  Store
	Source Source
	Bucket *blob.Bucket
	// Owner names this replica in leases (default host-pid-random).
	Owner string
	// Lease is how long a claim lasts without renewal (30s): how long a
	// dead replica's jobs wait before another takes them over.
	Lease time.Duration
	// Poll is how often an idle runner looks for a job to claim (1s);
	// Submit wakes the runner of its own replica at once.
	Poll time.Duration
	// MaxRunning bounds the jobs this replica runs at once (2);
	// MaxPerTenant the jobs of one tenant running at once on every
	// replica together (1).
	MaxRunning, MaxPerTenant int
	// A part ends at the first page boundary at or after PartRows rows
	// (100,000), PartBytes bytes (64 MiB) or PartInterval (1 minute) since
	// it started. PartInterval bounds what a crash costs: the pages
	// fetched since the last committed part are fetched again.
	PartRows, PartBytes int64
	PartInterval        time.Duration
	// TTL is how long a job and its objects live after it ends (7 days);
	// the sweep runs every SweepEvery (10 minutes).
	TTL, SweepEvery time.Duration
	// Retries is how many times a Source error that may pass (Retryable)
	// is retried from the last page, with backoff, before the job fails (5).
	Retries   int
	Retryable func(error) bool
	// Describe reads in a request what only the Source understands: the
	// columns of its parts and its JSON for the manifest. Without it parts
	// take every field of the row type and the manifest has no request.
	// An error fails the job (INVALID_ARGUMENT).
	Describe func(Request) (Description, error)
	// PageToken turns a checkpoint into the page token a stream of the
	// same request resumes from, for the manifest's next_page_token
	// (default: the checkpoint is that token).
	PageToken func(checkpoint string) string
	Logger    *slog.Logger
	// Providers of spans and metrics (default: otel's globals).
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	Now            func() time.Time
	NewID          func() string
}

// Description is what the runner needs to know of a request's rows.
type Description struct {
	// Columns of CSV and Parquet parts, in order (parts.Options.Columns).
	Columns []string
	// Row is the type of the rows (parts.Options.Row).
	Row protoreflect.MessageDescriptor
	// Request is the request as JSON, for the manifest.
	Request json.RawMessage
}

// Retryable is the default RunnerConfig.Retryable: UNAVAILABLE and ABORTED,
// which say the same page may succeed if asked again. Everything else
// (budgets spent, bad requests, the upstream refusing) fails the job.
func Retryable(err error) bool {
	switch status.Code(err) {
	case grpccodes.Unavailable, grpccodes.Aborted:
		return true
	}
	return false
}

// Runner claims jobs from the Store and runs them. Any number of replicas
// run a Runner over the same Store and Bucket.
type Runner struct {
	cfg  RunnerConfig
	log  *slog.Logger
	tr   trace.Tracer
	wake chan struct{}
	// changed is closed and replaced whenever a job this replica runs
	// commits, so that Wait answers at once.
	mu      sync.Mutex
	changed chan struct{}
	// local cancels of jobs running here, by id.
	cancels map[string]context.CancelFunc
	// dead is a crash: a job sees it and stops without another write.
	dead atomic.Bool

	running, rowsWritten, bytesWritten, partsWritten, takeovers metric.Int64Counter
	runningNow                                                  metric.Int64UpDownCounter
	finished                                                    metric.Int64Counter
}

// NewRunner checks cfg and fills its defaults.
func NewRunner(cfg RunnerConfig) (*Runner, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("export: RunnerConfig.Store is nil")
	case cfg.Source == nil:
		return nil, errors.New("export: RunnerConfig.Source is nil")
	case cfg.Bucket == nil:
		return nil, errors.New("export: RunnerConfig.Bucket is nil")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.Lease, 30*time.Second)
	def(&cfg.Poll, time.Second)
	def(&cfg.PartInterval, time.Minute)
	def(&cfg.TTL, 7*24*time.Hour)
	def(&cfg.SweepEvery, 10*time.Minute)
	if cfg.MaxRunning <= 0 {
		cfg.MaxRunning = 2
	}
	if cfg.MaxPerTenant <= 0 {
		cfg.MaxPerTenant = 1
	}
	if cfg.PartRows <= 0 {
		cfg.PartRows = 100_000
	}
	if cfg.PartBytes <= 0 {
		cfg.PartBytes = 64 << 20
	}
	if cfg.Retries < 0 {
		cfg.Retries = 0
	} else if cfg.Retries == 0 {
		cfg.Retries = 5
	}
	if cfg.Retryable == nil {
		cfg.Retryable = Retryable
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = otel.GetTracerProvider()
	}
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = otel.GetMeterProvider()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PageToken == nil {
		cfg.PageToken = func(c string) string { return c }
	}
	if cfg.NewID == nil {
		cfg.NewID = newID
	}
	if cfg.Owner == "" {
		host, _ := os.Hostname()
		cfg.Owner = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), newID()[:8])
	}
	r := &Runner{cfg: cfg, log: cfg.Logger.With("owner", cfg.Owner), wake: make(chan struct{}, 1),
		changed: make(chan struct{}), cancels: map[string]context.CancelFunc{},
		tr: cfg.TracerProvider.Tracer("github.com/linkgate/linkgate/export")}
	if err := r.instruments(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Runner) instruments() error {
	m := r.cfg.MeterProvider.Meter("github.com/linkgate/linkgate/export")
	var errs []error
	count := func(name, desc, unit string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithDescription(desc), metric.WithUnit(unit))
		errs = append(errs, err)
		return c
	}
	r.rowsWritten = count("linkgate.exports.rows", "Rows written to committed export parts, by tenant.", "{row}")
	r.bytesWritten = count("linkgate.exports.bytes", "Bytes of committed export parts, by tenant.", "By")
	r.partsWritten = count("linkgate.exports.parts", "Export parts committed, by tenant.", "{part}")
	r.takeovers = count("linkgate.exports.takeovers", "Claims of an export another replica had run (after a crash or a handover).", "{claim}")
	r.finished = count("linkgate.exports.finished", "Exports that ended, by state.", "{export}")
	var err error
	r.runningNow, err = m.Int64UpDownCounter("linkgate.exports.running", metric.WithDescription("Exports this replica runs."), metric.WithUnit("{export}"))
	errs = append(errs, err)
	_, err = m.Int64ObservableGauge("linkgate.exports.queued",
		metric.WithDescription("Exports waiting for a replica to claim them, on every replica together."), metric.WithUnit("{export}"),
		metric.WithInt64Callback(func(ctx context.Context, o metric.Int64Observer) error {
			pending, _, err := r.cfg.Store.Counts(ctx)
			if err == nil {
				o.Observe(pending)
			}
			return nil
		}))
	errs = append(errs, err)
	return errors.Join(errs...)
}

func newID() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Owner is the name this replica's leases carry.
func (r *Runner) Owner() string { return r.cfg.Owner }

// Prefix is where a job's objects live in the bucket.
func Prefix(j *Job) string { return j.Tenant + "/" + j.ID + "/" }

// PartKey names part n (from 0) of a job: its sequence, so that a part
// written again after a takeover replaces the partial copy.
func PartKey(j *Job, n int) string {
	return fmt.Sprintf("%spart-%05d%s", Prefix(j), n, parts.Extension(parts.Options{Format: j.Request.Format, Gzip: j.Request.Gzip}))
}

// ManifestKey names a job's manifest, rewritten after every part and at the end.
func ManifestKey(j *Job) string { return Prefix(j) + "manifest.json" }

// Submit stores a new job from j's Tenant, RequestID, Request,
// EstimatedUnits and TargetRows, and wakes the runner. When the tenant
// already has a job with the same RequestID, or one not done with the same
// Request, it returns that job instead.
func (r *Runner) Submit(ctx context.Context, j *Job) (*Job, error) {
	switch {
	case j.Tenant == "":
		return nil, errors.New("export: tenant: empty")
	case j.Request.Dataset == "":
		return nil, errors.New("export: request dataset: empty")
	case parts.Extension(parts.Options{Format: j.Request.Format, Gzip: j.Request.Gzip}) == "":
		return nil, fmt.Errorf("export: request format: %d is not NDJSON, CSV or Parquet", j.Request.Format)
	}
	now := r.cfg.Now().UTC()
	n := j.Clone()
	n.ID, n.State, n.Created, n.Updated, n.Expires = r.cfg.NewID(), StatePending, now, now, now.Add(r.cfg.TTL)
	n.Checkpoint, n.Parts, n.Rows, n.Units, n.CancelRequested = "", nil, 0, 0, false
	got, _, err := r.cfg.Store.Create(ctx, n)
	if err != nil {
		return nil, err
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
	return got, nil
}

// Get returns job id of tenant ("" = any tenant); another tenant's job is
// ErrNotFound.
func (r *Runner) Get(ctx context.Context, tenant, id string) (*Job, error) {
	j, err := r.cfg.Store.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if tenant != "" && j.Tenant != tenant {
		return nil, ErrNotFound
	}
	return j, nil
}

// List returns the jobs of tenant ("" = every tenant), oldest first.
func (r *Runner) List(ctx context.Context, tenant string) ([]*Job, error) {
	return r.cfg.Store.List(ctx, tenant)
}

// Cancel asks job id to stop. A job waiting for a claim ends at once; a
// running one within a page, keeping its parts and checkpoint.
func (r *Runner) Cancel(ctx context.Context, tenant, id string) (*Job, error) {
	if _, err := r.Get(ctx, tenant, id); err != nil {
		return nil, err
	}
	j, err := r.cfg.Store.Cancel(ctx, id)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	stop := r.cancels[id]
	r.mu.Unlock()
	if stop != nil {
		stop()
	}
	r.notify()
	return j, nil
}

// Delete forgets job id and deletes its objects. A running job is
// cancelled first; its owner then finds it gone and stops.
func (r *Runner) Delete(ctx context.Context, tenant, id string) error {
	j, err := r.Get(ctx, tenant, id)
	if err != nil {
		return err
	}
	if !j.State.Done() {
		if _, err := r.Cancel(ctx, tenant, id); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	if err := r.cfg.Store.Delete(ctx, id); err != nil {
		return err
	}
	return r.deleteObjects(ctx, j)
}

func (r *Runner) deleteObjects(ctx context.Context, j *Job) error {
	it := r.cfg.Bucket.List(&blob.ListOptions{Prefix: Prefix(j)})
	for {
		o, err := it.Next(ctx)
		if err != nil {
			if errors.Is(err, ioEOF) {
				return nil
			}
			return err
		}
		if err := r.cfg.Bucket.Delete(ctx, o.Key); err != nil && !isNotFound(err) {
			return err
		}
	}
}

// Wait returns job id once it is done. When ctx ends first it returns the
// job as last read and ctx's error.
func (r *Runner) Wait(ctx context.Context, tenant, id string) (*Job, error) {
	poll := min(r.cfg.Poll, 500*time.Millisecond)
	for {
		r.mu.Lock()
		changed := r.changed
		r.mu.Unlock()
		j, err := r.Get(ctx, tenant, id)
		if err != nil {
			return nil, err
		}
		if j.State.Done() {
			return j, nil
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return j, ctx.Err()
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

func (r *Runner) notify() {
	r.mu.Lock()
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

// Sweep deletes the jobs whose Expires has passed, with their objects, and
// returns how many.
func (r *Runner) Sweep(ctx context.Context) (int, error) {
	n := 0
	for {
		js, err := r.cfg.Store.Expired(ctx, r.cfg.Now(), 100)
		if err != nil || len(js) == 0 {
			return n, err
		}
		for _, j := range js {
			// Objects first: a sweep that stops halfway finds the job again.
			if err := r.deleteObjects(ctx, j); err != nil {
				return n, err
			}
			if err := r.cfg.Store.Delete(ctx, j.ID); err != nil && !errors.Is(err, ErrNotFound) {
				return n, err
			}
			n++
		}
	}
}

// Run claims and runs jobs until ctx ends; then every job it runs closes
// its current part, commits its checkpoint and releases its lease, so that
// another replica continues at once. It returns when they have.
func (r *Runner) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { r.sweepLoop(ctx) })
	done := make(chan struct{}, r.cfg.MaxRunning)
	running := 0
	for {
		for running < r.cfg.MaxRunning && ctx.Err() == nil && !r.dead.Load() {
			j, err := r.cfg.Store.Claim(ctx, r.cfg.Owner, r.cfg.Lease, r.cfg.MaxPerTenant)
			if err != nil {
				if ctx.Err() == nil {
					r.log.Warn("export: claiming a job", "err", err)
				}
				break
			}
			if j == nil {
				break
			}
			running++
			wg.Go(func() {
				r.run(ctx, j)
				done <- struct{}{}
			})
		}
		t := time.NewTimer(r.cfg.Poll)
		select {
		case <-ctx.Done():
			t.Stop()
			for ; running > 0; running-- {
				<-done
			}
			return nil
		case <-done:
			running--
		case <-r.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

func (r *Runner) sweepLoop(ctx context.Context) {
	t := time.NewTicker(r.cfg.SweepEvery)
	defer t.Stop()
	for {
		if n, err := r.Sweep(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("export: sweeping expired jobs", "err", err, "deleted", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// crash stops every job of this runner where it stands, with no further
// write, as a killed process would: what the tests of takeover use.
func (r *Runner) crash() {
	r.dead.Store(true)
	r.mu.Lock()
	for _, stop := range r.cancels {
		stop()
	}
	r.mu.Unlock()
}
