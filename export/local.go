package export

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/linkgate/linkgate/export/parts"
)

// localStore is the Store of one process (memory, bolt): every operation is
// one transaction over a table of jobs and an index of keys, so the claim,
// the fence and the dedup are simple reads and writes inside it.
type localStore struct {
	update func(func(localTx) error) error
	view   func(func(localTx) error) error
	now    func() time.Time
}

// localTx is what a transaction reads and writes. get returns ErrNotFound
// for a missing job; jobs returns every job, or only those not yet done.
type localTx interface {
	get(id string) (*Job, error)
	put(j *Job) error
	del(id string) error
	jobs(active bool) ([]*Job, error)
	index(key string) string
	setIndex(key, id string) error
	delIndex(key string) error
}

func requestKey(tenant, requestID string) string { return "r\x00" + tenant + "\x00" + requestID }

// sameKey names a tenant's request, so an identical one is not started
// twice while the first is not done.
func sameKey(tenant string, r Request) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d\x00%t\x00", r.Dataset, r.Format, r.Gzip)
	h.Write(r.Message)
	return "s\x00" + tenant + "\x00" + hex.EncodeToString(h.Sum(nil))
}

func (s *localStore) Create(ctx context.Context, j *Job) (*Job, bool, error) {
	if err := checkNew(j); err != nil {
		return nil, false, err
	}
	var out *Job
	created := false
	err := s.update(func(tx localTx) error {
		rk, sk := "", sameKey(j.Tenant, j.Request)
		if j.RequestID != "" {
			rk = requestKey(j.Tenant, j.RequestID)
			if id := tx.index(rk); id != "" {
				if old, err := tx.get(id); err == nil {
					out = old
					return nil
				}
			}
		}
		if id := tx.index(sk); id != "" {
			if old, err := tx.get(id); err == nil && !old.State.Done() {
				out = old
				if rk != "" {
					return tx.setIndex(rk, id)
				}
				return nil
			}
		}
		if _, err := tx.get(j.ID); err == nil {
			return ErrExists
		}
		n := j.Clone()
		n.State, n.Epoch, n.Owner, n.LeaseUntil = StatePending, 0, "", time.Time{}
		if err := tx.put(n); err != nil {
			return err
		}
		if rk != "" {
			if err := tx.setIndex(rk, n.ID); err != nil {
				return err
			}
		}
		out, created = n, true
		return tx.setIndex(sk, n.ID)
	})
	if err != nil {
		return nil, false, err
	}
	return out.Clone(), created, nil
}

// checkNew rejects a job a store cannot key.
func checkNew(j *Job) error {
	switch {
	case j.ID == "":
		return fmt.Errorf("export: job id is empty")
	case j.Tenant == "":
		return fmt.Errorf("export: job tenant is empty")
	case strings.ContainsAny(j.ID, "/{}"):
		return fmt.Errorf("export: job id %q holds '/', '{' or '}'", j.ID)
	}
	return nil
}

func (s *localStore) Get(ctx context.Context, id string) (*Job, error) {
	var out *Job
	err := s.view(func(tx localTx) error {
		j, err := tx.get(id)
		out = j
		return err
	})
	if err != nil {
		return nil, err
	}
	return out.Clone(), nil
}

func (s *localStore) List(ctx context.Context, tenant string) ([]*Job, error) {
	var out []*Job
	err := s.view(func(tx localTx) error {
		all, err := tx.jobs(false)
		for _, j := range all {
			if tenant == "" || j.Tenant == tenant {
				out = append(out, j.Clone())
			}
		}
		return err
	})
	sortJobs(out)
	return out, err
}

// sortJobs orders jobs oldest first, the order of claims and of List.
func sortJobs(js []*Job) {
	slices.SortFunc(js, func(a, b *Job) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}

func (s *localStore) Claim(ctx context.Context, owner string, lease time.Duration, maxPerTenant int) (*Job, error) {
	var out *Job
	err := s.update(func(tx localTx) error {
		now := s.now()
		active, err := tx.jobs(true)
		if err != nil {
			return err
		}
		sortJobs(active)
		live := map[string]int{}
		for _, j := range active {
			if j.LeaseUntil.After(now) {
				live[j.Tenant]++
			}
		}
		for _, j := range active {
			if j.LeaseUntil.After(now) || (maxPerTenant > 0 && live[j.Tenant] >= maxPerTenant) {
				continue
			}
			j.State, j.Owner, j.LeaseUntil, j.Updated = StateRunning, owner, now.Add(lease), now
			j.Epoch++
			out = j
			return tx.put(j)
		}
		return nil
	})
	if err != nil || out == nil {
		return nil, err
	}
	return out.Clone(), nil
}

// fenced reads the job j's owner may still write: the same epoch, not done.
func fenced(tx localTx, j *Job) (*Job, error) {
	cur, err := tx.get(j.ID)
	if err != nil {
		return nil, err
	}
	if cur.Epoch != j.Epoch || cur.State.Done() {
		return nil, ErrFenced
	}
	return cur, nil
}

func (s *localStore) Renew(ctx context.Context, j *Job, lease time.Duration) (*Job, error) {
	var out *Job
	err := s.update(func(tx localTx) error {
		cur, err := fenced(tx, j)
		if err != nil {
			return err
		}
		now := s.now()
		cur.LeaseUntil = now.Add(lease)
		out = cur
		return tx.put(cur)
	})
	if err != nil {
		return nil, err
	}
	return out.Clone(), nil
}

func (s *localStore) Commit(ctx context.Context, j *Job) error {
	return s.update(func(tx localTx) error {
		cur, err := fenced(tx, j)
		if err != nil {
			return err
		}
		progress(cur, j, s.now())
		if cur.State.Done() {
			if err := dropSame(tx, cur); err != nil {
				return err
			}
		}
		return tx.put(cur)
	})
}

// progress copies into cur what an owner's Commit writes: everything but
// identity, request, lease and the cancel request.
func progress(cur, j *Job, now time.Time) {
	cur.State, cur.ErrorCode, cur.ErrorMessage = j.State, j.ErrorCode, j.ErrorMessage
	cur.Checkpoint, cur.End, cur.Parts = j.Checkpoint, j.End, append([]parts.Part(nil), j.Parts...)
	cur.Rows, cur.Units, cur.EstimatedUnits, cur.TargetRows = j.Rows, j.Units, j.EstimatedUnits, j.TargetRows
	cur.Expires, cur.Updated = j.Expires, now
	if cur.State.Done() {
		cur.Owner, cur.LeaseUntil = "", time.Time{}
	}
}

// dropSame frees the request of a done job for a new identical one.
func dropSame(tx localTx, j *Job) error {
	sk := sameKey(j.Tenant, j.Request)
	if tx.index(sk) == j.ID {
		return tx.delIndex(sk)
	}
	return nil
}

func (s *localStore) Release(ctx context.Context, j *Job) error {
	return s.update(func(tx localTx) error {
		cur, err := fenced(tx, j)
		if err != nil {
			return err
		}
		cur.Owner, cur.LeaseUntil, cur.Updated = "", time.Time{}, s.now()
		return tx.put(cur)
	})
}

func (s *localStore) Cancel(ctx context.Context, id string) (*Job, error) {
	var out *Job
	err := s.update(func(tx localTx) error {
		cur, err := tx.get(id)
		if err != nil {
			return err
		}
		out = cur
		if cur.State.Done() {
			return nil
		}
		now := s.now()
		cur.CancelRequested, cur.Updated = true, now
		if !cur.LeaseUntil.After(now) {
			// Nobody runs it: it ends here, and the epoch moves so that an
			// owner whose lease ran out cannot write over the end.
			cancelled(cur)
			cur.Epoch++
			if err := dropSame(tx, cur); err != nil {
				return err
			}
		}
		return tx.put(cur)
	})
	if err != nil {
		return nil, err
	}
	return out.Clone(), nil
}

func (s *localStore) Delete(ctx context.Context, id string) error {
	return s.update(func(tx localTx) error {
		cur, err := tx.get(id)
		if err != nil {
			return err
		}
		if cur.RequestID != "" {
			rk := requestKey(cur.Tenant, cur.RequestID)
			if tx.index(rk) == id {
				if err := tx.delIndex(rk); err != nil {
					return err
				}
			}
		}
		if err := dropSame(tx, cur); err != nil {
			return err
		}
		return tx.del(id)
	})
}

func (s *localStore) Expired(ctx context.Context, now time.Time, n int) ([]*Job, error) {
	var out []*Job
	err := s.view(func(tx localTx) error {
		all, err := tx.jobs(false)
		for _, j := range all {
			if len(out) < n && !j.Expires.IsZero() && !j.Expires.After(now) {
				out = append(out, j.Clone())
			}
		}
		return err
	})
	return out, err
}

func (s *localStore) Counts(ctx context.Context) (pending, running int64, err error) {
	err = s.view(func(tx localTx) error {
		now := s.now()
		active, err := tx.jobs(true)
		for _, j := range active {
			if j.LeaseUntil.After(now) {
				running++
			} else {
				pending++
			}
		}
		return err
	})
	return pending, running, err
}
