package export

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

//go:embed lua/*.lua
var luaFiles embed.FS

// script is one job operation: the shared head (lua/common.lua) and its
// body, run by EVALSHA, so each is one atomic step on the server.
func script(name string) *redis.Script {
	head, err := luaFiles.ReadFile("lua/common.lua")
	if err != nil {
		panic(err)
	}
	body, err := luaFiles.ReadFile("lua/" + name + ".lua")
	if err != nil {
		panic(err)
	}
	return redis.NewScript(string(head) + "\n" + string(body))
}

var (
	createScript  = script("create")
	claimScript   = script("claim")
	renewScript   = script("renew")
	commitScript  = script("commit")
	releaseScript = script("release")
	cancelScript  = script("cancel")
	deleteScript  = script("delete")
	countsScript  = script("counts")
)

// RedisStore keeps jobs in Redis (7 or later), shared by every replica.
// Claims, renewals and commits are Lua scripts that compare the job's epoch
// and change it in the same step, so a replica whose lease ran out cannot
// write. Every key carries the hash tag {jobs}: they share one slot, so the
// scripts work on a Redis Cluster (they reach a job's hash by its name in
// that slot). Leases are measured on the server's clock (TIME), so the
// replicas' clocks need not agree.
//
// A Redis that comes back empty (no persistence, lost volume) has lost its
// jobs: their owners stop at their next renewal (ErrNotFound), and the parts
// they committed stay in the bucket with the manifest beside them, which
// lists them and the token that resumes after them (docs/exports.md).
type RedisStore struct {
	c      redis.UniversalClient
	prefix string
	clock  func() time.Time
}

// RedisOption configures NewRedisStore.
type RedisOption func(*RedisStore)

// WithRedisKeyPrefix sets the prefix of every key (default "linkgate:export").
func WithRedisKeyPrefix(p string) RedisOption { return func(s *RedisStore) { s.prefix = p } }

// WithRedisClock replaces the server's TIME (tests).
func WithRedisClock(now func() time.Time) RedisOption { return func(s *RedisStore) { s.clock = now } }

// NewRedisStore returns a store over c; c stays the caller's to close.
func NewRedisStore(c redis.UniversalClient, opts ...RedisOption) *RedisStore {
	s := &RedisStore{c: c, prefix: "linkgate:export"}
	for _, o := range opts {
		o(s)
	}
	return s
}

func (s *RedisStore) base() string            { return s.prefix + ":{jobs}:" }
func (s *RedisStore) jobKey(id string) string { return s.base() + "job:" + id }
func (s *RedisStore) active() string          { return s.base() + "active" }
func (s *RedisStore) all() string             { return s.base() + "all" }
func (s *RedisStore) expires() string         { return s.base() + "expires" }
func (s *RedisStore) idx() string             { return s.base() + "idx" }
func (s *RedisStore) tenant(t string) string  { return s.base() + "tenant:" + t }

// now is the clock argument of a script: "" lets the script read TIME.
func (s *RedisStore) now() string {
	if s.clock == nil {
		return ""
	}
	return strconv.FormatInt(s.clock().UnixMilli(), 10)
}

func (s *RedisStore) wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("export: redis: %w", err)
}

// reply turns a script's status reply into the store's errors.
func reply(v any) error {
	switch v {
	case "nf":
		return ErrNotFound
	case "fenced":
		return ErrFenced
	}
	return nil
}

func (s *RedisStore) Create(ctx context.Context, j *Job) (*Job, bool, error) {
	if err := checkNew(j); err != nil {
		return nil, false, err
	}
	n := j.Clone()
	n.State, n.Epoch, n.Owner, n.LeaseUntil = StatePending, 0, "", time.Time{}
	data, err := json.Marshal(n)
	if err != nil {
		return nil, false, err
	}
	rk := ""
	if j.RequestID != "" {
		rk = requestKey(j.Tenant, j.RequestID)
	}
	v, err := createScript.Run(ctx, s.c,
		[]string{s.jobKey(j.ID), s.active(), s.all(), s.tenant(j.Tenant), s.expires(), s.idx()},
		s.jobKey(""), j.ID, rk, sameKey(j.Tenant, j.Request), data, j.Created.UnixMilli(),
		j.Expires.UnixMilli(), j.Tenant, s.now()).StringSlice()
	if err != nil {
		return nil, false, s.wrap(err)
	}
	switch v[0] {
	case "exists":
		return nil, false, ErrExists
	case "old":
		old, err := s.Get(ctx, v[1])
		return old, false, err
	}
	got, err := s.Get(ctx, j.ID)
	return got, err == nil, err
}

// decode makes a job of a script's read: the data JSON, then the fields the
// scripts own.
func decode(v []any) (*Job, error) {
	if len(v) != 9 || v[0] == nil {
		return nil, ErrNotFound
	}
	str := func(i int) string { s, _ := v[i].(string); return s }
	num := func(i int) int64 { n, _ := strconv.ParseInt(str(i), 10, 64); return n }
	j, err := decodeJob([]byte(str(0)))
	if err != nil {
		return nil, err
	}
	j.State, j.Epoch, j.Owner = State(num(1)), num(2), str(3)
	j.LeaseUntil = time.Time{}
	if l := num(4); l > 0 {
		j.LeaseUntil = time.UnixMilli(l).UTC()
	}
	j.CancelRequested = num(5) == 1
	j.ErrorCode, j.ErrorMessage = int32(num(6)), str(7)
	j.Updated = time.UnixMilli(num(8)).UTC()
	return j, nil
}

func (s *RedisStore) Get(ctx context.Context, id string) (*Job, error) {
	v, err := s.c.HMGet(ctx, s.jobKey(id), "data", "state", "epoch", "owner", "lease", "cancel", "ecode", "emsg", "updated").Result()
	if err != nil {
		return nil, s.wrap(err)
	}
	return decode(v)
}

func (s *RedisStore) List(ctx context.Context, tenant string) ([]*Job, error) {
	key := s.all()
	if tenant != "" {
		key = s.tenant(tenant)
	}
	ids, err := s.c.ZRange(ctx, key, 0, -1).Result()
	if err != nil {
		return nil, s.wrap(err)
	}
	return s.getAll(ctx, ids)
}

// getAll reads jobs in one pipeline, leaving out those deleted meanwhile.
func (s *RedisStore) getAll(ctx context.Context, ids []string) ([]*Job, error) {
	cmds := make([]*redis.SliceCmd, len(ids))
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HMGet(ctx, s.jobKey(id), "data", "state", "epoch", "owner", "lease", "cancel", "ecode", "emsg", "updated")
		}
		return nil
	})
	if err != nil {
		return nil, s.wrap(err)
	}
	out := make([]*Job, 0, len(ids))
	for _, c := range cmds {
		j, err := decode(c.Val())
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, nil
}

func (s *RedisStore) Claim(ctx context.Context, owner string, lease time.Duration, maxPerTenant int) (*Job, error) {
	v, err := claimScript.Run(ctx, s.c, []string{s.active()}, s.jobKey(""), owner, lease.Milliseconds(), maxPerTenant, s.now()).Slice()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, s.wrap(err)
	}
	return decode(v)
}

func (s *RedisStore) Renew(ctx context.Context, j *Job, lease time.Duration) (*Job, error) {
	v, err := renewScript.Run(ctx, s.c, []string{s.jobKey(j.ID), s.active()}, j.ID, j.Epoch, lease.Milliseconds(), s.now()).Result()
	if err != nil {
		return nil, s.wrap(err)
	}
	if err := reply(v); err != nil {
		return nil, err
	}
	row, _ := v.([]any)
	return decode(row)
}

func (s *RedisStore) Commit(ctx context.Context, j *Job) error {
	data, err := json.Marshal(j)
	if err != nil {
		return err
	}
	v, err := commitScript.Run(ctx, s.c, []string{s.jobKey(j.ID), s.active(), s.expires(), s.idx()},
		j.ID, j.Epoch, data, int32(j.State), j.ErrorCode, j.ErrorMessage, j.Expires.UnixMilli(),
		sameKey(j.Tenant, j.Request), s.now()).Result()
	if err != nil {
		return s.wrap(err)
	}
	return reply(v)
}

func (s *RedisStore) Release(ctx context.Context, j *Job) error {
	v, err := releaseScript.Run(ctx, s.c, []string{s.jobKey(j.ID), s.active()}, j.ID, j.Epoch, s.now()).Result()
	if err != nil {
		return s.wrap(err)
	}
	return reply(v)
}

func (s *RedisStore) Cancel(ctx context.Context, id string) (*Job, error) {
	cur, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	v, err := cancelScript.Run(ctx, s.c, []string{s.jobKey(id), s.active(), s.idx()}, id, sameKey(cur.Tenant, cur.Request), s.now()).Result()
	if err != nil {
		return nil, s.wrap(err)
	}
	if err := reply(v); err != nil {
		return nil, err
	}
	row, _ := v.([]any)
	return decode(row)
}

func (s *RedisStore) Delete(ctx context.Context, id string) error {
	cur, err := s.Get(ctx, id)
	if err != nil {
		return err
	}
	rk := ""
	if cur.RequestID != "" {
		rk = requestKey(cur.Tenant, cur.RequestID)
	}
	v, err := deleteScript.Run(ctx, s.c, []string{s.jobKey(id), s.active(), s.all(), s.tenant(cur.Tenant), s.expires(), s.idx()},
		id, rk, sameKey(cur.Tenant, cur.Request)).Result()
	if err != nil {
		return s.wrap(err)
	}
	return reply(v)
}

func (s *RedisStore) Expired(ctx context.Context, now time.Time, n int) ([]*Job, error) {
	ids, err := s.c.ZRangeByScore(ctx, s.expires(), &redis.ZRangeBy{Min: "-inf", Max: strconv.FormatInt(now.UnixMilli(), 10), Count: int64(n)}).Result()
	if err != nil {
		return nil, s.wrap(err)
	}
	return s.getAll(ctx, ids)
}

func (s *RedisStore) Counts(ctx context.Context) (pending, running int64, err error) {
	v, err := countsScript.Run(ctx, s.c, []string{s.active()}, s.now()).Int64Slice()
	if err != nil {
		return 0, 0, s.wrap(err)
	}
	return v[0], v[1], nil
}
