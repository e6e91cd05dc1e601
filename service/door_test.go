package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/quota"
)

// details returns the ErrorInfo and RetryInfo of a status error.
func details(t *testing.T, err error) (*status.Status, *errdetails.ErrorInfo, time.Duration) {
	t.Helper()
	st := status.Convert(err)
	var info *errdetails.ErrorInfo
	retry := time.Duration(-1)
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			info = d
		case *errdetails.RetryInfo:
			retry = d.GetRetryDelay().AsDuration()
		}
	}
	if info == nil {
		t.Fatalf("%v: no ErrorInfo", err)
	}
	return st, info, retry
}

// TestIdenticalRequestsShareOneCall: four identical requests at once make
// one upstream request and one reservation.
func TestIdenticalRequestsShareOneCall(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.sim.SetLatency(200 * time.Millisecond)
	var wg sync.WaitGroup
	charged := make(chan int64, 4)
	for range 4 {
		wg.Go(func() {
			r, err := h.backlinks.ListBacklinks(context.Background(), &v1.ListBacklinksRequest{Target: "sized-5000.example", PageSize: 100})
			if err != nil {
				t.Error(err)
				return
			}
			charged <- r.GetCost().GetUnitsCharged()
		})
	}
	wg.Wait()
	close(charged)
	var sum int64
	for c := range charged {
		sum += c
	}
	used, reserved := h.used(t)
	if h.sim.Requests() != 1 || sum != used || used != h.sim.Usage() || reserved != 0 {
		t.Fatalf("upstream requests %d, units charged to callers %d, ledger %d, upstream %d, reserved %d; want 1 request, all equal",
			h.sim.Requests(), sum, used, h.sim.Usage(), reserved)
	}
}

// TestQueueDeadlineIsLinkgatesOwn: a call that linkgate's queue cannot
// admit before its deadline is refused at once with QUEUE_DEADLINE and the
// real wait, not UPSTREAM_RATE_LIMITED; nothing is reserved or sent.
func TestQueueDeadlineIsLinkgatesOwn(t *testing.T) {
	h := newHarness(t, harnessOptions{rpm: 60})
	ctx := context.Background()
	if _, err := h.backlinks.ListBacklinks(ctx, &v1.ListBacklinksRequest{Target: "a.example", PageSize: 1}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { // waits about a second for the next slot
		_, err := h.backlinks.ListBacklinks(ctx, &v1.ListBacklinksRequest{Target: "b.example", PageSize: 1})
		done <- err
	}()
	for n, _ := h.schedQueued(); n == 0; n, _ = h.schedQueued() {
		time.Sleep(time.Millisecond)
	}
	before := h.sim.Requests()
	dctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err := h.backlinks.ListBacklinks(dctx, &v1.ListBacklinksRequest{Target: "c.example", PageSize: 1})
	st, info, retry := details(t, err)
	if st.Code() != codes.ResourceExhausted || info.GetReason() != ReasonQueueDeadline {
		t.Fatalf("got %v %s, want RESOURCE_EXHAUSTED QUEUE_DEADLINE", st.Code(), info.GetReason())
	}
	if retry < 900*time.Millisecond || retry > 2500*time.Millisecond {
		t.Fatalf("RetryInfo %s, want the real wait of one to two slots", retry)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, reserved := h.used(t); reserved != 0 || h.sim.Requests() != before+1 {
		t.Fatalf("reserved %d, upstream requests %d (want only the waiting call's)", reserved, h.sim.Requests()-before)
	}
}

// schedQueued is the number of calls waiting in the harness's scheduler.
func (h *harness) schedQueued() (int, error) {
	if h.sched == nil {
		return 0, errors.New("no scheduler")
	}
	return h.sched.Queued(), nil
}

// TestUpstreamRateLimitedOnlyOn429: UPSTREAM_RATE_LIMITED means the
// upstream itself answered 429 after retries.
func TestUpstreamRateLimitedOnlyOn429(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.sim.SetRequestsPerMinute(1)
	ctx := context.Background()
	if _, err := h.backlinks.ListBacklinks(ctx, &v1.ListBacklinksRequest{Target: "a.example", PageSize: 1}); err != nil {
		t.Fatal(err)
	}
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := h.backlinks.ListBacklinks(dctx, &v1.ListBacklinksRequest{Target: "b.example", PageSize: 1})
	st, info, _ := details(t, err)
	if st.Code() != codes.ResourceExhausted || info.GetReason() != ReasonUpstreamRateLimited {
		t.Fatalf("got %v %s, want UPSTREAM_RATE_LIMITED", st.Code(), info.GetReason())
	}
	if h.sim.RateLimited() == 0 {
		t.Fatal("the upstream never answered 429")
	}
}

// TestBudgetHeldInFlight: when the room is held by requests in flight, not
// spent, a call waits for it until a little before its deadline; then the
// denial says so, with a retry in seconds rather than at the period's
// reset.
func TestBudgetHeldInFlight(t *testing.T) {
	h := newHarness(t, harnessOptions{poolLimit: 6500, pageRows: 1000})
	h.sim.SetLatency(3 * time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := h.backlinks.StreamBacklinks(ctx, &v1.StreamBacklinksRequest{Target: "sized-50000.example"})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			if _, err := st.Recv(); err != nil {
				return
			}
		}
	}()
	for _, reserved := h.used(t); reserved == 0; _, reserved = h.used(t) {
		time.Sleep(time.Millisecond)
	}
	lctx, lcancel := context.WithTimeout(context.Background(), time.Second)
	defer lcancel()
	_, err = h.backlinks.ListBacklinks(lctx, &v1.ListBacklinksRequest{Target: "other.example", PageSize: 100})
	s, info, retry := details(t, err)
	if s.Code() != codes.ResourceExhausted || info.GetReason() != ReasonBudgetHeldInFlight {
		t.Fatalf("got %v %s (%s), want BUDGET_HELD_IN_FLIGHT", s.Code(), info.GetReason(), s.Message())
	}
	if retry <= 0 || retry > 10*time.Second {
		t.Fatalf("RetryInfo %s, want seconds", retry)
	}
}

// streamToEnd reads a stream until it fails and returns the rows, the last
// message's token and the error.
func streamToEnd(st v1.BacklinksService_StreamBacklinksClient) (rows int, last string, err error) {
	for {
		m, err := st.Recv()
		if err != nil {
			return rows, last, err
		}
		rows += len(m.GetBacklinks())
		last = m.GetNextPageToken()
	}
}

// TestStreamStopsBeforeTheDeadlineWithAToken: a stream ends a margin
// before the caller's deadline with DEADLINE_EXCEEDED from the server,
// whose ErrorInfo carries the token to resume right after the last row.
func TestStreamStopsBeforeTheDeadlineWithAToken(t *testing.T) {
	h := newHarness(t, harnessOptions{pageRows: 200})
	h.sim.SetLatency(150 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := h.backlinks.StreamBacklinks(ctx, &v1.StreamBacklinksRequest{Target: "sized-50000.example", PageSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	rows, last, err := streamToEnd(st)
	s, info, _ := details(t, err)
	if s.Code() != codes.DeadlineExceeded || info.GetMetadata()["page_token"] == "" || rows == 0 {
		t.Fatalf("after %d rows: %v %v, want DEADLINE_EXCEEDED with a page_token", rows, s.Code(), info.GetMetadata())
	}
	if info.GetMetadata()["page_token"] != last {
		t.Fatalf("the error's token is not the last message's")
	}
	r, err := h.backlinks.ListBacklinks(context.Background(), &v1.ListBacklinksRequest{Target: "sized-50000.example",
		PageSize: 1, PageToken: last})
	if err != nil || len(r.GetBacklinks()) != 1 {
		t.Fatalf("resuming with the token: %v", err)
	}
}

// TestDrainEndsStreamsWithAToken: at shutdown, streams end with UNAVAILABLE
// and the token to resume on another replica.
func TestDrainEndsStreamsWithAToken(t *testing.T) {
	h := newHarness(t, harnessOptions{pageRows: 200})
	h.sim.SetLatency(100 * time.Millisecond)
	st, err := h.backlinks.StreamBacklinks(context.Background(), &v1.StreamBacklinksRequest{Target: "sized-50000.example", PageSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	first, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	h.server.Drain()
	rows, last, err := streamToEnd(st)
	if last == "" {
		last = first.GetNextPageToken()
	}
	s, info, _ := details(t, err)
	if s.Code() != codes.Unavailable || info.GetReason() != ReasonShuttingDown || info.GetMetadata()["page_token"] != last {
		t.Fatalf("after %d more rows: %v %s %v, want UNAVAILABLE SHUTTING_DOWN with the last token", rows, s.Code(), info.GetReason(), info.GetMetadata())
	}
	if err == io.EOF {
		t.Fatal("the stream ended as if complete")
	}
}

// TestStatsSpendIsCounted: GetBacklinksStats spends through the same door
// as pages: its units are in the units metrics with its own dataset label.
func TestStatsSpendIsCounted(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	h := newHarness(t, harnessOptions{meter: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))})
	r, err := h.backlinks.GetBacklinksStats(context.Background(), &v1.GetBacklinksStatsRequest{Target: "sized-5000.example"})
	if err != nil {
		t.Fatal(err)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if s, ok := m.Data.(metricdata.Sum[int64]); ok {
				for _, dp := range s.DataPoints {
					if v, _ := dp.Attributes.Value(attribute.Key("dataset")); v.AsString() == statsLabel {
						got[m.Name] += dp.Value
					}
				}
			}
		}
	}
	used, _ := h.used(t)
	if r.GetCost().GetUnitsCharged() == 0 || got["linkgate.units.charged"] != r.GetCost().GetUnitsCharged() ||
		got["linkgate.units.reserved"] == 0 || used != r.GetCost().GetUnitsCharged() {
		t.Fatalf("stats charged %d, metrics %v, ledger %d", r.GetCost().GetUnitsCharged(), got, used)
	}
}

// TestQueuedStreamsHoldNoBudget: streams waiting for the key's rate hold
// no units, so a budget that covers what they actually spend serves them
// all. (Reserving before the wait would have held 8 × 6,000 units of a
// 20,000 budget and refused most streams with BUDGET_EXHAUSTED while
// nothing was spent.)
func TestQueuedStreamsHoldNoBudget(t *testing.T) {
	h := newHarness(t, harnessOptions{poolLimit: 20_000, pageRows: 1000, rpm: 1200})
	var wg sync.WaitGroup
	got := make(chan int, 8)
	for i := range 8 { // the tenant's stream limit
		wg.Go(func() {
			st, err := h.backlinks.StreamBacklinks(context.Background(),
				&v1.StreamBacklinksRequest{Target: fmt.Sprintf("sized-%d.example", 300+i)})
			if err != nil {
				t.Error(err)
				return
			}
			rows, _, err := streamToEnd(st)
			if err != io.EOF {
				t.Errorf("stream %d: %v after %d rows", i, err, rows)
			}
			got <- rows
		})
	}
	wg.Wait()
	close(got)
	total := 0
	for n := range got {
		total += n
	}
	used, reserved := h.used(t)
	if want := 8*300 + (7*8)/2; total != want || reserved != 0 || used != h.sim.Usage() {
		t.Fatalf("rows %d (want %d), reserved %d, ledger %d, upstream %d", total, want, reserved, used, h.sim.Usage())
	}
}

// TestNewLostStreamEndsWithAToken: the new/lost event feed ends as every
// stream does, a margin before the caller's deadline and at shutdown, with
// the token of the last event sent.
func TestNewLostStreamEndsWithAToken(t *testing.T) {
	req := &v1.StreamNewLostBacklinksRequest{Target: "sized-50000.example", Since: "2025-01-01", PageSize: 100}
	toEnd := func(st v1.BacklinksService_StreamNewLostBacklinksClient) (rows int, last string, err error) {
		for {
			m, err := st.Recv()
			if err != nil {
				return rows, last, err
			}
			rows += len(m.GetNewLostBacklinks())
			last = m.GetNextPageToken()
		}
	}
	t.Run("deadline", func(t *testing.T) {
		h := newHarness(t, harnessOptions{pageRows: 200})
		h.sim.SetLatency(150 * time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err := h.backlinks.StreamNewLostBacklinks(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		rows, last, err := toEnd(st)
		s, info, _ := details(t, err)
		if s.Code() != codes.DeadlineExceeded || rows == 0 || info.GetMetadata()["page_token"] != last || last == "" {
			t.Fatalf("after %d rows: %v %v, want DEADLINE_EXCEEDED with the last message's token", rows, s.Code(), info.GetMetadata())
		}
	})
	t.Run("drain", func(t *testing.T) {
		h := newHarness(t, harnessOptions{pageRows: 200})
		h.sim.SetLatency(100 * time.Millisecond)
		st, err := h.backlinks.StreamNewLostBacklinks(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		first, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		h.server.Drain()
		rows, last, err := toEnd(st)
		if last == "" {
			last = first.GetNextPageToken()
		}
		s, info, _ := details(t, err)
		if s.Code() != codes.Unavailable || info.GetReason() != ReasonShuttingDown || info.GetMetadata()["page_token"] != last || last == "" {
			t.Fatalf("after %d more rows: %v %s %v, want UNAVAILABLE SHUTTING_DOWN with the last token", rows, s.Code(), info.GetReason(), info.GetMetadata())
		}
	})
}

// TestRebuildingLedgerIsUnavailable: while the ledger rebuilds a period it
// lost, callers get UNAVAILABLE with a retry in seconds and the reason,
// not an exhausted budget, and a stream its token.
func TestRebuildingLedgerIsUnavailable(t *testing.T) {
	st, info, retry := details(t, toStatus(fmt.Errorf("reserve: %w", quota.ErrRebuilding), "tok"))
	if st.Code() != codes.Unavailable || info.GetReason() != ReasonLedgerRebuilding || retry <= 0 || retry > 5*time.Second ||
		info.GetMetadata()["page_token"] != "tok" {
		t.Fatalf("status %v, reason %s, retry %v, metadata %v", st, info.GetReason(), retry, info.GetMetadata())
	}
}
