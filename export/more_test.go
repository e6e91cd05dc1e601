package export

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestLimits: a replica runs at most MaxRunning jobs, and a tenant at most
// MaxPerTenant; the others wait, counted as queued.
func TestLimits(t *testing.T) {
	eachStore(t, func(t *testing.T, kind string) {
		ctx := context.Background()
		st, b := newStore(t, kind), memBucket(t)
		var arrived atomic.Int64
		open := make(chan struct{})
		src := &fakeSource{Rows: 30, Page: 10, before: func(ctx context.Context, off int) error {
			if off != 10 {
				return nil
			}
			arrived.Add(1)
			select {
			case <-open:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}}
		r := testRunner(t, st, b, src, func(c *RunnerConfig) { c.MaxRunning, c.MaxPerTenant, c.Lease = 2, 1, 5*time.Second })
		var ids []string
		for _, tr := range [][2]string{{"t1", "a"}, {"t1", "b"}, {"t2", "a"}, {"t3", "a"}} {
			j, err := r.Submit(ctx, newJob(tr[0], tr[1]))
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, j.ID)
		}
		start(t, r)
		deadline := time.Now().Add(5 * time.Second)
		for arrived.Load() < 2 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond) // room for a claim the limits should refuse
		if n := arrived.Load(); n != 2 {
			t.Fatalf("%d jobs run at once, want 2", n)
		}
		pending, running, err := st.Counts(ctx)
		if err != nil || pending != 2 || running != 2 {
			t.Fatalf("counts: %d pending, %d running (%v), want 2 and 2", pending, running, err)
		}
		for _, id := range ids[1:2] {
			if j, _ := st.Get(ctx, id); j.State != StatePending {
				t.Errorf("t1's second job is %v while its first runs", j.State)
			}
		}
		close(open)
		for _, id := range ids {
			if j := wait(t, r, id); j.State != StateSucceeded {
				t.Errorf("job %s ended %v", id, j.State)
			}
		}
	})
}

// TestSourceErrors: an error that may pass is retried from the last page;
// another ends the job FAILED with its code, keeping parts and checkpoint.
func TestSourceErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		state State
	}{
		{"unavailable", status.Error(codes.Unavailable, "upstream down"), StateSucceeded},
		{"denied", status.Error(codes.PermissionDenied, "no access to the target"), StateFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, b := NewMemoryStore(nil), memBucket(t)
			var once sync.Once
			src := &fakeSource{Rows: 200, Page: 10}
			src.before = func(ctx context.Context, off int) error {
				var err error
				if off == 60 {
					once.Do(func() { err = tc.err })
				}
				return err
			}
			r := testRunner(t, st, b, src, nil)
			j, _ := r.Submit(context.Background(), newJob("t1", "a"))
			start(t, r)
			j = wait(t, r, j.ID)
			if j.State != tc.state {
				t.Fatalf("job ended %v (%s), want %v", j.State, j.ErrorMessage, tc.state)
			}
			if tc.state == StateSucceeded {
				checkExact(t, b, j, 200)
				if p := src.pages.Load(); p != 20 {
					t.Errorf("the source served %d pages, want 20", p)
				}
				return
			}
			if j.ErrorCode != int32(codes.PermissionDenied) || j.ErrorMessage != "no access to the target" ||
				j.Rows != 60 || j.Checkpoint != "60" || len(partRows(t, b, j)) != 60 {
				t.Errorf("failed job %+v, want PERMISSION_DENIED keeping rows 0..59 and token 60", j)
			}
			if m := readManifest(t, b, j); m.State != "FAILED" || m.NextPageToken != "60" {
				t.Errorf("manifest of the failed job: %+v", m)
			}
		})
	}
}

// TestTelemetry: a span per run and per part; rows, bytes, parts and
// takeovers counted.
func TestTelemetry(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	st, b := NewMemoryStore(nil), memBucket(t)
	g := newGate(80)
	src := &fakeSource{Rows: 200, Page: 10, before: g.before}
	tel := func(c *RunnerConfig) { c.TracerProvider, c.MeterProvider = tp, mp }
	a := testRunner(t, st, b, src, tel)
	j, _ := a.Submit(context.Background(), newJob("t1", "a"))
	stopA := start(t, a)
	<-g.reached
	stopA()
	close(g.open)
	bR := testRunner(t, st, b, src, tel)
	stopB := start(t, bR)
	j = wait(t, bR, j.ID)
	stopB() // the run's span and counts end after its final commit

	runs, partSpans := 0, 0
	for _, s := range spans.Ended() {
		switch s.Name() {
		case "export.run":
			runs++
		case "export.part":
			partSpans++
		}
	}
	if runs != 2 || partSpans != len(j.Parts) {
		t.Errorf("%d run spans and %d part spans, want 2 and %d", runs, partSpans, len(j.Parts))
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	sums := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					sums[m.Name] += p.Value
				}
			case metricdata.Gauge[int64]:
				sums[m.Name] = d.DataPoints[0].Value
			}
		}
	}
	var bytes int64
	for _, p := range j.Parts {
		bytes += p.Bytes
	}
	want := map[string]int64{"linkgate.exports.rows": 200, "linkgate.exports.bytes": bytes,
		"linkgate.exports.parts": int64(len(j.Parts)), "linkgate.exports.takeovers": 1,
		"linkgate.exports.finished": 1, "linkgate.exports.running": 0, "linkgate.exports.queued": 0}
	for name, v := range want {
		if got, ok := sums[name]; !ok || got != v {
			t.Errorf("%s = %d (reported %v), want %d", name, got, ok, v)
		}
	}
}

// downStore cannot renew: the network to it is down for renewals.
type downStore struct{ Store }

func (downStore) Renew(context.Context, *Job, time.Duration) (*Job, error) {
	return nil, errors.New("network down")
}

// TestOwnerStopsWithoutRenewal: an owner that cannot renew commits no part
// in the last quarter of its lease and stops before it ends, so a successor
// that claims the job then never meets its writes.
func TestOwnerStopsWithoutRenewal(t *testing.T) {
	st, b := NewMemoryStore(nil), memBucket(t)
	src := &fakeSource{Rows: 100000, Page: 10, before: func(ctx context.Context, off int) error {
		time.Sleep(5 * time.Millisecond)
		return nil
	}}
	lease := 400 * time.Millisecond
	r := testRunner(t, downStore{st}, b, src, func(c *RunnerConfig) { c.Lease = lease })
	j, _ := r.Submit(context.Background(), newJob("t1", "a"))
	start(t, r)
	var claimed *Job
	deadline := time.Now().Add(5 * time.Second)
	for {
		cur, _ := st.Get(context.Background(), j.ID)
		if claimed == nil && cur.Epoch == 1 {
			claimed = cur
		}
		r.mu.Lock()
		n := len(r.cancels)
		r.mu.Unlock()
		if claimed != nil && n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the owner went on without renewing its lease")
		}
		time.Sleep(2 * time.Millisecond)
	}
	stopped := time.Now()
	last, _ := st.Get(context.Background(), j.ID)
	if !stopped.Before(claimed.LeaseUntil) {
		t.Errorf("the owner stopped %v after its lease ended", stopped.Sub(claimed.LeaseUntil))
	}
	if len(last.Parts) == 0 || !last.Updated.Before(claimed.LeaseUntil.Add(-lease/4)) {
		t.Errorf("last commit at %v with %d parts, want some parts and none in the last quarter of the lease (ending %v)",
			last.Updated, len(last.Parts), claimed.LeaseUntil)
	}
}

func TestSubmitRefusesBadRequests(t *testing.T) {
	r := testRunner(t, NewMemoryStore(nil), memBucket(t), &fakeSource{}, nil)
	for field, j := range map[string]*Job{
		"tenant":  {Request: Request{Dataset: "backlinks", Format: 1}},
		"dataset": {Tenant: "t1", Request: Request{Format: 1}},
	} {
		if _, err := r.Submit(context.Background(), j); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("a job without %s: %v, want an error naming it", field, err)
		}
	}
}
