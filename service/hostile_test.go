package service

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/internal/logsink"
	"github.com/linkgate/linkgate/upstream"
)

// TestEstimateCostOfHugeRowsReturns: rows at the bound is answered (in a
// few operations, whatever the number: the call returns, it does not walk
// a billion pages), and rows past it is INVALID_ARGUMENT on rows.
func TestEstimateCostOfHugeRowsReturns(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	req := &v1.EstimateCostRequest{Request: &v1.EstimateCostRequest_Backlinks{Backlinks: &v1.ListBacklinksRequest{Target: "example.com"}}}
	req.Rows = MaxRows
	resp, err := h.backlinks.EstimateCost(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetPages() != MaxRows/1000 || resp.GetUnitsForRows() <= 0 {
		t.Errorf("rows %d: %d pages, %d units", int64(MaxRows), resp.GetPages(), resp.GetUnitsForRows())
	}
	for _, rows := range []int64{MaxRows + 1, math.MaxInt64, -1} {
		req.Rows = rows
		_, err := h.backlinks.EstimateCost(t.Context(), req)
		wantField(t, err, codes.InvalidArgument, "rows")
	}
}

// wantField checks err is code with a BadRequest naming field.
func wantField(t *testing.T, err error, code codes.Code, field string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code {
		t.Fatalf("got %v %q, want %v on %s", st.Code(), st.Message(), code, field)
	}
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) > 0 {
			if got := br.GetFieldViolations()[0].GetField(); got != field {
				t.Fatalf("error names %q, want %q: %s", got, field, st.Message())
			}
			return
		}
	}
	t.Fatalf("no BadRequest in %v %q", st.Code(), st.Message())
}

// TestCallerMistakesNameTheirField: each mistake once found answered as
// INTERNAL, as an outage, or against another field.
func TestCallerMistakesNameTheirField(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := t.Context()
	long := strings.Repeat("a", MaxTargetBytes+1)
	tenLimit := int64(1e14)
	cases := []struct {
		name, field string
		call        func() error
	}{
		{"stats target over the bound", "target", func() error {
			_, err := h.backlinks.GetBacklinksStats(ctx, &v1.GetBacklinksStatsRequest{Target: long})
			return err
		}},
		{"stats target of spaces", "target", func() error {
			_, err := h.backlinks.GetBacklinksStats(ctx, &v1.GetBacklinksStatsRequest{Target: " \t "})
			return err
		}},
		{"list target of spaces", "target", func() error {
			_, err := h.backlinks.ListBacklinks(ctx, &v1.ListBacklinksRequest{Target: " ", Mode: v1.Mode_MODE_DOMAIN, Filter: "is_dofollow", PageSize: 5})
			return err
		}},
		{"unknown enum number", "mode", func() error {
			_, err := h.backlinks.ListBacklinks(ctx, &v1.ListBacklinksRequest{Target: "example.com", Mode: 7})
			return err
		}},
		{"unknown enum number in stats", "protocol", func() error {
			_, err := h.backlinks.GetBacklinksStats(ctx, &v1.GetBacklinksStatsRequest{Target: "example.com", Protocol: 9})
			return err
		}},
		{"admin limit above the ledger's largest figure", "limit", func() error {
			_, err := h.quota.UpdateTenantLimit(ctx, &v1.UpdateTenantLimitRequest{Tenant: "a", Limit: &tenLimit})
			return err
		}},
		{"60 KB tenant name", "tenant", func() error {
			_, err := h.quota.UpdateTenantLimit(ctx, &v1.UpdateTenantLimitRequest{Tenant: strings.Repeat("t", 60<<10-100)})
			return err
		}},
		{"negative max_units", "max_units", func() error {
			s, err := h.backlinks.StreamBacklinks(ctx, &v1.StreamBacklinksRequest{Target: "example.com", MaxUnits: -1})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}},
		{"max_rows past the bound", "max_rows", func() error {
			s, err := h.backlinks.StreamBacklinks(ctx, &v1.StreamBacklinksRequest{Target: "example.com", MaxRows: MaxRows + 1})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}},
		{"nested estimate target over the bound", "backlinks.target", func() error {
			_, err := h.backlinks.EstimateCost(ctx, &v1.EstimateCostRequest{Request: &v1.EstimateCostRequest_Backlinks{
				Backlinks: &v1.ListBacklinksRequest{Target: long}}})
			return err
		}},
		{"history over the bound", "history", func() error {
			_, err := h.backlinks.ListBacklinks(ctx, &v1.ListBacklinksRequest{Target: "example.com", History: strings.Repeat("x", MaxParamBytes+1)})
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { wantField(t, tc.call(), codes.InvalidArgument, tc.field) })
	}
	// A long but valid selection, one comma-separated value, passes.
	all := "url_from,url_to,anchor,domain_rating_source,first_seen_link,last_seen,title,url_rating_source,traffic,http_code," +
		"is_dofollow,is_nofollow,is_ugc,is_sponsored,is_content,is_redirect,languages,link_type,refdomains_source,lost_reason"
	if err := CheckBounds(&v1.ListBacklinksRequest{Target: "example.com", Select: []string{all}}); err != nil {
		t.Errorf("a %d-byte selection of 20 fields: %v", len(all), err)
	}
	if used, reserved := h.used(t); used != 0 || reserved != 0 {
		t.Errorf("refused requests left %d units used, %d reserved", used, reserved)
	}
}

func TestGlobalStreamBound(t *testing.T) {
	l := newStreamLimiter(2, 3)
	var releases []func()
	for _, tenant := range []string{"a", "a", "b"} {
		release, err := l.acquire(tenant)
		if err != nil {
			t.Fatalf("%s: %v", tenant, err)
		}
		releases = append(releases, release)
	}
	_, err := l.acquire("a")
	wantBusy(t, err, ReasonTooManyStreams)
	_, err = l.acquire("c")
	wantBusy(t, err, ReasonServerBusy)
	releases[2]()
	releases[2]() // idempotent
	if _, err := l.acquire("c"); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	if l.total != 3 {
		t.Errorf("total %d, want 3", l.total)
	}
}

// wantBusy checks a refused stream: RESOURCE_EXHAUSTED with a retry hint
// (Retry-After over REST) and the reason.
func wantBusy(t *testing.T, err error, reason string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("got %v %q, want RESOURCE_EXHAUSTED", st.Code(), st.Message())
	}
	var gotReason string
	var retry bool
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			gotReason = d.GetReason()
		case *errdetails.RetryInfo:
			retry = d.GetRetryDelay().AsDuration() > 0
		}
	}
	if gotReason != reason || !retry {
		t.Fatalf("reason %q (want %q), retry hint %v: %s", gotReason, reason, retry, st.Message())
	}
}

func TestMaxStreamsFor(t *testing.T) {
	for _, tc := range []struct {
		limit int64
		want  int
	}{{512 << 20, 512}, {0, 1024}, {1, 1}, {8 << 30, 8192}} {
		if got := MaxStreamsFor(tc.limit); got != tc.want {
			t.Errorf("MaxStreamsFor(%d) = %d, want %d", tc.limit, got, tc.want)
		}
	}
}

// panickingUpstream panics in ListPage, which the pager calls from its own
// goroutine, outside the handler's recovery.
type panickingUpstream struct{ Upstream }

func (panickingUpstream) ListPage(context.Context, *upstream.PageRequest, func(upstream.Record) error) (upstream.Result, error) {
	panic("upstream decoder bug")
}

// TestPagerPanicEndsOnlyItsRequest: a panic in the pager goroutine is the
// request's INTERNAL and a log line; the process (this test) survives and
// the ledger keeps nothing reserved (the page is charged in full: the
// request may have left).
func TestPagerPanicEndsOnlyItsRequest(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	logs := &logsink.Buffer{}
	srv, err := NewBacklinksServer(Config{Upstream: panickingUpstream{}, Ledger: h.ledger, Tokens: h.server.cfg.Tokens,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ctx := WithCaller(t.Context(), Caller{Tenant: DefaultTenant, Role: RoleAdmin})
	_, err = srv.ListBacklinks(ctx, &v1.ListBacklinksRequest{Target: "example.com"})
	if status.Code(err) != codes.Internal {
		t.Fatalf("List: %v, want INTERNAL", err)
	}
	err = srv.StreamBacklinks(&v1.StreamBacklinksRequest{Target: "example.com"}, &discardStream[v1.StreamBacklinksResponse]{ctx: ctx})
	if status.Code(err) != codes.Internal {
		t.Fatalf("Stream: %v, want INTERNAL", err)
	}
	if got := strings.Count(logs.String(), "upstream decoder bug"); got != 2 {
		t.Errorf("%d log lines name the panic, want 2:\n%s", got, logs)
	}
	if _, reserved := h.used(t); reserved != 0 {
		t.Errorf("%d units left reserved", reserved)
	}
}

// discardStream is a server stream that drops what it is sent.
type discardStream[T any] struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *discardStream[T]) Context() context.Context { return s.ctx }
func (s *discardStream[T]) Send(*T) error            { return nil }

func TestInvalidUTF8FieldIsNamed(t *testing.T) {
	raw, err := proto.Marshal(&v1.EstimateCostRequest{Request: &v1.EstimateCostRequest_Backlinks{
		Backlinks: &v1.ListBacklinksRequest{Target: "example.com", Filter: "ok"}}})
	if err != nil {
		t.Fatal(err)
	}
	// Replace the "ok" of the filter with two bytes that are not UTF-8.
	i := strings.Index(string(raw), "ok")
	raw[i], raw[i+1] = 0xff, 0xfe
	var m v1.EstimateCostRequest
	if err := proto.Unmarshal(raw, &m); err == nil {
		t.Fatal("protobuf accepted invalid UTF-8")
	}
	if got := invalidUTF8Field(raw, m.ProtoReflect().Descriptor(), 0); got != "backlinks.filter" {
		t.Errorf("invalid field %q, want backlinks.filter", got)
	}
	GuardDecoding(&v1.BacklinksService_ServiceDesc, nil)
	codec := newNamingCodec(1000)
	var got v1.EstimateCostRequest
	if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(raw)}, &got); err != nil {
		t.Fatalf("the codec failed a guarded message: %v", err)
	}
	wantField(t, decodeError(&got), codes.InvalidArgument, "backlinks.filter")
	if len(got.ProtoReflect().GetUnknown()) != 0 || decodeError(&got) != nil {
		t.Error("the marker stayed on the message")
	}
	big := make([]byte, 1001)
	if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(big)}, &got); err != nil {
		t.Fatal(err)
	}
	err = decodeError(&got)
	wantField(t, err, codes.InvalidArgument, "request")
	if !strings.Contains(err.Error(), "1001 bytes") {
		t.Errorf("too large: %v", err)
	}
	// A message of an unguarded package fails as grpc-go would have it.
	var hc healthpb.HealthCheckRequest
	if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{0x0a, 0x02, 0xff, 0xfe})}, &hc); err == nil {
		t.Error("the codec accepted invalid UTF-8 for an unguarded service")
	}
}

// TestTruncatedUpstreamBodyIsSaid: an upstream body cut short is
// UNAVAILABLE whose message says so, not a bare "unavailable".
func TestTruncatedUpstreamBodyIsSaid(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.sim.SetTruncateRate(1)
	_, err := h.backlinks.ListBacklinks(t.Context(), &v1.ListBacklinksRequest{Target: "example.com", PageSize: 5})
	st := status.Convert(err)
	if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "cut short") {
		t.Errorf("%v %q, want UNAVAILABLE saying the body was cut short", st.Code(), st.Message())
	}
}

// TestInternalKeepsItsCause: linkgate's own fault is INTERNAL without its
// text for the caller, and its cause on the request's log line.
func TestInternalKeepsItsCause(t *testing.T) {
	err := toStatus(errors.New("bolt: database not open"), "")
	st := status.Convert(err)
	if st.Code() != codes.Internal || st.Message() != "internal error" {
		t.Fatalf("%v %q", st.Code(), st.Message())
	}
	logs := &logsink.Buffer{}
	logRequest(t.Context(), slog.New(slog.NewJSONHandler(logs, nil)), "/m", time.Now(), &requestLog{}, err)
	if !strings.Contains(logs.String(), `"cause":"bolt: database not open"`) || !strings.Contains(logs.String(), `"level":"ERROR"`) {
		t.Errorf("log: %s", logs)
	}
}
