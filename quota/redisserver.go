package quota

import (
	"bufio"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// ErrEvicting is wrapped by the error of every operation of a RedisStore
// whose server may evict keys. The ledger's keys hold spend, open
// reservations and the tenant limit overrides: an evicted period is
// detected and rebuilt, but what the rebuild cannot restore would be lost
// at random under memory pressure, so the store refuses to work there.
var ErrEvicting = fmt.Errorf("%w: the Redis server may evict the ledger's keys", ErrUnavailable)

// RedisServer is what a Redis server says of itself (INFO, and CONFIG GET
// where it is allowed) that decides what the ledger on it can promise.
type RedisServer struct {
	Addr            string // as the client names it
	RunID           string // another after every restart or failover
	Version         string
	Role            string
	Replicas        int    // connected replicas
	Maxmemory       int64  // 0: no limit
	MaxmemoryPolicy string // noeviction is the only one that evicts nothing
	AOF             bool
	// AppendFsync and Save are CONFIG's appendfsync and save; ConfigRead is
	// false where CONFIG is refused (managed Redis), and they are unknown.
	AppendFsync string
	Save        string
	ConfigRead  bool
}

// Evicting reports whether the server may evict keys: any maxmemory
// policy but noeviction. A volatile-* policy reaches the ledger too, as a
// period's hash expires some time after its period. A server that refuses
// INFO (an ACL without it) has no known policy, and is not refused.
func (r RedisServer) Evicting() bool {
	return r.MaxmemoryPolicy != "noeviction" && r.MaxmemoryPolicy != ""
}

// Durability says what the server's persistence keeps of the ledger
// through a crash or restart, and what happens beyond it.
func (r RedisServer) Durability() string {
	var s string
	switch {
	case r.MaxmemoryPolicy == "":
		s = "unknown (INFO refused): the eviction policy and persistence cannot be checked"
	case r.AOF && r.AppendFsync == "always":
		s = "AOF, fsynced on every write: a crash of Redis or of its host loses no acknowledged write"
	case r.AOF && r.AppendFsync == "everysec":
		s = "AOF, fsynced every second: a crash of Redis' host loses up to about a second of ledger writes"
	case r.AOF && r.AppendFsync == "no":
		s = "AOF, fsynced when the OS chooses: a crash of Redis' host loses up to about 30 seconds of ledger writes"
	case r.AOF:
		s = "AOF (its fsync policy cannot be read): a crash of Redis' host loses up to its fsync interval of ledger writes"
	case !r.ConfigRead:
		s = "no AOF; RDB snapshots cannot be read (CONFIG refused): a restart may lose every ledger write since the last snapshot, or all"
	case r.Save != "":
		s = "RDB snapshots only (save " + r.Save + "): a crash or restart loses every ledger write since the last snapshot"
	default:
		s = "no persistence: a restart of Redis loses the whole ledger"
	}
	if r.Replicas > 0 {
		s += fmt.Sprintf("; %d replica(s), asynchronous: a failover may lose the last writes", r.Replicas)
	}
	return s + "; a period found lost is rebuilt from the upstream's usage before any unit is granted"
}

// evictingError is the error of a store on an evicting server.
func (r RedisServer) evictingError() error {
	return fmt.Errorf("%w: redis %s has maxmemory-policy %s: under memory pressure it may drop the ledger's spend, "+
		"reservations and tenant limit overrides; set maxmemory-policy noeviction (the page cache bounds its own size)",
		ErrEvicting, r.Addr, r.MaxmemoryPolicy)
}

// Inspect reads what the server says of itself. On Redis Cluster it reads
// every master and reports an evicting one if there is any.
func (s *RedisStore) Inspect(ctx context.Context) (RedisServer, error) {
	cc, ok := s.c.(*redis.ClusterClient)
	if !ok {
		r, err := inspect(ctx, s.c)
		return r, s.wrap(ctx, err)
	}
	var first, evicting *RedisServer
	var mu sync.Mutex
	err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		r, err := inspect(ctx, c)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if first == nil {
			first = &r
		}
		if r.Evicting() && evicting == nil {
			evicting = &r
		}
		return nil
	})
	switch {
	case err != nil:
		return RedisServer{}, s.wrap(ctx, err)
	case evicting != nil:
		return *evicting, nil
	case first != nil:
		return *first, nil
	}
	return RedisServer{}, fmt.Errorf("%w: redis cluster: no master", ErrUnavailable)
}

func inspect(ctx context.Context, c redis.UniversalClient) (RedisServer, error) {
	var r RedisServer
	if o, ok := c.(*redis.Client); ok {
		r.Addr = o.Options().Addr
	}
	info, err := c.Info(ctx, "server", "persistence", "memory", "replication").Result()
	if hasReplyPrefix(err, "NOPERM") {
		return r, c.Ping(ctx).Err() // reachable, its settings unknown
	}
	if err != nil {
		return RedisServer{}, err
	}
	r.MaxmemoryPolicy = "noeviction" // what a server that does not say runs
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok {
			continue
		}
		switch k {
		case "run_id":
			r.RunID = v
		case "redis_version":
			r.Version = v
		case "role":
			r.Role = v
		case "connected_slaves":
			r.Replicas, _ = strconv.Atoi(v)
		case "maxmemory":
			r.Maxmemory, _ = strconv.ParseInt(v, 10, 64)
		case "maxmemory_policy":
			r.MaxmemoryPolicy = v
		case "aof_enabled":
			r.AOF = v == "1"
		}
	}
	// CONFIG is often refused on managed Redis; INFO has said what matters
	// most, and what it has not is reported as unknown.
	fsync, err1 := c.ConfigGet(ctx, "appendfsync").Result()
	save, err2 := c.ConfigGet(ctx, "save").Result()
	_, ok1 := fsync["appendfsync"]
	_, ok2 := save["save"]
	if err1 == nil && err2 == nil && ok1 && ok2 {
		r.AppendFsync, r.Save, r.ConfigRead = fsync["appendfsync"], save["save"], true
	}
	return r, nil
}

// checkServer reads the server on the first call and on each Ping: it
// remembers an evicting one, which every operation then refuses, and tells
// the watcher when what the server says has changed (a restart, a
// failover: another run id; a setting).
func (s *RedisStore) checkServer(ctx context.Context) error {
	r, err := s.Inspect(ctx)
	if err != nil {
		return err
	}
	var refuse error
	if r.Evicting() {
		refuse = r.evictingError()
	}
	s.refused.Store(&refuse)
	if prev := s.server.Swap(&r); s.watch != nil && (prev == nil || *prev != r) {
		s.watch(r)
	}
	return refuse
}

// refusal is the error every operation returns on an evicting server.
func (s *RedisStore) refusal() error {
	if e := s.refused.Load(); e != nil {
		return *e
	}
	return nil
}
