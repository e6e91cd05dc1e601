// Package export runs exports: server-side jobs that stream a request's rows
// into bounded parts in a bucket, checkpointed after every committed part, so
// that any replica can resume a job after any fault without a duplicate row.
package export

import (
	"context"
	"errors"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/linkgate/linkgate/export/parts"
)

// State of a job. The values mirror the API's ExportState enum.
type State int32

const (
	StatePending   State = 1
	StateRunning   State = 2
	StateSucceeded State = 3
	StateFailed    State = 4
	StateCancelled State = 5
)

// Done reports whether s is final.
func (s State) Done() bool { return s == StateSucceeded || s == StateFailed || s == StateCancelled }

func (s State) String() string {
	switch s {
	case StatePending:
		return "PENDING"
	case StateRunning:
		return "RUNNING"
	case StateSucceeded:
		return "SUCCEEDED"
	case StateFailed:
		return "FAILED"
	case StateCancelled:
		return "CANCELLED"
	}
	return "STATE_UNSPECIFIED"
}

// Request is what a job runs. Message is the Stream request message of its
// dataset, marshaled with proto.Marshal; only the Source reads it.
type Request struct {
	Dataset string
	Message []byte
	Format  parts.Format
	Gzip    bool
}

// Job is an export and its progress, as the store keeps it.
type Job struct {
	ID, Tenant, RequestID string
	Request               Request
	State                 State
	// ErrorCode is a google.rpc.Code and ErrorMessage its message when the
	// job failed or was cancelled.
	ErrorCode    int32
	ErrorMessage string
	// Checkpoint is the page token after the last committed part ("" before
	// the first): where a takeover resumes.
	Checkpoint string
	// End is set once the Source has emitted its last row: a takeover then
	// has nothing left to fetch.
	End   bool
	Parts []parts.Part
	// Rows and Units are those of the committed parts; EstimatedUnits is the
	// estimate before the start; TargetRows is the upstream's count of the
	// target's rows when a free count exists (0 when unknown).
	Rows, Units, EstimatedUnits, TargetRows int64
	Created, Updated, Expires               time.Time
	// Owner runs the job until LeaseUntil; Epoch grows with every claim and
	// fences every write, so an owner that lost its lease cannot commit.
	Owner           string
	Epoch           int64
	LeaseUntil      time.Time
	CancelRequested bool
}

// Clone returns a deep copy of j, so a store never shares Parts with a caller.
func (j *Job) Clone() *Job {
	c := *j
	c.Request.Message = append([]byte(nil), j.Request.Message...)
	c.Parts = append([]parts.Part(nil), j.Parts...)
	return &c
}

var (
	// ErrNotFound is a job that does not exist (or belongs to another tenant).
	ErrNotFound = errors.New("export: job not found")
	// ErrFenced is a write by an owner whose epoch is no longer the job's:
	// another replica claimed it since.
	ErrFenced = errors.New("export: job claimed by another owner")
	// ErrExists is a Create whose ID is taken.
	ErrExists = errors.New("export: job exists")
)

// Chunk is rows a Source emits in order, with the token that resumes after
// its last row and the units charged for it. Rows are valid only during the
// emit call.
type Chunk struct {
	Rows  []proto.Message
	Token string
	Units int64
}

// Source runs the rows of a request for a tenant from a token ("" = the
// start of the request, which may carry its own page_token). It returns nil
// at the end of the data or at the request's max_rows/max_units; an error
// otherwise (ctx cancelled included).
type Source interface {
	Run(ctx context.Context, tenant string, r Request, token string, emit func(Chunk) error) error
}

// Store keeps jobs where every replica finds them. Every write by a job's
// owner is fenced on the Epoch its claim returned: once another claim bumped
// it, the write fails with ErrFenced and changes nothing.
type Store interface {
	// Create stores j, a new pending job with its ID set. When the tenant
	// already has a job with j.RequestID, or a job not yet done with the
	// same Request, it stores nothing and returns that job and false.
	Create(ctx context.Context, j *Job) (*Job, bool, error)
	// Get returns the job id, or ErrNotFound.
	Get(ctx context.Context, id string) (*Job, error)
	// List returns the jobs of tenant ("" = every tenant), oldest first.
	List(ctx context.Context, tenant string) ([]*Job, error)
	// Claim gives owner the oldest pending job, or a running one whose lease
	// ran out, until lease from now, and bumps its Epoch. It skips a tenant
	// whose live leases already number maxPerTenant (0 = no limit). It
	// returns nil, nil when there is nothing to claim.
	Claim(ctx context.Context, owner string, lease time.Duration, maxPerTenant int) (*Job, error)
	// Renew extends the lease of j (fenced on j.Epoch) and returns the job
	// as stored, so its owner sees CancelRequested.
	Renew(ctx context.Context, j *Job, lease time.Duration) (*Job, error)
	// Commit writes j's progress and state (fenced on j.Epoch); a final
	// state drops the lease.
	Commit(ctx context.Context, j *Job) error
	// Release drops j's lease now (fenced on j.Epoch), so another replica
	// claims it without waiting for the lease to run out.
	Release(ctx context.Context, j *Job) error
	// Cancel asks job id to stop: a pending job ends cancelled at once, a
	// running one when its owner next looks. It returns the job.
	Cancel(ctx context.Context, id string) (*Job, error)
	// Delete forgets job id (its objects are the caller's to delete).
	Delete(ctx context.Context, id string) error
	// Expired returns up to n jobs whose Expires is not after now.
	Expired(ctx context.Context, now time.Time, n int) ([]*Job, error)
	// Counts returns how many jobs wait for a claim and how many run
	// under a live lease.
	Counts(ctx context.Context) (pending, running int64, err error)
}

// codeCancelled is google.rpc.Code CANCELLED.
const codeCancelled = 1

// cancelled ends j as a cancelled job; its parts and checkpoint stay.
func cancelled(j *Job) {
	j.State, j.ErrorCode, j.ErrorMessage = StateCancelled, codeCancelled, "export cancelled"
	j.Owner, j.LeaseUntil = "", time.Time{}
}
