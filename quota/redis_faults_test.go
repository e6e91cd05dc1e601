package quota

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkgate/linkgate/internal/clock"
	"github.com/linkgate/linkgate/internal/redistest"
)

// faultServer is a Redis server of one test, and the test's own
// connection to it.
type faultServer struct {
	*redistest.Server
	admin *redis.Client
}

func (s faultServer) set(t *testing.T, key, value string) {
	t.Helper()
	if err := s.admin.ConfigSet(t.Context(), key, value).Err(); err != nil {
		t.Fatalf("CONFIG SET %s %s: %v", key, value, err)
	}
}

// waitInfo waits until the server's INFO section says want.
func (s faultServer) waitInfo(t *testing.T, section, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, _ := s.admin.Info(t.Context(), section).Result()
		if strings.Contains(info, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("INFO %s never says %s:\n%s", section, want, info)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// replicaOfNobody makes the server a replica of an address where nothing
// listens: a master demoted, or a replica whose master is gone.
func (s faultServer) replicaOfNobody(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	_ = ln.Close()
	if err := s.admin.ReplicaOf(t.Context(), host, port).Err(); err != nil {
		t.Fatal(err)
	}
}

// TestRedisServerFaultsAreUnavailable: a real Redis server that cannot take
// the ledger's requests for now, as operators' setups bring it about, fails
// them with ErrUnavailable (UNAVAILABLE, which callers retry), never with an
// internal error. Each case starts a server of its own, opens a ledger on
// it and reserves, brings the fault about, and has a replica (a new client)
// reserve again.
func TestRedisServerFaultsAreUnavailable(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply string   // how the server's reply starts ("": none is read)
		args  []string // of the server
		setup func(t *testing.T, s faultServer)
		fault func(t *testing.T, s faultServer)
		// read: the fault is met by the store's first read (the server's
		// TIME), as writes are refused otherwise first.
		read bool
	}{
		{name: "min-replicas-to-write without replicas", reply: "NOREPLICAS",
			fault: func(t *testing.T, s faultServer) { s.set(t, "min-replicas-to-write", "1") }},
		{name: "a demoted master, still named", reply: "READONLY",
			fault: func(t *testing.T, s faultServer) { s.replicaOfNobody(t) }},
		{name: "a replica cut from its master, serving no stale data", reply: "MASTERDOWN", read: true,
			fault: func(t *testing.T, s faultServer) {
				s.set(t, "replica-serve-stale-data", "no")
				s.replicaOfNobody(t)
			}},
		{name: "a replica loading its master's data", reply: "LOADING", read: true,
			// Slow loading, answering meanwhile: what a large data set does.
			args: []string{"--key-load-delay", "200", "--loading-process-events-interval-bytes", "1024"},
			fault: func(t *testing.T, s faultServer) {
				master := redistest.Start(t, "--repl-diskless-sync-delay", "0")
				mc := master.Client()
				p := mc.Pipeline()
				for i := range 10000 {
					p.Set(t.Context(), "k"+strconv.Itoa(i), i, 0)
				}
				if _, err := p.Exec(t.Context()); err != nil {
					t.Fatal(err)
				}
				host, port, _ := net.SplitHostPort(master.Addr)
				if err := s.admin.ReplicaOf(t.Context(), host, port).Err(); err != nil {
					t.Fatal(err)
				}
				s.waitInfo(t, "persistence", "loading:1")
			}},
		{name: "a cluster node that lost its slots", reply: "CLUSTERDOWN",
			args: []string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"},
			setup: func(t *testing.T, s faultServer) {
				if err := s.admin.ClusterAddSlotsRange(t.Context(), 0, 16383).Err(); err != nil {
					t.Fatal(err)
				}
				deadline := time.Now().Add(10 * time.Second)
				for info, _ := s.admin.ClusterInfo(t.Context()).Result(); !strings.Contains(info, "cluster_state:ok"); info, _ = s.admin.ClusterInfo(t.Context()).Result() {
					if time.Now().After(deadline) {
						t.Fatalf("the cluster is not ok:\n%s", info)
					}
					time.Sleep(20 * time.Millisecond)
				}
			},
			fault: func(t *testing.T, s faultServer) {
				if err := s.admin.ClusterDelSlotsRange(t.Context(), 0, 16383).Err(); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "full under noeviction", reply: "OOM",
			fault: func(t *testing.T, s faultServer) { s.set(t, "maxmemory", "1") }},
		{name: "a failed snapshot under stop-writes-on-bgsave-error", reply: "MISCONF",
			args: []string{"--enable-protected-configs", "yes", "--save", "3600 1"},
			fault: func(t *testing.T, s faultServer) {
				// The snapshots' directory vanishes under the server.
				dir := filepath.Join(t.TempDir(), "gone")
				if err := os.Mkdir(dir, 0o700); err != nil {
					t.Fatal(err)
				}
				s.set(t, "dir", dir)
				if err := os.Remove(dir); err != nil {
					t.Fatal(err)
				}
				if err := s.admin.BgSave(t.Context()).Err(); err != nil {
					t.Fatal(err)
				}
				s.waitInfo(t, "persistence", "rdb_last_bgsave_status:err")
			}},
		{name: "busy in a script", reply: "BUSY",
			fault: func(t *testing.T, s faultServer) {
				s.set(t, "busy-reply-threshold", "10")
				stuck := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
				go func() { _ = stuck.Eval(context.Background(), "while true do end", nil).Err() }()
				t.Cleanup(func() {
					_ = s.admin.ScriptKill(context.Background()).Err()
					_ = stuck.Close()
				})
				deadline := time.Now().Add(10 * time.Second)
				for err := s.admin.Ping(t.Context()).Err(); !hasReplyPrefix(err, "BUSY"); err = s.admin.Ping(t.Context()).Err() {
					if time.Now().After(deadline) {
						t.Fatalf("the server is not busy: %v", err)
					}
					time.Sleep(10 * time.Millisecond)
				}
			}},
		{name: "out of connections",
			// The test's own connection is the one allowed. The server
			// closes a new one after its reply, which the client never
			// reads: a connection error.
			fault: func(t *testing.T, s faultServer) { s.set(t, "maxclients", "1") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := faultServer{Server: redistest.Start(t, tc.args...)}
			s.admin = redis.NewClient(&redis.Options{Addr: s.Addr, PoolSize: 1, MaxRetries: -1})
			t.Cleanup(func() { _ = s.admin.Close() })
			if err := s.admin.Ping(t.Context()).Err(); err != nil {
				t.Fatal(err)
			}
			if tc.setup != nil {
				tc.setup(t, s)
			}
			first := redis.NewClient(&redis.Options{Addr: s.Addr})
			clk := clock.NewFake(t0)
			l := newLedger(t, NewRedisStore(first), clk, nil)
			mustReserve(t, l, "a", "x", 10)
			_ = first.Close()

			tc.fault(t, s)
			// Each command is sent once, so that the store sees the
			// fault's own reply, not a retry's after it passed.
			c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
			t.Cleanup(func() { _ = c.Close() })
			var err error
			if tc.read {
				_, err = NewRedisStore(c).Time(t.Context(), l.cfg.Budget)
			} else {
				replica := newUnopened(t, NewRedisStore(c), clk, func(cfg *Config) { cfg.Budget = l.cfg.Budget })
				_, err = replica.Reserve(t.Context(), "a", "x", 10)
			}
			if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), tc.reply) {
				t.Fatalf("error %v: want ErrUnavailable on the server's %s", err, tc.reply)
			}
		})
	}
}

// TestRedisClusterMovingSlotIsUnavailable: while the budget's slot moves to
// another master and one of an operation's keys has moved before the
// other, the cluster answers TRYAGAIN: the ledger is unavailable for the
// moment, not broken.
func TestRedisClusterMovingSlotIsUnavailable(t *testing.T) {
	ctx := t.Context()
	nodes := redistest.Cluster(t, 3)
	addrs := make([]string, len(nodes))
	for i, n := range nodes {
		addrs[i] = n.Addr
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { _ = cc.Close() })
	store := NewRedisStore(cc)
	l := newLedger(t, store, clock.NewFake(t0), nil)
	mustReserve(t, l, "a", "x", 10)

	base := store.base(l.cfg.Budget)
	slot, err := cc.ClusterKeySlot(ctx, base).Result()
	if err != nil {
		t.Fatal(err)
	}
	src, err := cc.MasterForKey(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	var dst *redis.Client
	for _, n := range nodes {
		if n.Addr != src.Options().Addr {
			dst = n.Client()
			break
		}
	}
	srcID, err1 := src.ClusterMyID(ctx).Result()
	dstID, err2 := dst.ClusterMyID(ctx).Result()
	if err := errors.Join(err1, err2,
		dst.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", srcID).Err(),
		src.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", dstID).Err()); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(dst.Options().Addr)
	if err := src.Migrate(ctx, host, port, store.period(l.cfg.Budget, l.Period()), 0, 5*time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	_, err = l.Reserve(ctx, "a", "x", 10)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "TRYAGAIN") {
		t.Fatalf("error %v: want ErrUnavailable on the cluster's TRYAGAIN", err)
	}
}
