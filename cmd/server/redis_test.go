package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/internal/redistest"
	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

// redisReplica starts a linkgate on the shared budget in Redis as
// configured by rc, with the simulator sim as its upstream.
func redisReplica(t *testing.T, sim *ahrefssim.Server, budget string, rc redisConfig) (*server, clients, *syncBuffer) {
	t.Helper()
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	cfg := testConfig(t, srv.URL)
	cfg.redisConfig = rc
	cfg.BudgetName, cfg.BudgetUnits = budget, 1_000_000_000
	cfg.TokenKey = "redis-token-key-0123456789abcdef"
	s, logs := startTest(t, cfg)
	return s, dial(t, s.grpcAddr), logs
}

// listAndQuota makes one List on c and reads the quota; the List's charge
// and the pool's used units are returned.
func listAndQuota(t *testing.T, c clients, target string) (charged, used int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	page, err := c.backlinks.ListBacklinks(as(ctx, keyB), &v1.ListBacklinksRequest{Target: target, PageSize: 20})
	if err != nil {
		t.Fatalf("ListBacklinks: %v", err)
	}
	if len(page.GetBacklinks()) != 20 || page.GetNextPageToken() == "" {
		t.Fatalf("ListBacklinks: %d rows, token %q", len(page.GetBacklinks()), page.GetNextPageToken())
	}
	q, err := c.quota.GetQuota(as(ctx, keyAdmin), &v1.GetQuotaRequest{})
	if err != nil {
		t.Fatalf("GetQuota: %v", err)
	}
	if q.GetPool().GetReserved() != 0 {
		t.Errorf("GetQuota: %d units still reserved", q.GetPool().GetReserved())
	}
	return page.GetCost().GetUnitsCharged(), q.GetPool().GetUsed()
}

// TestRedisClusterNamedByAnyNode: a 3-master Redis Cluster, each of three
// replicas naming a different node in LINKGATE_REDIS_ADDR (two of them
// own neither the budget's slot nor the page cache's): List and GetQuota
// work through every one of them, and the ledger, the same on every
// replica, equals what the upstream charged.
func TestRedisClusterNamedByAnyNode(t *testing.T) {
	nodes := redistest.Cluster(t, 3)
	sim := ahrefssim.New(ahrefssim.Config{Keys: []string{upstreamKey}})
	budget := fmt.Sprintf("cluster%d", time.Now().UnixNano())
	var replicas []clients
	for _, n := range nodes {
		_, c, _ := redisReplica(t, sim, budget, redisConfig{RedisAddr: n.Addr})
		replicas = append(replicas, c)
	}
	var charged int64
	for round := range 2 {
		for i, c := range replicas {
			cost, used := listAndQuota(t, c, fmt.Sprintf("sized-%d.example", 1000+10*round+i))
			charged += cost
			if up := sim.KeyUsage(upstreamKey); used != up || charged != up {
				t.Errorf("replica naming %s: ledger %d, charged %d, upstream %d", nodes[i].Addr, used, charged, up)
			}
		}
	}
	// The same pages again are served from the shared page cache, free.
	before := sim.KeyUsage(upstreamKey)
	for i, c := range replicas {
		listAndQuota(t, c, fmt.Sprintf("sized-%d.example", 1000+(i+1)%3))
	}
	if after := sim.KeyUsage(upstreamKey); after != before {
		t.Errorf("pages cached on the cluster were charged again: upstream %d, then %d", before, after)
	}
	owner := clusterOwner(t, nodes[0].Addr, "{"+budget+"}")
	t.Logf("the budget's slot is on %s; nodes %s %s %s", owner, nodes[0].Addr, nodes[1].Addr, nodes[2].Addr)
}

// clusterOwner is the address of the master of key's slot.
func clusterOwner(t *testing.T, addr, key string) string {
	t.Helper()
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{addr}})
	defer c.Close()
	m, err := c.MasterForKey(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return m.Options().Addr
}
