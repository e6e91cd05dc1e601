package service

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/linkgate/linkgate/paging"
	"github.com/linkgate/linkgate/paging/filter"
	"github.com/linkgate/linkgate/quota"
	"github.com/linkgate/linkgate/scheduler"
	"github.com/linkgate/linkgate/upstream"
)

// ErrorDomain is the domain of every ErrorInfo linkgate sends.
const ErrorDomain = "linkgate"

// The reasons of ErrorInfo, stable for callers to switch on.
const (
	ReasonBudgetExhausted     = "BUDGET_EXHAUSTED"
	ReasonTenantLimitReached  = "TENANT_LIMIT_REACHED"
	ReasonUpstreamRateLimited = "UPSTREAM_RATE_LIMITED"
	ReasonUpstreamAuth        = "UPSTREAM_AUTH_FAILED"
	ReasonUpstreamPlan        = "UPSTREAM_PLAN_INSUFFICIENT"
	ReasonLedgerUnavailable   = "LEDGER_UNAVAILABLE"
	ReasonLedgerRebuilding    = "LEDGER_REBUILDING"
	ReasonUpstreamUnavailable = "UPSTREAM_UNAVAILABLE"
	ReasonTooManyStreams      = "TOO_MANY_STREAMS"
	ReasonServerBusy          = "SERVER_BUSY"
	ReasonBudgetHeldInFlight  = "BUDGET_HELD_IN_FLIGHT"
	ReasonQueueDeadline       = "QUEUE_DEADLINE"
	ReasonShuttingDown        = "SHUTTING_DOWN"
	ReasonRateLimiterDown     = "RATE_LIMITER_UNAVAILABLE"
	// ReasonUpstreamOrder: a page contradicted the order asked for or the
	// rows returned before; paging on would skip or repeat rows.
	ReasonUpstreamOrder = "UPSTREAM_ORDER_INCONSISTENT"
)

// errDraining ends streams at shutdown; errStreamDeadline ends them a
// margin before the caller's deadline. Both carry the token to resume.
var (
	errDraining       = errors.New("this replica is shutting down; resume with the page token")
	errStreamDeadline = errors.New("the stream stopped before the caller's deadline; resume with the page token")
)

// jitter spreads retry hints by up to +10%, so that callers refused
// together do not all come back at the same instant.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d + time.Duration(rand.Int64N(int64(d)/10+1))
}

// heldRetry is the hint of a denial by room held in flight: requests in
// flight settle within seconds.
const heldRetry = 2 * time.Second

// toStatus maps an error to the canonical status callers see, with its
// details. resumeToken, when not empty, is where a failed stream can resume;
// it travels in ErrorInfo's metadata as page_token. Internal errors are
// reported without their text, which may hold details callers must not see.
func toStatus(err error, resumeToken string) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	meta := map[string]string{}
	if resumeToken != "" {
		meta["page_token"] = resumeToken
	}
	var (
		invalid   *paging.InvalidArgument
		filterErr *filter.Error
		denied    *quota.DeniedError
		queued    *scheduler.QueueError
		apiErr    *upstream.APIError
		upInvalid *upstream.InvalidError
		orderErr  *paging.OrderError
	)
	switch {
	case errors.As(err, &orderErr):
		meta["page"] = strconv.Itoa(orderErr.Page)
		meta["key"] = orderErr.Key
		return withDetails(codes.FailedPrecondition, orderErr.Error()+"; an operator must check the upstream's collation (the page token resumes before that page)",
			&errdetails.ErrorInfo{Reason: ReasonUpstreamOrder, Domain: ErrorDomain, Metadata: meta})
	case errors.As(err, &invalid):
		return withDetails(codes.InvalidArgument, invalid.Error(), &errdetails.BadRequest{
			FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: invalid.Field, Description: invalid.Description}},
		})
	case errors.As(err, &upInvalid):
		return toStatus(paging.UpstreamInvalid(upInvalid), resumeToken)
	case errors.As(err, &filterErr):
		return withDetails(codes.InvalidArgument, filterErr.Error(), &errdetails.BadRequest{
			FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "filter", Description: filterErr.Error()}},
		})
	case errors.Is(err, paging.ErrBadToken):
		return withDetails(codes.InvalidArgument, err.Error(), &errdetails.BadRequest{
			FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "page_token", Description: err.Error()}},
		})
	case errors.As(err, &denied):
		reason, subject := ReasonBudgetExhausted, "pool"
		if denied.Scope == quota.ScopeTenant {
			reason, subject = ReasonTenantLimitReached, "tenant:"+denied.Tenant
		}
		meta["remaining_units"] = strconv.FormatInt(denied.Remaining, 10)
		meta["reserved_units"] = strconv.FormatInt(denied.Reserved, 10)
		meta["reset_time"] = denied.ResetAt.UTC().Format(time.RFC3339)
		wait := max(0, time.Until(denied.ResetAt))
		msg := fmt.Sprintf("%s: %d units left of %d, this page needs %d; the budget resets at %s",
			reasonText(reason), denied.Remaining, denied.Limit, denied.Asked, denied.ResetAt.UTC().Format(time.RFC3339))
		if denied.HeldInFlight() {
			reason, wait = ReasonBudgetHeldInFlight, heldRetry
			msg = fmt.Sprintf("the %s budget's room is held by requests in flight (%d units reserved, %d left, this page needs %d); retry in seconds",
				denied.Scope, denied.Reserved, denied.Remaining, denied.Asked)
		}
		return withDetails(codes.ResourceExhausted, msg,
			&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{Subject: subject, Description: msg}}},
			&errdetails.RetryInfo{RetryDelay: durationpb.New(jitter(wait))},
			&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain, Metadata: meta})
	case errors.As(err, &queued):
		meta["wait_ms"] = strconv.FormatInt(queued.Wait.Milliseconds(), 10)
		return withDetails(codes.ResourceExhausted,
			fmt.Sprintf("linkgate's queue for the upstream key could not admit this request before its deadline: the wait would be about %s", queued.Wait.Round(time.Millisecond)),
			&errdetails.RetryInfo{RetryDelay: durationpb.New(jitter(queued.Wait))},
			&errdetails.ErrorInfo{Reason: ReasonQueueDeadline, Domain: ErrorDomain, Metadata: meta})
	case errors.Is(err, errDraining):
		return withDetails(codes.Unavailable, err.Error(),
			&errdetails.RetryInfo{RetryDelay: durationpb.New(jitter(time.Second))},
			&errdetails.ErrorInfo{Reason: ReasonShuttingDown, Domain: ErrorDomain, Metadata: meta})
	case errors.Is(err, errStreamDeadline):
		return withDetails(codes.DeadlineExceeded, err.Error(), errorInfo("DEADLINE_EXCEEDED", meta))
	case errors.Is(err, scheduler.ErrLimiterUnavailable), errors.Is(err, scheduler.ErrClosed):
		return withDetails(codes.Unavailable, "linkgate's rate limiter for the upstream key cannot be reached; no units were spent",
			&errdetails.RetryInfo{RetryDelay: durationpb.New(jitter(5 * time.Second))},
			&errdetails.ErrorInfo{Reason: ReasonRateLimiterDown, Domain: ErrorDomain, Metadata: meta})
	case errors.Is(err, quota.ErrRebuilding) && (errors.Is(err, upstream.ErrUnauthorized) || errors.Is(err, upstream.ErrForbidden)):
		// The ledger cannot be rebuilt because the upstream refuses the
		// key: the operator's problem, told as such.
		var rb *quota.RebuildError
		if errors.As(err, &rb) {
			return toStatus(rb.Cause, resumeToken)
		}
		fallthrough
	case errors.Is(err, quota.ErrRebuilding):
		return withDetails(codes.Unavailable, "the quota ledger lost its state and is being rebuilt from the upstream's usage; no units were spent",
			&errdetails.RetryInfo{RetryDelay: durationpb.New(jitter(2 * time.Second))},
			&errdetails.ErrorInfo{Reason: ReasonLedgerRebuilding, Domain: ErrorDomain, Metadata: meta})
	case errors.Is(err, quota.ErrUnavailable):
		return withDetails(codes.Unavailable, "the quota ledger cannot be reached; no units were spent",
			&errdetails.RetryInfo{RetryDelay: durationpb.New(jitter(5 * time.Second))},
			&errdetails.ErrorInfo{Reason: ReasonLedgerUnavailable, Domain: ErrorDomain, Metadata: meta})
	case errors.Is(err, upstream.ErrRateLimited):
		wait := 10 * time.Second
		if errors.As(err, &apiErr) && apiErr.RetryAfter > 0 {
			wait = apiErr.RetryAfter
		}
		return withDetails(codes.ResourceExhausted, "the upstream answered 429 (its rate limit) after retries; retry later",
			&errdetails.RetryInfo{RetryDelay: durationpb.New(jitter(wait))},
			&errdetails.ErrorInfo{Reason: ReasonUpstreamRateLimited, Domain: ErrorDomain, Metadata: meta})
	case errors.Is(err, upstream.ErrUnauthorized):
		return withDetails(codes.FailedPrecondition, "the upstream refused linkgate's API key; an operator must fix the key",
			&errdetails.ErrorInfo{Reason: ReasonUpstreamAuth, Domain: ErrorDomain, Metadata: meta})
	case errors.Is(err, upstream.ErrForbidden):
		return withDetails(codes.FailedPrecondition, "the upstream plan does not allow this request or its units are spent; an operator must act",
			&errdetails.ErrorInfo{Reason: ReasonUpstreamPlan, Domain: ErrorDomain, Metadata: meta})
	case errors.Is(err, upstream.ErrNotFound):
		return status.Error(codes.NotFound, "the upstream has no data for this target")
	case errors.Is(err, upstream.ErrBadRequest):
		msg := "the upstream rejected the request"
		if errors.As(err, &apiErr) {
			msg += ": " + apiErr.Message
		}
		return withDetails(codes.InvalidArgument, msg, &errdetails.ErrorInfo{Reason: "UPSTREAM_REJECTED", Domain: ErrorDomain, Metadata: meta})
	case errors.Is(err, upstream.ErrUpstreamUnavailable):
		msg := "the upstream is unavailable; retry later"
		if errors.As(err, &apiErr) {
			// Which failure it was (a 5xx, no answer, a body cut short or
			// malformed), without the key or the query.
			msg = "the upstream failed (" + apiErr.Error() + "); retry later"
		}
		return withDetails(codes.Unavailable, msg,
			&errdetails.RetryInfo{RetryDelay: durationpb.New(jitter(5 * time.Second))},
			&errdetails.ErrorInfo{Reason: ReasonUpstreamUnavailable, Domain: ErrorDomain, Metadata: meta})
	case errors.Is(err, context.Canceled):
		return withDetails(codes.Canceled, "the request was cancelled", errorInfo("CANCELLED", meta))
	case errors.Is(err, context.DeadlineExceeded):
		return withDetails(codes.DeadlineExceeded, "the request's deadline passed", errorInfo("DEADLINE_EXCEEDED", meta))
	}
	return &internalError{status: withDetails(codes.Internal, "internal error", errorInfo("INTERNAL", meta)), cause: err}
}

// internalError is INTERNAL as callers see it, without its text, and the
// cause the request's log line reports: linkgate's own fault, which an
// operator must be able to find.
type internalError struct {
	status error
	cause  error
}

func (e *internalError) Error() string              { return e.status.Error() }
func (e *internalError) GRPCStatus() *status.Status { return status.Convert(e.status) }
func (e *internalError) Unwrap() error              { return e.cause }

// internalCause is the cause of an INTERNAL status toStatus made, or "".
func internalCause(err error) string {
	var ie *internalError
	if errors.As(err, &ie) {
		return ie.cause.Error()
	}
	return ""
}

func errorInfo(reason string, meta map[string]string) *errdetails.ErrorInfo {
	return &errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain, Metadata: meta}
}

func reasonText(reason string) string {
	if reason == ReasonTenantLimitReached {
		return "the tenant's budget is spent"
	}
	return "the shared budget is spent"
}

func withDetails(c codes.Code, msg string, details ...protoadapt.MessageV1) error {
	st, err := status.New(c, msg).WithDetails(details...)
	if err != nil {
		return status.Error(c, msg)
	}
	return st.Err()
}
