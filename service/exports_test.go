package service

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/longrunning/autogen/longrunningpb"
	"gocloud.dev/blob"
	_ "gocloud.dev/blob/memblob"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/linkgate/linkgate/export"
	"github.com/linkgate/linkgate/export/parts"
	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/paging"
	"github.com/linkgate/linkgate/scheduler"
)

// exportHarness serves the export services, behind the real interceptor
// chain with API keys, over the service harness.
type exportHarness struct {
	*harness
	// jobs is a runner that runs nothing: tests move jobs through their
	// states in store, as a runner would.
	jobs   *export.Runner
	store  export.Store
	bucket *blob.Bucket
	conn   *grpc.ClientConn
}

func newExportHarness(t *testing.T) *exportHarness {
	t.Helper()
	h := &exportHarness{harness: newHarness(t, harnessOptions{pageRows: 50}), store: export.NewMemoryStore(time.Now)}
	var err error
	if h.bucket, err = blob.OpenBucket(t.Context(), "mem://"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.bucket.Close() })
	h.jobs, err = export.NewRunner(export.RunnerConfig{Store: h.store, Source: &ExportSource{Backlinks: h.server},
		Bucket: h.bucket, Poll: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	es, ops, err := NewExportServers(ExportsConfig{Jobs: h.jobs, Backlinks: h.server, Bucket: h.bucket, BucketURL: "mem://"})
	if err != nil {
		t.Fatal(err)
	}
	auth, err := NewAuthenticator(AuthConfig{Keys: []APIKey{
		{SHA256: sha256.Sum256([]byte("key-a")), Caller: Caller{Tenant: "a", Role: RoleReader}},
		{SHA256: sha256.Sum256([]byte("key-b")), Caller: Caller{Tenant: "b", Role: RoleReader}},
		{SHA256: sha256.Sum256([]byte("key-admin")), Caller: Caller{Tenant: "ops", Role: RoleAdmin}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(ServerOptions(ServerConfig{Logger: slog.New(slog.DiscardHandler), Auth: auth})...)
	v1.RegisterExportServiceServer(srv, es)
	longrunningpb.RegisterOperationsServer(srv, ops)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	h.conn, err = grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.conn.Close() })
	return h
}

func as(ctx context.Context, key string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
}

func (h *exportHarness) exports() v1.ExportServiceClient { return v1.NewExportServiceClient(h.conn) }
func (h *exportHarness) ops() longrunningpb.OperationsClient {
	return longrunningpb.NewOperationsClient(h.conn)
}

func (h *exportHarness) create(t *testing.T, key string, req *v1.CreateExportRequest) *longrunningpb.Operation {
	t.Helper()
	op, err := h.exports().CreateExport(as(t.Context(), key), req)
	if err != nil {
		t.Fatalf("CreateExport: %v", err)
	}
	return op
}

func backlinksExport(target string) *v1.CreateExportRequest {
	return &v1.CreateExportRequest{Request: &v1.CreateExportRequest_Backlinks{
		Backlinks: &v1.StreamBacklinksRequest{Target: target, MaxRows: 120}}}
}

func metadataOf(t *testing.T, op *longrunningpb.Operation) *v1.ExportMetadata {
	t.Helper()
	var m v1.ExportMetadata
	if err := op.GetMetadata().UnmarshalTo(&m); err != nil {
		t.Fatal(err)
	}
	return &m
}

func TestCreateExportMakesAPendingOperation(t *testing.T) {
	h := newExportHarness(t)
	op := h.create(t, "key-a", backlinksExport("sized-1203.example"))
	if !strings.HasPrefix(op.GetName(), "operations/") || op.GetDone() {
		t.Fatalf("operation %v: want a pending operations/{id}", op)
	}
	m := metadataOf(t, op)
	if m.GetState() != v1.ExportState_EXPORT_STATE_PENDING || m.GetExport() != "exports/"+strings.TrimPrefix(op.GetName(), "operations/") {
		t.Errorf("metadata %v", m)
	}
	// 120 rows of the default selection, priced as EstimateCost prices a
	// stream of 120 rows.
	est, err := h.backlinks.EstimateCost(t.Context(), &v1.EstimateCostRequest{
		Request: &v1.EstimateCostRequest_Backlinks{Backlinks: &v1.ListBacklinksRequest{Target: "sized-1203.example"}}, Rows: 120})
	if err != nil {
		t.Fatal(err)
	}
	if m.GetUnitsEstimated() != est.GetUnitsForRows() || m.GetUnitsEstimated() == 0 {
		t.Errorf("units_estimated %d, want EstimateCost's %d", m.GetUnitsEstimated(), est.GetUnitsForRows())
	}
	job, err := h.store.Get(t.Context(), strings.TrimPrefix(op.GetName(), "operations/"))
	if err != nil {
		t.Fatal(err)
	}
	var stored v1.StreamBacklinksRequest
	if err := proto.Unmarshal(job.Request.Message, &stored); err != nil || stored.GetTarget() != "sized-1203.example" || stored.GetMaxRows() != 120 {
		t.Errorf("stored request %v (%v)", &stored, err)
	}
	if job.Tenant != "a" || job.Request.Dataset != "backlinks" || job.Request.Format != parts.FormatNDJSON {
		t.Errorf("job %+v", job)
	}
}

func TestCreateExportRefusesABadRequestAtNoCost(t *testing.T) {
	h := newExportHarness(t)
	for _, tc := range []struct {
		name  string
		req   *v1.CreateExportRequest
		field string
	}{
		{"no request", &v1.CreateExportRequest{}, "request"},
		{"filter", &v1.CreateExportRequest{Request: &v1.CreateExportRequest_Backlinks{
			Backlinks: &v1.StreamBacklinksRequest{Target: "example.com", Filter: "domain_rating_source >>= 3"}}}, "backlinks.filter"},
		{"select", &v1.CreateExportRequest{Request: &v1.CreateExportRequest_Refdomains{
			Refdomains: &v1.StreamRefDomainsRequest{Target: "example.com", Select: []string{"no_such_field"}}}}, "refdomains.select"},
		{"order", &v1.CreateExportRequest{Request: &v1.CreateExportRequest_BrokenBacklinks{
			BrokenBacklinks: &v1.StreamBrokenBacklinksRequest{Target: "example.com", OrderBy: "nope:asc"}}}, "broken_backlinks.order_by"},
		{"token", &v1.CreateExportRequest{Request: &v1.CreateExportRequest_Backlinks{
			Backlinks: &v1.StreamBacklinksRequest{Target: "example.com", PageToken: "forged"}}}, "backlinks.page_token"},
		{"format", &v1.CreateExportRequest{Request: &v1.CreateExportRequest_Backlinks{
			Backlinks: &v1.StreamBacklinksRequest{Target: "example.com"}}, Format: 9}, "format"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.exports().CreateExport(as(t.Context(), "key-a"), tc.req)
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("got %v, want INVALID_ARGUMENT", err)
			}
			if f := violated(err); f != tc.field {
				t.Errorf("the error names %q, want %q (%v)", f, tc.field, err)
			}
		})
	}
	if used, reserved := h.used(t); used != 0 || reserved != 0 {
		t.Errorf("refused exports spent %d and hold %d units", used, reserved)
	}
	if n := h.sim.Requests(); n != 0 {
		t.Errorf("refused exports made %d upstream requests", n)
	}
	if jobs, _ := h.store.List(t.Context(), ""); len(jobs) != 0 {
		t.Errorf("refused exports stored %d jobs", len(jobs))
	}
}

// violated is the field the first BadRequest violation of err names.
func violated(err error) string {
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) > 0 {
			return br.GetFieldViolations()[0].GetField()
		}
	}
	return ""
}

func TestCreateExportRequestIDIsIdempotent(t *testing.T) {
	h := newExportHarness(t)
	req := backlinksExport("sized-150.example")
	req.RequestId = "6f1f2a4e-3b7c-4f43-9d5e-8f0c1a2b3c4d"
	first := h.create(t, "key-a", req)
	again := h.create(t, "key-a", req)
	if again.GetName() != first.GetName() {
		t.Errorf("the same request_id made %s then %s", first.GetName(), again.GetName())
	}
	// Another tenant's request_id is its own.
	other := h.create(t, "key-b", req)
	if other.GetName() == first.GetName() {
		t.Errorf("tenant b got tenant a's operation for the same request_id")
	}
}

func TestOperationsOfAnotherTenantAreNotFound(t *testing.T) {
	h := newExportHarness(t)
	op := h.create(t, "key-a", backlinksExport("sized-150.example"))
	id := strings.TrimPrefix(op.GetName(), "operations/")
	h.finish(t, id, export.StateSucceeded, 2)
	ctx := as(t.Context(), "key-b")
	calls := map[string]func() error{
		"get": func() error {
			_, err := h.ops().GetOperation(ctx, &longrunningpb.GetOperationRequest{Name: op.GetName()})
			return err
		},
		"wait": func() error {
			_, err := h.ops().WaitOperation(ctx, &longrunningpb.WaitOperationRequest{Name: op.GetName()})
			return err
		},
		"cancel": func() error {
			_, err := h.ops().CancelOperation(ctx, &longrunningpb.CancelOperationRequest{Name: op.GetName()})
			return err
		},
		"delete": func() error {
			_, err := h.ops().DeleteOperation(ctx, &longrunningpb.DeleteOperationRequest{Name: op.GetName()})
			return err
		},
		"part": func() error {
			_, err := h.download(ctx, "exports/"+id+"/parts/0")
			return err
		},
	}
	for name, call := range calls {
		if err := call(); status.Code(err) != codes.NotFound {
			t.Errorf("%s by another tenant: %v, want NOT_FOUND", name, err)
		}
	}
	// Without a key, nothing at all.
	if _, err := h.ops().ListOperations(t.Context(), &longrunningpb.ListOperationsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("ListOperations without a key: %v, want UNAUTHENTICATED", err)
	}
	if _, err := h.exports().CreateExport(t.Context(), backlinksExport("sized-10.example")); status.Code(err) != codes.Unauthenticated {
		t.Errorf("CreateExport without a key: %v, want UNAUTHENTICATED", err)
	}
	list, err := h.ops().ListOperations(ctx, &longrunningpb.ListOperationsRequest{Name: "operations"})
	if err != nil || len(list.GetOperations()) != 0 {
		t.Errorf("tenant b lists %v (%v), want nothing", list.GetOperations(), err)
	}
	// The owner still has everything.
	if _, err := h.ops().GetOperation(as(t.Context(), "key-a"), &longrunningpb.GetOperationRequest{Name: op.GetName()}); err != nil {
		t.Errorf("the owner's get: %v", err)
	}
	if b, err := h.download(as(t.Context(), "key-a"), "exports/"+id+"/parts/1"); err != nil || string(b) != "part 1 of "+id {
		t.Errorf("the owner's download: %q, %v", b, err)
	}
}

// finish moves a job to a final state with n parts stored in the bucket,
// as a runner would.
func (h *exportHarness) finish(t *testing.T, id string, st export.State, n int) {
	t.Helper()
	ctx := context.Background()
	j, err := h.store.Claim(ctx, "test", time.Minute, 0)
	if err != nil || j == nil || j.ID != id {
		t.Fatalf("claim: %v, %v", j, err)
	}
	for i := range n {
		key := j.Tenant + "/" + id + "/part-" + string(rune('0'+i))
		body := []byte("part " + string(rune('0'+i)) + " of " + id)
		if err := h.bucket.WriteAll(ctx, key, body, &blob.WriterOptions{ContentType: "application/x-ndjson"}); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(body)
		j.Parts = append(j.Parts, parts.Part{Key: key, Rows: 1, Bytes: int64(len(body)), SHA256: hex.EncodeToString(sum[:]),
			ContentType: "application/x-ndjson"})
		j.Rows++
	}
	j.State = st
	if st == export.StateFailed {
		j.ErrorCode, j.ErrorMessage = int32(codes.ResourceExhausted), "the budget is exhausted"
	}
	if err := h.store.Commit(ctx, j); err != nil {
		t.Fatal(err)
	}
}

func (h *exportHarness) download(ctx context.Context, name string) ([]byte, error) {
	s, err := h.exports().GetExportPart(ctx, &v1.GetExportPartRequest{Name: name})
	if err != nil {
		return nil, err
	}
	var out []byte
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if m.GetContentType() != "application/x-ndjson" {
			return out, errors.New("content type " + m.GetContentType())
		}
		out = append(out, m.GetData()...)
	}
}

func TestOperationsListTheCallersOwnAndAdminsAll(t *testing.T) {
	h := newExportHarness(t)
	a1 := h.create(t, "key-a", backlinksExport("sized-0.example"))
	a2 := h.create(t, "key-a", backlinksExport("sized-1.example"))
	b1 := h.create(t, "key-b", backlinksExport("sized-0.example"))
	h.finish(t, strings.TrimPrefix(a1.GetName(), "operations/"), export.StateSucceeded, 1)
	names := func(key, filter string, size int32) []string {
		t.Helper()
		var out []string
		req := &longrunningpb.ListOperationsRequest{Name: "operations", Filter: filter, PageSize: size}
		for {
			resp, err := h.ops().ListOperations(as(t.Context(), key), req)
			if err != nil {
				t.Fatalf("ListOperations(%q): %v", filter, err)
			}
			for _, op := range resp.GetOperations() {
				out = append(out, op.GetName())
			}
			if resp.GetNextPageToken() == "" {
				return out
			}
			req.PageToken = resp.GetNextPageToken()
		}
	}
	for _, tc := range []struct {
		key, filter string
		want        []string
	}{
		{"key-a", "", []string{a1.GetName(), a2.GetName()}},
		{"key-a", "done=true", []string{a1.GetName()}},
		{"key-a", "done = false", []string{a2.GetName()}},
		{"key-b", "", []string{b1.GetName()}},
		{"key-admin", "", []string{a1.GetName(), a2.GetName(), b1.GetName()}},
		{"key-admin", "done=false", []string{a2.GetName(), b1.GetName()}},
	} {
		for _, size := range []int32{0, 1} {
			if got := names(tc.key, tc.filter, size); !slices.Equal(got, tc.want) {
				t.Errorf("%s lists %q (page size %d): %v, want %v", tc.key, tc.filter, size, got, tc.want)
			}
		}
	}
	_, err := h.ops().ListOperations(as(t.Context(), "key-a"), &longrunningpb.ListOperationsRequest{Filter: "state=RUNNING"})
	if status.Code(err) != codes.InvalidArgument || violated(err) != "filter" {
		t.Errorf("an unsupported filter: %v, want INVALID_ARGUMENT on filter", err)
	}
}

func TestOperationCancelDeleteAndWait(t *testing.T) {
	h := newExportHarness(t)
	ctx := as(t.Context(), "key-a")
	op := h.create(t, "key-a", backlinksExport("sized-150.example"))
	id := strings.TrimPrefix(op.GetName(), "operations/")

	// WaitOperation with a timeout returns the latest state, not done.
	got, err := h.ops().WaitOperation(ctx, &longrunningpb.WaitOperationRequest{Name: op.GetName(), Timeout: durationpb.New(30 * time.Millisecond)})
	if err != nil || got.GetDone() {
		t.Fatalf("waiting on a pending export: %v, %v", got, err)
	}
	// A waiter sees the cancellation as soon as it happens.
	var wg sync.WaitGroup
	var waited *longrunningpb.Operation
	wg.Add(1)
	go func() {
		defer wg.Done()
		waited, err = h.ops().WaitOperation(ctx, &longrunningpb.WaitOperationRequest{Name: op.GetName()})
	}()
	if _, err := h.ops().CancelOperation(ctx, &longrunningpb.CancelOperationRequest{Name: op.GetName()}); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	wg.Wait()
	if err != nil || !waited.GetDone() || waited.GetError().GetCode() != int32(codes.Canceled) {
		t.Fatalf("waited: %v, %v; want done with CANCELLED", waited, err)
	}
	if m := metadataOf(t, waited); m.GetState() != v1.ExportState_EXPORT_STATE_CANCELLED {
		t.Errorf("state %v, want cancelled", m.GetState())
	}
	// Cancelling again changes nothing; deleting now works, once.
	if _, err := h.ops().CancelOperation(ctx, &longrunningpb.CancelOperationRequest{Name: op.GetName()}); err != nil {
		t.Errorf("cancelling a cancelled export: %v", err)
	}
	if _, err := h.ops().DeleteOperation(ctx, &longrunningpb.DeleteOperationRequest{Name: op.GetName()}); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := h.ops().GetOperation(ctx, &longrunningpb.GetOperationRequest{Name: "operations/" + id}); status.Code(err) != codes.NotFound {
		t.Errorf("a deleted export: %v, want NOT_FOUND", err)
	}
}

func TestSucceededOperationCarriesTheExport(t *testing.T) {
	h := newExportHarness(t)
	ctx := as(t.Context(), "key-a")
	op := h.create(t, "key-a", backlinksExport("sized-150.example"))
	id := strings.TrimPrefix(op.GetName(), "operations/")
	h.finish(t, id, export.StateSucceeded, 3)
	got, err := h.ops().GetOperation(ctx, &longrunningpb.GetOperationRequest{Name: op.GetName()})
	if err != nil || !got.GetDone() {
		t.Fatalf("get: %v, %v", got, err)
	}
	var e v1.Export
	if err := got.GetResponse().UnmarshalTo(&e); err != nil {
		t.Fatalf("response: %v", err)
	}
	if e.GetName() != "exports/"+id || e.GetRows() != 3 || len(e.GetParts()) != 3 || e.GetFormat() != v1.ExportFormat_EXPORT_FORMAT_NDJSON {
		t.Fatalf("export %v", protojson.Format(&e))
	}
	for i, p := range e.GetParts() {
		b, err := h.download(ctx, p.GetName())
		if err != nil {
			t.Fatalf("%s: %v", p.GetName(), err)
		}
		sum := sha256.Sum256(b)
		if hex.EncodeToString(sum[:]) != p.GetSha256() || int64(len(b)) != p.GetBytes() {
			t.Errorf("part %d: %d bytes with sha256 %x, the export says %d and %s", i, len(b), sum, p.GetBytes(), p.GetSha256())
		}
		if !strings.HasPrefix(p.GetUri(), "mem://a/"+id+"/") {
			t.Errorf("part %d uri %q", i, p.GetUri())
		}
	}
	if _, err := h.download(ctx, "exports/"+id+"/parts/3"); status.Code(err) != codes.NotFound {
		t.Errorf("a part past the last: %v, want NOT_FOUND", err)
	}
	if _, err := h.download(ctx, "exports/"+id+"/parts/x"); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a malformed part name: %v, want INVALID_ARGUMENT", err)
	}
}

func TestFailedOperationKeepsItsPartsAndError(t *testing.T) {
	h := newExportHarness(t)
	op := h.create(t, "key-a", backlinksExport("sized-150.example"))
	h.finish(t, strings.TrimPrefix(op.GetName(), "operations/"), export.StateFailed, 1)
	got, err := h.ops().GetOperation(as(t.Context(), "key-a"), &longrunningpb.GetOperationRequest{Name: op.GetName()})
	if err != nil || !got.GetDone() || got.GetError().GetCode() != int32(codes.ResourceExhausted) {
		t.Fatalf("get: %v, %v", got, err)
	}
	if m := metadataOf(t, got); m.GetState() != v1.ExportState_EXPORT_STATE_FAILED || len(m.GetParts()) != 1 || m.GetRowsWritten() != 1 {
		t.Errorf("metadata %v", m)
	}
}

// TestExportSourceEqualsAStream runs the source from the start and from a
// checkpoint: its chunks are the messages of a direct stream, row for
// row, token for token, unit for unit.
func TestExportSourceEqualsAStream(t *testing.T) {
	h := newHarness(t, harnessOptions{pageRows: 97, noCache: true})
	h.sim.SetCacheTTL(-1) // every page paid, so units compare
	req := &v1.StreamBacklinksRequest{Target: "sized-1203.example", OrderBy: "domain_rating_source:desc", MaxRows: 700}
	direct, err := h.backlinks.StreamBacklinks(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	type msg struct {
		rows  []string
		token string
	}
	var want []msg
	var wantUnits int64
	for {
		m, err := direct.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var rows []string
		for _, r := range m.GetBacklinks() {
			rows = append(rows, r.GetUrlFrom()+" "+r.GetUrlTo())
		}
		want, wantUnits = append(want, msg{rows, m.GetNextPageToken()}), wantUnits+m.GetCost().GetUnitsCharged()
	}
	raw, _ := proto.Marshal(req)
	src := &ExportSource{Backlinks: h.server}
	run := func(token string) (got []msg, units int64) {
		t.Helper()
		err := src.Run(t.Context(), DefaultTenant, export.Request{Dataset: "backlinks", Message: raw}, token, func(c export.Chunk) error {
			var rows []string
			for _, r := range c.Rows {
				b := r.(*v1.Backlink)
				rows = append(rows, b.GetUrlFrom()+" "+b.GetUrlTo())
			}
			got, units = append(got, msg{rows, c.Token}), units+c.Units
			return nil
		})
		if err != nil {
			t.Fatalf("Run(%q): %v", token, err)
		}
		return got, units
	}
	got, units := run("")
	if len(got) != len(want) || len(want) < 3 {
		t.Fatalf("%d chunks, the stream sent %d messages", len(got), len(want))
	}
	for i := range want {
		if !slices.Equal(got[i].rows, want[i].rows) || got[i].token == "" != (want[i].token == "") {
			t.Fatalf("chunk %d differs from the stream's message", i)
		}
	}
	if units != wantUnits || units == 0 {
		t.Errorf("the chunks report %d units, the stream charged %d", units, wantUnits)
	}
	// From the checkpoint after the first chunk: the rest of the stream,
	// max_rows counting the rows before the checkpoint too.
	rest, _ := run(got[0].token)
	var gotRows, wantRows []string
	for _, m := range rest {
		gotRows = append(gotRows, m.rows...)
	}
	for _, m := range want[1:] {
		wantRows = append(wantRows, m.rows...)
	}
	if !slices.Equal(gotRows, wantRows) {
		t.Fatalf("resumed: %d rows, want %d", len(gotRows), len(wantRows))
	}
	// An emit error stops the run with that error.
	stop := errors.New("stop")
	err = src.Run(t.Context(), DefaultTenant, export.Request{Dataset: "backlinks", Message: raw}, "", func(export.Chunk) error { return stop })
	if !errors.Is(err, stop) && status.Convert(err).Message() != stop.Error() {
		t.Errorf("an emit error: %v", err)
	}
}

func TestDescribeExport(t *testing.T) {
	if _, err := DescribeExport(export.Request{Dataset: "nosuch"}); err == nil {
		t.Error("an unknown dataset is described")
	}
	for _, tc := range []struct {
		name string
		req  proto.Message
		set  string
		want []string
		row  protoreflect.FullName
	}{
		{"select in order, each once", &v1.StreamBacklinksRequest{Target: "example.com", Select: []string{"anchor,url_from", "anchor"}},
			"backlinks", []string{"anchor", "url_from"}, "linkgate.v1.Backlink"},
		{"the default selection", &v1.StreamRefDomainsRequest{Target: "example.com"}, "refdomains", paging.DefaultSelect("refdomains"), "linkgate.v1.RefDomain"},
		{"new/lost: the change first", &v1.StreamNewLostBacklinksRequest{Target: "example.com", Since: "2025-01-01", Select: []string{"url_from"}},
			"new_lost_backlinks", []string{"change", "change_time", "url_from"}, "linkgate.v1.NewLostBacklink"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, _ := proto.Marshal(tc.req)
			d, err := DescribeExport(export.Request{Dataset: tc.set, Message: raw, Format: parts.FormatCSV, Gzip: true})
			if err != nil {
				t.Fatal(err)
			}
			if cols := d.Columns; !slices.Equal(cols, tc.want) || len(cols) == 0 {
				t.Errorf("columns %v, want %v", cols, tc.want)
			}
			if d.Row == nil || d.Row.FullName() != tc.row {
				t.Errorf("row type %v, want %s", d.Row, tc.row)
			}
			js := d.Request
			var back v1.CreateExportRequest
			if err := protojson.Unmarshal(js, &back); err != nil || back.GetFormat() != v1.ExportFormat_EXPORT_FORMAT_CSV || !back.GetGzip() {
				t.Fatalf("request %s (%v)", js, err)
			}
			if got := back.ProtoReflect().Get(back.ProtoReflect().WhichOneof(back.ProtoReflect().Descriptor().Oneofs().ByName("request"))).Message().Interface(); !proto.Equal(got, tc.req) {
				t.Errorf("the request in the manifest %v, want %v", got, tc.req)
			}
		})
	}
}

func TestCheckpointPageToken(t *testing.T) {
	for in, want := range map[string]string{
		"":                 "",
		"120:7224:abc.def": "abc.def",
		"0:0:a:b":          "a:b", // a page token may hold colons
		"abc.def":          "",    // not a checkpoint
		"-1:5:abc":         "",
		"1:x:abc":          "",
		"1:2:":             "",
	} {
		if got := CheckpointPageToken(in); got != want {
			t.Errorf("CheckpointPageToken(%q) = %q, want %q", in, got, want)
		}
	}
	c := checkpoint{rows: 5, units: 300, token: "t:1"}
	if back, err := parseCheckpoint(c.String()); err != nil || back != c {
		t.Errorf("%+v came back as %+v (%v)", c, back, err)
	}
}

// classLog notes the class of every paid call a scheduler runs.
type classLog struct {
	paging.Scheduler
	mu      sync.Mutex
	classes []scheduler.Class
}

func (l *classLog) Do(ctx context.Context, c scheduler.Call) (scheduler.Result, error) {
	l.mu.Lock()
	l.classes = append(l.classes, c.Class)
	l.mu.Unlock()
	return l.Scheduler.Do(ctx, c)
}

func (l *classLog) take() []scheduler.Class {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.classes
	l.classes = nil
	return out
}

// TestExportPagesAreBulk: a caller's stream asks its first page of each
// feed as interactive work, someone waits for it; an export of the same
// request asks every page as bulk work, so interactive callers go first.
func TestExportPagesAreBulk(t *testing.T) {
	log := &classLog{}
	h := newHarness(t, harnessOptions{pageRows: 50, rpm: 600_000, noCache: true,
		wrapSched: func(s paging.Scheduler) paging.Scheduler { log.Scheduler = s; return log }})
	cases := []struct {
		dataset string
		req     proto.Message
		stream  func() error
		// interactive is how many of a stream's calls are interactive:
		// the first page of each feed.
		interactive int
	}{
		{"backlinks", &v1.StreamBacklinksRequest{Target: "sized-150.example"}, func() error {
			st, err := h.backlinks.StreamBacklinks(t.Context(), &v1.StreamBacklinksRequest{Target: "sized-150.example"})
			return drain(st, err)
		}, 1},
		{"new_lost_backlinks", &v1.StreamNewLostBacklinksRequest{Target: "sized-1203.example", Since: "2025-01-01"}, func() error {
			st, err := h.backlinks.StreamNewLostBacklinks(t.Context(), &v1.StreamNewLostBacklinksRequest{Target: "sized-1203.example", Since: "2025-01-01"})
			return drain(st, err)
		}, 2},
	}
	src := &ExportSource{Backlinks: h.server}
	for _, c := range cases {
		if err := c.stream(); err != nil {
			t.Fatalf("%s stream: %v", c.dataset, err)
		}
		streamed := log.take()
		if len(streamed) <= c.interactive {
			t.Fatalf("%s: the stream made %d calls: the test tests nothing", c.dataset, len(streamed))
		}
		if n := len(streamed) - countClass(streamed, scheduler.Bulk); n != c.interactive {
			t.Errorf("%s stream: %d interactive calls, want %d (%v)", c.dataset, n, c.interactive, streamed)
		}
		raw, _ := proto.Marshal(c.req)
		err := src.Run(t.Context(), DefaultTenant, export.Request{Dataset: c.dataset, Message: raw}, "",
			func(export.Chunk) error { return nil })
		if err != nil {
			t.Fatalf("%s export: %v", c.dataset, err)
		}
		exported := log.take()
		if len(exported) != len(streamed) || countClass(exported, scheduler.Bulk) != len(exported) {
			t.Errorf("%s export: classes %v, want %d calls, all bulk", c.dataset, exported, len(streamed))
		}
	}
}

func countClass(cs []scheduler.Class, c scheduler.Class) int {
	n := 0
	for _, x := range cs {
		if x == c {
			n++
		}
	}
	return n
}

// drain reads a stream to its end.
func drain[T any](st grpc.ServerStreamingClient[T], err error) error {
	if err != nil {
		return err
	}
	for {
		if _, err := st.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}
