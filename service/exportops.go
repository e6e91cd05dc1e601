package service

import (
	"cmp"
	"context"
	"encoding/base64"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/longrunning/autogen/longrunningpb"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/linkgate/linkgate/export"
	"github.com/linkgate/linkgate/paging"
)

// Bounds of ListOperations and WaitOperation.
const (
	DefaultOperationsPageSize = 100
	MaxOperationsPageSize     = 1000
	// MaxWait bounds one WaitOperation call: a caller waits again with
	// the operation it got, as with any long poll.
	MaxWait = 5 * time.Minute
)

// GetOperation returns an export's operation.
func (s *OperationsServer) GetOperation(ctx context.Context, req *longrunningpb.GetOperationRequest) (*longrunningpb.Operation, error) {
	id, err := operationID(req.GetName())
	if err != nil {
		return nil, err
	}
	job, err := s.visible(ctx, id)
	if err != nil {
		return nil, err
	}
	return s.operation(ctx, job)
}

// doneFilter is the one filter ListOperations understands: done=true or
// done=false (AIP-160 spelling, spaces allowed).
var doneFilter = regexp.MustCompile(`^\s*done\s*=\s*(true|false)\s*$`)

// ListOperations lists the caller's export operations, oldest first; an
// admin's list holds every tenant's.
func (s *OperationsServer) ListOperations(ctx context.Context, req *longrunningpb.ListOperationsRequest) (*longrunningpb.ListOperationsResponse, error) {
	tenant, err := scope(ctx)
	if err != nil {
		return nil, err
	}
	// Google's REST binding sends name=operations; gRPC callers may
	// leave it empty.
	if n := req.GetName(); n != "" && n != "operations" {
		return nil, toStatus(paging.BadField("name", "must be \"operations\" or empty, got %q", n), "")
	}
	var done *bool
	if f := req.GetFilter(); f != "" {
		m := doneFilter.FindStringSubmatch(f)
		if m == nil {
			return nil, toStatus(paging.BadField("filter", "only done=true or done=false is supported, got %q", f), "")
		}
		d := m[1] == "true"
		done = &d
	}
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		return nil, toStatus(paging.BadField("page_size", "must not be negative, got %d", size), "")
	case size == 0:
		size = DefaultOperationsPageSize
	case size > MaxOperationsPageSize:
		size = MaxOperationsPageSize
	}
	after, err := decodeOperationsToken(req.GetPageToken())
	if err != nil {
		return nil, err
	}
	jobs, err := s.cfg.Jobs.List(ctx, tenant)
	if err != nil {
		return nil, jobError(err)
	}
	// Keyset paging on (create time, id): a job created or deleted
	// between pages neither shifts nor repeats the others.
	slices.SortFunc(jobs, compareJobs)
	resp := &longrunningpb.ListOperationsResponse{}
	var last *export.Job
	for _, j := range jobs {
		if after != nil && compareJobs(j, after) <= 0 {
			continue
		}
		if tenant != "" && j.Tenant != tenant || done != nil && j.State.Done() != *done {
			continue
		}
		if len(resp.Operations) == size {
			resp.NextPageToken = encodeOperationsToken(last)
			break
		}
		op, err := s.operation(ctx, j)
		if err != nil {
			return nil, err
		}
		resp.Operations, last = append(resp.Operations, op), j
	}
	return resp, nil
}

func compareJobs(a, b *export.Job) int {
	return cmp.Or(a.Created.Compare(b.Created), strings.Compare(a.ID, b.ID))
}

// encodeOperationsToken is the token that resumes after job j.
func encodeOperationsToken(j *export.Job) string {
	return base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "%d/%s", j.Created.UnixNano(), j.ID))
}

// decodeOperationsToken returns the position a page token resumes after
// (nil for none).
func decodeOperationsToken(tok string) (*export.Job, error) {
	if tok == "" {
		return nil, nil
	}
	bad := toStatus(paging.BadField("page_token", "is not a token of ListOperations"), "")
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return nil, bad
	}
	ns, id, ok := strings.Cut(string(raw), "/")
	n, err := strconv.ParseInt(ns, 10, 64)
	if !ok || err != nil || id == "" {
		return nil, bad
	}
	return &export.Job{ID: id, Created: time.Unix(0, n)}, nil
}

// CancelOperation asks an export to stop: a pending one ends at once, a
// running one within a page. It keeps the parts written so far. Cancelling
// a finished export changes nothing.
func (s *OperationsServer) CancelOperation(ctx context.Context, req *longrunningpb.CancelOperationRequest) (*emptypb.Empty, error) {
	id, err := operationID(req.GetName())
	if err != nil {
		return nil, err
	}
	job, err := s.visible(ctx, id)
	if err != nil {
		return nil, err
	}
	if job.State.Done() {
		return &emptypb.Empty{}, nil
	}
	if _, err := s.cfg.Jobs.Cancel(ctx, job.Tenant, id); err != nil {
		return nil, jobError(err)
	}
	return &emptypb.Empty{}, nil
}

// DeleteOperation forgets an export and deletes its parts; one still
// running is cancelled first.
func (s *OperationsServer) DeleteOperation(ctx context.Context, req *longrunningpb.DeleteOperationRequest) (*emptypb.Empty, error) {
	id, err := operationID(req.GetName())
	if err != nil {
		return nil, err
	}
	job, err := s.visible(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := s.cfg.Jobs.Delete(ctx, job.Tenant, id); err != nil {
		return nil, jobError(err)
	}
	return &emptypb.Empty{}, nil
}

// WaitOperation returns an export's operation once it is done, or its
// latest state after the timeout (at most MaxWait, and the call's
// deadline).
func (s *OperationsServer) WaitOperation(ctx context.Context, req *longrunningpb.WaitOperationRequest) (*longrunningpb.Operation, error) {
	id, err := operationID(req.GetName())
	if err != nil {
		return nil, err
	}
	wait := MaxWait
	if t := req.GetTimeout(); t != nil {
		if err := t.CheckValid(); err != nil || t.AsDuration() < 0 {
			return nil, toStatus(paging.BadField("timeout", "must be a duration of zero or more"), "")
		}
		wait = min(wait, t.AsDuration())
	}
	if dl, ok := ctx.Deadline(); ok {
		// Answer with the latest state a little before the caller gives up.
		wait = min(wait, time.Until(dl)*9/10)
	}
	tenant, err := scope(ctx)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	job, err := s.cfg.Jobs.Wait(wctx, tenant, id)
	switch {
	case err == nil || job != nil && wctx.Err() != nil && ctx.Err() == nil:
		// Done, or the wait is over: the latest state either way.
		return s.operation(ctx, job)
	case ctx.Err() != nil:
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return nil, jobError(err)
}
