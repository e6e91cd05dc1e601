package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/longrunning/autogen/longrunningpb"
	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/linkgate/linkgate/export"
	"github.com/linkgate/linkgate/export/parts"
	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/paging"
)

// ExportJobs is what the export services need of the job runner
// (*export.Runner). tenant "" reaches every tenant's jobs; another
// tenant's job is export.ErrNotFound.
type ExportJobs interface {
	// Submit stores a new job, or returns the tenant's job with the same
	// request id (or the same request, not yet done).
	Submit(ctx context.Context, j *export.Job) (*export.Job, error)
	Get(ctx context.Context, tenant, id string) (*export.Job, error)
	// List returns the jobs of tenant, oldest first.
	List(ctx context.Context, tenant string) ([]*export.Job, error)
	Cancel(ctx context.Context, tenant, id string) (*export.Job, error)
	// Delete cancels the job if it runs, forgets it and deletes its objects.
	Delete(ctx context.Context, tenant, id string) error
	// Wait returns the job once done, or as last read with ctx's error.
	Wait(ctx context.Context, tenant, id string) (*export.Job, error)
}

// ExportsConfig configures the export services.
type ExportsConfig struct {
	Jobs ExportJobs
	// Backlinks checks and prices a request as its Stream RPC would.
	Backlinks *BacklinksServer
	// Bucket holds the parts; BucketURL is its URL, the base of the
	// parts' URIs.
	Bucket    *blob.Bucket
	BucketURL string
	// SignedURLExpiry is how long a part's signed URL works, where the
	// bucket signs. Default 1h.
	SignedURLExpiry time.Duration
	Logger          *slog.Logger
	Now             func() time.Time
}

// exports is the state both export services share.
type exports struct{ cfg ExportsConfig }

// ExportServer implements linkgate.v1.ExportService.
type ExportServer struct {
	v1.UnimplementedExportServiceServer
	*exports
}

// OperationsServer implements google.longrunning.Operations over exports.
type OperationsServer struct {
	longrunningpb.UnimplementedOperationsServer
	*exports
}

// NewExportServers returns the export service and the operations service
// over the same jobs.
func NewExportServers(cfg ExportsConfig) (*ExportServer, *OperationsServer, error) {
	if cfg.Jobs == nil || cfg.Backlinks == nil || cfg.Bucket == nil {
		return nil, nil, errors.New("service: exports need jobs, the backlinks service and a bucket")
	}
	if cfg.SignedURLExpiry <= 0 {
		cfg.SignedURLExpiry = time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	e := &exports{cfg: cfg}
	return &ExportServer{exports: e}, &OperationsServer{exports: e}, nil
}

// CreateExport checks the request as its Stream RPC would, prices it, and
// submits the job.
func (s *ExportServer) CreateExport(ctx context.Context, req *v1.CreateExportRequest) (*longrunningpb.Operation, error) {
	caller, ok := CallerFrom(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no caller")
	}
	var (
		dataset string
		stream  exportStream
		est     = &v1.EstimateCostRequest{}
	)
	switch r := req.GetRequest().(type) {
	case *v1.CreateExportRequest_Backlinks:
		dataset, stream = paging.Backlinks.Label(), r.Backlinks
		est.Request = &v1.EstimateCostRequest_Backlinks{Backlinks: listOf(r.Backlinks, &v1.ListBacklinksRequest{})}
	case *v1.CreateExportRequest_Refdomains:
		dataset, stream = paging.RefDomains.Label(), r.Refdomains
		est.Request = &v1.EstimateCostRequest_RefDomains{RefDomains: listOf(r.Refdomains, &v1.ListRefDomainsRequest{})}
	case *v1.CreateExportRequest_BrokenBacklinks:
		dataset, stream = paging.BrokenBacklinks.Label(), r.BrokenBacklinks
		est.Request = &v1.EstimateCostRequest_BrokenBacklinks{BrokenBacklinks: listOf(r.BrokenBacklinks, &v1.ListBrokenBacklinksRequest{})}
	case *v1.CreateExportRequest_NewLostBacklinks:
		dataset, stream = paging.NewLost.Label(), r.NewLostBacklinks
		est.Request = &v1.EstimateCostRequest_NewLostBacklinks{NewLostBacklinks: listOf(r.NewLostBacklinks, &v1.ListNewLostBacklinksRequest{})}
	default:
		return nil, toStatus(paging.BadField("request", "name the rows to export: backlinks, refdomains, broken_backlinks or new_lost_backlinks"), "")
	}
	if n := stream.GetMaxRows(); n < 0 {
		return nil, toStatus(paging.BadField(dataset+".max_rows", "must not be negative, got %d", n), "")
	}
	if n := stream.GetMaxUnits(); n < 0 {
		return nil, toStatus(paging.BadField(dataset+".max_units", "must not be negative, got %d", n), "")
	}
	format := parts.Format(req.GetFormat())
	switch req.GetFormat() {
	case v1.ExportFormat_EXPORT_FORMAT_UNSPECIFIED:
		format = parts.FormatNDJSON
	case v1.ExportFormat_EXPORT_FORMAT_NDJSON, v1.ExportFormat_EXPORT_FORMAT_CSV, v1.ExportFormat_EXPORT_FORMAT_PARQUET:
	default:
		return nil, toStatus(paging.BadField("format", "unknown value %d: use EXPORT_FORMAT_NDJSON, EXPORT_FORMAT_CSV or EXPORT_FORMAT_PARQUET", req.GetFormat()), "")
	}
	// EstimateCost compiles the request (filter, selection, order, token)
	// without calling the upstream: an invalid one costs nothing.
	est.Rows = stream.GetMaxRows()
	priced, err := s.cfg.Backlinks.EstimateCost(ctx, est)
	if err != nil {
		return nil, renamed(err, estimateField(est), dataset+".")
	}
	var estimated int64
	if stream.GetMaxRows() > 0 {
		estimated = priced.GetUnitsForRows()
		if m := stream.GetMaxUnits(); m > 0 {
			estimated = min(estimated, m)
		}
	}
	msg, err := proto.Marshal(stream)
	if err != nil {
		return nil, toStatus(err, "")
	}
	job, err := s.cfg.Jobs.Submit(ctx, &export.Job{
		Tenant: caller.Tenant, RequestID: req.GetRequestId(),
		Request:        export.Request{Dataset: dataset, Message: msg, Format: format, Gzip: req.GetGzip()},
		EstimatedUnits: estimated,
	})
	if err != nil {
		return nil, jobError(err)
	}
	return s.operation(ctx, job)
}

// exportStream is the Stream request an export runs.
type exportStream interface {
	proto.Message
	GetMaxRows() int64
	GetMaxUnits() int64
}

// listOf copies a Stream request's fields into the List request of the
// same dataset (the fields they share), for EstimateCost.
func listOf[L proto.Message](stream proto.Message, list L) L {
	dst := list.ProtoReflect()
	fields := dst.Descriptor().Fields()
	stream.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if to := fields.ByName(fd.Name()); to != nil && to.Kind() == fd.Kind() && to.Cardinality() == fd.Cardinality() {
			dst.Set(to, v)
		}
		return true
	})
	return list
}

// estimateField is the name EstimateCost gives the request's fields.
func estimateField(r *v1.EstimateCostRequest) string {
	return string(r.ProtoReflect().WhichOneof(r.ProtoReflect().Descriptor().Oneofs().ByName("request")).Name()) + "."
}

// renamed rewrites the field paths of an INVALID_ARGUMENT's BadRequest
// (and its message) from one prefix to another, so that errors name the
// fields of CreateExportRequest.
func renamed(err error, from, to string) error {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.InvalidArgument {
		return err
	}
	p := proto.Clone(st.Proto()).(*spb.Status)
	rename := func(field string) string { return to + strings.TrimPrefix(field, from) }
	if from == "" || strings.HasPrefix(p.Message, from) {
		p.Message = rename(p.Message)
	}
	for _, d := range p.Details {
		var br errdetails.BadRequest
		if d.UnmarshalTo(&br) != nil {
			continue
		}
		for _, v := range br.FieldViolations {
			if from == "" || strings.HasPrefix(v.Field, from) {
				v.Field = rename(v.Field)
			}
		}
		packed, perr := anypb.New(&br)
		if perr == nil {
			d.TypeUrl, d.Value = packed.TypeUrl, packed.Value
		}
	}
	return status.FromProto(p).Err()
}

// GetExportPart streams the bytes of one part, as stored.
func (s *ExportServer) GetExportPart(req *v1.GetExportPartRequest, srv grpc.ServerStreamingServer[httpbody.HttpBody]) error {
	ctx := srv.Context()
	id, n, err := partName(req.GetName())
	if err != nil {
		return err
	}
	job, err := s.visible(ctx, id)
	if err != nil {
		return err
	}
	if n >= len(job.Parts) {
		return status.Errorf(codes.NotFound, "export %q has no part %d: it has %d", "exports/"+id, n, len(job.Parts))
	}
	p := job.Parts[n]
	r, err := s.cfg.Bucket.NewReader(ctx, p.Key, nil)
	if err != nil {
		if gcerrors.Code(err) == gcerrors.NotFound {
			return status.Errorf(codes.NotFound, "part %q is no longer stored", req.GetName())
		}
		s.cfg.Logger.Error("export part unreadable", "part", req.GetName(), "err", err)
		return status.Error(codes.Unavailable, "the part cannot be read from the bucket now; retry")
	}
	defer r.Close()
	md := metadata.Pairs(PartContentLengthKey, strconv.FormatInt(p.Bytes, 10))
	if p.ContentEncoding != "" {
		md.Set(PartContentEncodingKey, p.ContentEncoding)
	}
	if err := srv.SendHeader(md); err != nil {
		return err
	}
	buf := make([]byte, partChunkBytes)
	for first := true; ; first = false {
		k, rerr := io.ReadFull(r, buf)
		// The first message goes out even for an empty part: it carries
		// the content type.
		if k > 0 || first {
			if err := srv.Send(&httpbody.HttpBody{ContentType: p.ContentType, Data: buf[:k]}); err != nil {
				return err
			}
		}
		switch {
		case rerr == io.EOF || rerr == io.ErrUnexpectedEOF:
			return nil
		case rerr != nil:
			s.cfg.Logger.Error("export part read failed", "part", req.GetName(), "err", rerr)
			return status.Error(codes.Unavailable, "reading the part from the bucket failed; retry")
		}
	}
}

// Response header metadata of GetExportPart, which the REST gateway turns
// into the Content-Encoding and Content-Length of a download.
const (
	PartContentEncodingKey = "linkgate-content-encoding"
	PartContentLengthKey   = "linkgate-content-length"
)

// partChunkBytes is the size of GetExportPart's messages: well below
// gRPC's default 4 MiB message bound of clients.
const partChunkBytes = 256 << 10

// partName parses exports/{id}/parts/{n}.
func partName(name string) (id string, n int, err error) {
	rest, ok := strings.CutPrefix(name, "exports/")
	id, num, ok2 := strings.Cut(rest, "/parts/")
	if !ok || !ok2 || id == "" || strings.Contains(id, "/") {
		return "", 0, toStatus(paging.BadField("name", "must be exports/{id}/parts/{n}, got %q", name), "")
	}
	n, perr := strconv.Atoi(num)
	if perr != nil || n < 0 || strconv.Itoa(n) != num {
		return "", 0, toStatus(paging.BadField("name", "the part number must be a whole number from 0, got %q", num), "")
	}
	return id, n, nil
}

// operationID parses operations/{id}.
func operationID(name string) (string, error) {
	id, ok := strings.CutPrefix(name, "operations/")
	if !ok || id == "" || strings.Contains(id, "/") {
		return "", toStatus(paging.BadField("name", "must be operations/{id}, got %q", name), "")
	}
	return id, nil
}

// scope is the tenant whose jobs the caller reaches: its own, or every
// tenant's ("") for an admin. Another tenant's job is NOT_FOUND, as a job
// that does not exist, so that ids tell nothing about other tenants.
func scope(ctx context.Context) (string, error) {
	caller, ok := CallerFrom(ctx)
	if !ok {
		return "", status.Error(codes.Unauthenticated, "no caller")
	}
	if caller.Role == RoleAdmin {
		return "", nil
	}
	return caller.Tenant, nil
}

// visible returns job id if the caller may see it.
func (e *exports) visible(ctx context.Context, id string) (*export.Job, error) {
	tenant, err := scope(ctx)
	if err != nil {
		return nil, err
	}
	job, err := e.cfg.Jobs.Get(ctx, tenant, id)
	if err != nil {
		return nil, jobError(err)
	}
	return job, nil
}

// jobError maps an error of the job store.
func jobError(err error) error {
	if errors.Is(err, export.ErrNotFound) {
		return status.Error(codes.NotFound, "no such export")
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Unavailable, "the export store is unavailable; retry")
}

// operation is a job as its long-running operation.
func (e *exports) operation(ctx context.Context, j *export.Job) (*longrunningpb.Operation, error) {
	ps := e.parts(ctx, j)
	meta, err := anypb.New(&v1.ExportMetadata{
		State: v1.ExportState(j.State), Export: "exports/" + j.ID,
		RowsWritten: j.Rows, UnitsCharged: j.Units, UnitsEstimated: j.EstimatedUnits,
		Parts: ps, CheckpointToken: CheckpointPageToken(j.Checkpoint), TargetRows: j.TargetRows,
		CreateTime: stamp(j.Created), UpdateTime: stamp(j.Updated), ExpireTime: stamp(j.Expires),
	})
	if err != nil {
		return nil, toStatus(err, "")
	}
	op := &longrunningpb.Operation{Name: "operations/" + j.ID, Metadata: meta, Done: j.State.Done()}
	switch j.State {
	case export.StateSucceeded:
		resp, err := anypb.New(&v1.Export{Name: "exports/" + j.ID, Format: v1.ExportFormat(j.Request.Format),
			Rows: j.Rows, Units: j.Units, Parts: ps, ExpireTime: stamp(j.Expires)})
		if err != nil {
			return nil, toStatus(err, "")
		}
		op.Result = &longrunningpb.Operation_Response{Response: resp}
	case export.StateFailed, export.StateCancelled:
		code := codes.Code(j.ErrorCode)
		if code == codes.OK {
			code = codes.Unknown
			if j.State == export.StateCancelled {
				code = codes.Canceled
			}
		}
		op.Result = &longrunningpb.Operation_Error{Error: &spb.Status{Code: int32(code), Message: j.ErrorMessage}}
	}
	return op, nil
}

// parts describes a job's committed parts, with signed URLs where the
// bucket signs.
func (e *exports) parts(ctx context.Context, j *export.Job) []*v1.ExportPart {
	out := make([]*v1.ExportPart, len(j.Parts))
	expiry := e.cfg.SignedURLExpiry
	for i, p := range j.Parts {
		ep := &v1.ExportPart{Name: fmt.Sprintf("exports/%s/parts/%d", j.ID, i), Rows: p.Rows, Bytes: p.Bytes,
			Sha256: p.SHA256, Uri: objectURI(e.cfg.BucketURL, p.Key), ContentType: p.ContentType, ContentEncoding: p.ContentEncoding}
		signed, err := parts.SignedURL(ctx, e.cfg.Bucket, p.Key, expiry)
		if err != nil {
			e.cfg.Logger.Warn("signing an export part's URL", "part", ep.Name, "err", err)
		}
		if signed != "" {
			ep.SignedUri, ep.SignedUriExpireTime = signed, timestamppb.New(e.cfg.Now().Add(expiry))
		}
		out[i] = ep
	}
	return out
}

// objectURI is where key lives in the bucket of bucketURL: the bucket's
// URL without its options, then the key.
func objectURI(bucketURL, key string) string {
	base, _, _ := strings.Cut(bucketURL, "?")
	return strings.TrimSuffix(base, "/") + "/" + key
}

func stamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
