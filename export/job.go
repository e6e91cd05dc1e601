package export

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"gocloud.dev/gcerrors"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/linkgate/linkgate/export/parts"
)

var ioEOF = io.EOF

func isNotFound(err error) bool { return gcerrors.Code(err) == gcerrors.NotFound }

// errLost stops a job whose lease is gone: another replica may run it now.
var errLost = errors.New("export: lease lost")

// jobRun is one claim of a job by this replica.
type jobRun struct {
	r     *Runner
	claim *Job // as claimed: what renewals are fenced on
	j     *Job // as last committed
	ctx   context.Context
	// wctx outlives the Source's context, so that a handover can still
	// close its part and commit.
	wctx context.Context

	opts      parts.Options
	desc      Description
	w         *parts.Writer
	partSpan  trace.Span
	partStart time.Time
	units     int64  // charged for rows not yet in a committed part
	token     string // resumes after the last row emitted
	end       bool   // the last chunk had no token: the data ended

	cancelled, lost atomic.Bool
	mu              sync.Mutex
	leaseOK         time.Time // our lease certainly holds until then (local clock)
}

func (r *Runner) run(ctx context.Context, j *Job) {
	attrs := trace.WithAttributes(attribute.String("export.id", j.ID), attribute.String("tenant", j.Tenant),
		attribute.Int64("export.epoch", j.Epoch), attribute.Int("export.parts", len(j.Parts)))
	ctx, span := r.tr.Start(ctx, "export.run", attrs)
	defer span.End()
	r.runningNow.Add(ctx, 1)
	defer r.runningNow.Add(context.WithoutCancel(ctx), -1)
	if j.Epoch > 1 {
		r.takeovers.Add(ctx, 1)
	}
	srcCtx, stopSource := context.WithCancel(ctx)
	wctx, stopWrites := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWrites()
	run := &jobRun{r: r, claim: j.Clone(), j: j, ctx: srcCtx, wctx: wctx, token: j.Checkpoint, end: j.End,
		leaseOK: time.Now().Add(r.cfg.Lease)}
	r.mu.Lock()
	r.cancels[j.ID] = func() { run.cancelled.Store(true); stopSource() }
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.cancels, j.ID)
		r.mu.Unlock()
	}()
	renewDone := make(chan struct{})
	go func() {
		defer close(renewDone)
		run.renew(stopSource)
	}()

	err := run.fetch()
	stopSource()
	<-renewDone
	outcome := run.finish(ctx, err)
	span.SetAttributes(attribute.String("export.outcome", outcome), attribute.Int64("export.rows", run.j.Rows))
	if outcome == "failed" {
		span.SetStatus(codes.Error, run.j.ErrorMessage)
	}
	r.notify()
}

// renew extends the lease until the Source stops; a lost lease or a cancel
// recorded by any replica stops the Source.
func (run *jobRun) renew(stopSource context.CancelFunc) {
	r := run.r
	every := min(r.cfg.Lease/3, time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-run.ctx.Done():
			return
		case <-t.C:
		}
		sent := time.Now()
		cur, err := r.cfg.Store.Renew(run.ctx, run.claim, r.cfg.Lease)
		switch {
		case err == nil:
			run.mu.Lock()
			run.leaseOK = sent.Add(r.cfg.Lease)
			run.mu.Unlock()
			if cur.CancelRequested {
				run.cancelled.Store(true)
				stopSource()
				return
			}
		case errors.Is(err, ErrFenced) || errors.Is(err, ErrNotFound):
			run.lost.Store(true)
			stopSource()
			return
		case !run.holds():
			run.lost.Store(true)
			stopSource()
			return
		}
	}
}

// holds reports whether the lease certainly still holds.
func (run *jobRun) holds() bool { return run.holdsFor(0) }

// holdsFor reports whether the lease certainly holds d from now.
func (run *jobRun) holdsFor(d time.Duration) bool {
	run.mu.Lock()
	defer run.mu.Unlock()
	return time.Now().Add(d).Before(run.leaseOK)
}

// fetch runs the Source from the checkpoint to its end, retrying the errors
// that may pass from the last page emitted.
func (run *jobRun) fetch() error {
	r := run.r
	if run.end || run.j.CancelRequested {
		return nil
	}
	if r.cfg.Describe != nil {
		d, err := r.cfg.Describe(run.j.Request)
		if err != nil {
			return status.Errorf(grpccodes.InvalidArgument, "export request: %v", err)
		}
		run.desc = d
	}
	run.opts = parts.Options{Format: run.j.Request.Format, Gzip: run.j.Request.Gzip, Columns: run.desc.Columns, Row: run.desc.Row}
	for attempt := 0; ; attempt++ {
		err := r.cfg.Source.Run(run.ctx, run.j.Tenant, run.j.Request, run.token, run.emit)
		if err == nil || run.ctx.Err() != nil || !r.cfg.Retryable(err) || attempt >= r.cfg.Retries {
			return err
		}
		wait := min(time.Second<<attempt, 30*time.Second)
		r.log.Warn("export: retrying the source", "export", run.j.ID, "err", err, "in", wait)
		select {
		case <-run.ctx.Done():
			return run.ctx.Err()
		case <-time.After(wait):
		}
	}
}

func (run *jobRun) emit(c Chunk) error {
	r := run.r
	if err := run.ctx.Err(); err != nil {
		return err
	}
	if len(c.Rows) > 0 && run.w == nil {
		key := PartKey(run.j, len(run.j.Parts))
		_, run.partSpan = r.tr.Start(run.ctx, "export.part", trace.WithAttributes(attribute.String("export.id", run.j.ID),
			attribute.String("export.part", key)))
		w, err := parts.NewWriter(run.wctx, r.cfg.Bucket, key, run.opts)
		if err != nil {
			run.partSpan.End()
			return err
		}
		run.w, run.partStart = w, time.Now()
	}
	for _, m := range c.Rows {
		if err := run.w.Write(m); err != nil {
			return err
		}
	}
	run.units += c.Units
	run.token, run.end = c.Token, c.Token == ""
	if run.w != nil && (run.w.Rows() >= r.cfg.PartRows || run.w.Bytes() >= r.cfg.PartBytes ||
		time.Since(run.partStart) >= r.cfg.PartInterval) {
		return run.closePart()
	}
	return nil
}

// closePart commits the open part to the bucket and then the checkpoint
// after it, so a checkpoint never names a part the bucket lacks.
func (run *jobRun) closePart() error {
	if run.w == nil {
		return nil
	}
	w, span := run.w, run.partSpan
	run.w, run.partSpan = nil, nil
	defer span.End()
	// A part is committed only with a quarter of the lease ahead: a claim
	// that may have lapsed must not replace, under the same name, a part
	// its successor wrote.
	if run.r.dead.Load() || !run.holdsFor(run.r.cfg.Lease/4) {
		w.Abort()
		run.lost.Store(true)
		return errLost
	}
	part, err := w.Close()
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return err
	}
	next := run.progress()
	next.Parts = append(next.Parts, part)
	next.Rows += part.Rows
	if err := run.commit(next); err != nil {
		span.SetStatus(codes.Error, err.Error())
		return err
	}
	run.manifest(run.j, false)
	span.SetAttributes(attribute.Int64("export.rows", part.Rows), attribute.Int64("export.bytes", part.Bytes))
	tenant := metric.WithAttributes(attribute.String("tenant", run.j.Tenant))
	run.r.rowsWritten.Add(run.wctx, part.Rows, tenant)
	run.r.bytesWritten.Add(run.wctx, part.Bytes, tenant)
	run.r.partsWritten.Add(run.wctx, 1, tenant)
	return nil
}

// progress is the job with the units and token of the rows emitted so far.
func (run *jobRun) progress() *Job {
	next := run.j.Clone()
	next.Units += run.units
	next.Checkpoint, next.End = run.token, run.end
	return next
}

// commit writes next fenced on the epoch, retrying a store that fails while
// the lease holds.
func (run *jobRun) commit(next *Job) error {
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		if run.r.dead.Load() {
			return errLost
		}
		err := run.r.cfg.Store.Commit(run.wctx, next)
		switch {
		case err == nil:
			run.j, run.units = next, 0
			run.r.notify()
			return nil
		case errors.Is(err, ErrFenced) || errors.Is(err, ErrNotFound):
			run.lost.Store(true)
			return errLost
		case !run.holds():
			run.lost.Store(true)
			return errLost
		}
		run.r.log.Warn("export: committing a checkpoint", "export", next.ID, "err", err)
		select {
		case <-run.wctx.Done():
			return errLost
		case <-time.After(wait):
		}
	}
}

// finish ends the claim after the Source stopped with err: the job
// succeeds, fails, is cancelled, or (at shutdown) is handed over with its
// checkpoint; a crashed or fenced claim writes nothing more.
func (run *jobRun) finish(ctx context.Context, err error) string {
	r := run.r
	switch {
	case r.dead.Load():
		run.abort()
		return "crashed"
	case run.lost.Load() || errors.Is(err, errLost):
		run.abort()
		r.log.Warn("export: lost the lease; another replica continues", "export", run.j.ID)
		return "lost"
	}
	if cerr := run.closePart(); cerr != nil {
		run.abort()
		if run.lost.Load() || r.dead.Load() {
			return "lost"
		}
		// The bucket refused the part: end the job with what it has.
		err = cerr
	}
	switch {
	case run.cancelled.Load() || run.j.CancelRequested:
		next := run.progress()
		cancelled(next)
		return run.conclude(next, "cancelled")
	case err == nil:
		next := run.progress()
		next.End, next.State = true, StateSucceeded
		return run.conclude(next, "succeeded")
	case ctx.Err() != nil && !errors.Is(err, errLost):
		// Shutdown: hand the job over now rather than at the lease's end.
		if rerr := r.cfg.Store.Release(run.wctx, run.j); rerr != nil {
			r.log.Warn("export: releasing a job", "export", run.j.ID, "err", rerr)
		}
		return "released"
	}
	next := run.progress()
	st := status.Convert(err)
	code := st.Code()
	if code == grpccodes.OK {
		code = grpccodes.Unknown
	}
	next.State, next.ErrorCode, next.ErrorMessage = StateFailed, int32(code), st.Message()
	r.log.Warn("export: failed", "export", run.j.ID, "err", err)
	return run.conclude(next, "failed")
}

// conclude commits a final state, its manifest first: a manifest that says
// the job ended is rewritten by whoever ends it after a crash in between.
func (run *jobRun) conclude(next *Job, outcome string) string {
	next.Expires = run.r.cfg.Now().Add(run.r.cfg.TTL).UTC()
	if next.State == StateSucceeded && !run.manifest(next, true) {
		next.State, next.ErrorCode, next.ErrorMessage = StateFailed, int32(grpccodes.Unavailable), "writing the manifest failed"
	} else if next.State != StateSucceeded {
		run.manifest(next, true)
	}
	if err := run.commit(next); err != nil {
		return "lost"
	}
	run.r.finished.Add(run.wctx, 1, metric.WithAttributes(attribute.String("state", next.State.String())))
	return outcome
}

func (run *jobRun) abort() {
	if run.w != nil {
		run.w.Abort()
		run.partSpan.End()
		run.w = nil
	}
}

// manifest writes beside the parts what a loader needs to read them
// without linkgate, and what recovers the job if its store lost it: the
// committed parts and the token that resumes after them. It is rewritten
// after every part (state RUNNING) and at the end; the store's record stays
// the authority. A claim whose lease may be gone writes none, so that it
// does not replace its successor's.
func (run *jobRun) manifest(j *Job, final bool) bool {
	if run.r.dead.Load() || !run.holds() {
		return false
	}
	m := parts.Manifest{Name: "exports/" + j.ID, Tenant: j.Tenant, Request: run.desc.Request,
		Format: j.Request.Format, Gzip: j.Request.Gzip, Parts: j.Parts, Rows: j.Rows, Units: j.Units,
		State: StateRunning.String(), CreateTime: j.Created, ExpireTime: j.Expires}
	if final {
		m.State, m.Error, m.EndTime = j.State.String(), j.ErrorMessage, run.r.cfg.Now().UTC()
	}
	if !j.End {
		m.NextPageToken = run.r.cfg.PageToken(j.Checkpoint)
	}
	if run.desc.Row != nil {
		cols, err := parts.Schema(run.desc.Row, run.desc.Columns)
		if err == nil {
			m.Columns = cols
		}
	}
	if err := parts.WriteManifest(run.wctx, run.r.cfg.Bucket, ManifestKey(j), m); err != nil {
		run.r.log.Warn("export: writing the manifest", "export", j.ID, "err", err)
		return false
	}
	return true
}
