package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/internal/logsink"
	"github.com/linkgate/linkgate/internal/redistest"
	"github.com/linkgate/linkgate/quota"
	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

// redisReplica starts a linkgate on the shared budget in Redis as
// configured by rc, with the simulator sim as its upstream.
func redisReplica(t *testing.T, sim *ahrefssim.Server, budget string, rc redisConfig) (*server, clients, *logsink.Buffer) {
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
	// linkgate's user has the least the README's ACL gives it.
	const password = "CLUSTER-PASSWORD-77ab01"
	for _, n := range nodes {
		c := redis.NewClient(&redis.Options{Addr: n.Addr})
		err := c.ACLSetUser(context.Background(), "linkgate", "on", ">"+password, "~linkgate:*", "+@read", "+@write",
			"+@scripting", "+@connection", "+info", "+time", "+cluster|slots").Err()
		_ = c.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	sim := ahrefssim.New(ahrefssim.Config{Keys: []string{upstreamKey}})
	budget := fmt.Sprintf("cluster%d", time.Now().UnixNano())
	var replicas []clients
	for _, n := range nodes {
		rc := defaultRedisConfig()
		rc.RedisAddr, rc.RedisUsername, rc.RedisPassword = n.Addr, "linkgate", password
		_, c, logs := redisReplica(t, sim, budget, rc)
		replicas = append(replicas, c)
		t.Cleanup(func() {
			if strings.Contains(logs.String(), "cannot watch Redis") || !strings.Contains(logs.String(), `"mode":"cluster"`) {
				t.Errorf("replica naming %s:\n%s", n.Addr, logs)
			}
		})
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
	// The ledger's functions were loaded on every master, so a slot that
	// moves finds them where it lands.
	for _, n := range nodes {
		c := redis.NewClient(&redis.Options{Addr: n.Addr})
		libs, err := c.FunctionList(context.Background(), redis.FunctionListQuery{}).Result()
		_ = c.Close()
		if err != nil || len(libs) != 1 || !strings.HasPrefix(libs[0].Name, "linkgate_quota_") {
			t.Errorf("functions on %s: %v %v", n.Addr, libs, err)
		}
	}
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

// TestRedisSentinelFailoverUnderLoad: two replicas reach Redis through
// three sentinels; eight callers spend the budget with Lists while the
// sentinels fail the master over to its replica (SENTINEL FAILOVER). Calls
// keep being served after the switch (UNAVAILABLE while it happens), the
// upstream never charges more than the budget plus the pages in flight,
// each replica reconciles as soon as it finds the new master (the
// periodic reconciliation is an hour away), and afterwards the ledger is
// within the pages in flight of what the upstream charged.
func TestRedisSentinelFailoverUnderLoad(t *testing.T) {
	set := redistest.Sentinels(t)
	sim := ahrefssim.New(ahrefssim.Config{Keys: []string{upstreamKey}, Latency: 5 * time.Millisecond})
	const budget, workers = 20_000, 8
	name := fmt.Sprintf("sentinel%d", time.Now().UnixNano())
	rc := defaultRedisConfig()
	rc.RedisAddr = set.Sentinels[0].Addr
	if _, _, err := rc.connect(context.Background()); err == nil || !strings.Contains(err.Error(), "LINKGATE_REDIS_MASTER_NAME") {
		t.Errorf("a sentinel named without its master: %v, want an error naming LINKGATE_REDIS_MASTER_NAME", err)
	}
	rc.RedisAddr, rc.RedisMasterName = strings.Join(set.SentinelAddrs(), ","), set.MasterName
	var replicas []clients
	var logs []*logsink.Buffer
	for range 2 {
		srv := httptest.NewServer(sim)
		t.Cleanup(srv.Close)
		cfg := testConfig(t, srv.URL)
		cfg.redisConfig = rc
		cfg.BudgetName, cfg.BudgetUnits = name, budget
		cfg.TokenKey = "redis-token-key-0123456789abcdef"
		// 50 requests a second through the limiter in Redis, and no
		// reconciliation but the one a failover starts.
		cfg.UpstreamRPM, cfg.ReconcileEvery = 3000, time.Hour
		s, l := startTest(t, cfg)
		replicas, logs = append(replicas, dial(t, s.grpcAddr)), append(logs, l)
	}

	var (
		switched   atomic.Bool
		served     [2]atomic.Int64 // before and after the switch
		exhausted  atomic.Int64
		maxCost    atomic.Int64
		mu         sync.Mutex
		unexpected []error
		codesSeen  = map[codes.Code]int{}
	)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var n atomic.Int64
	for w := range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				after := switched.Load()
				cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
				page, err := replicas[w%2].backlinks.ListBacklinks(as(cctx, keyB),
					&v1.ListBacklinksRequest{Target: fmt.Sprintf("sized-%d.example", 1000+n.Add(1)), PageSize: 10})
				ccancel()
				if err == nil {
					served[b2i(after)].Add(1)
					for c := maxCost.Load(); page.GetCost().GetUnitsCharged() > c && !maxCost.CompareAndSwap(c, page.GetCost().GetUnitsCharged()); c = maxCost.Load() {
					}
					continue
				}
				code := status.Code(err)
				mu.Lock()
				codesSeen[code]++
				switch {
				case code == codes.ResourceExhausted:
					exhausted.Add(1)
				case code == codes.Unavailable:
				case ctx.Err() == nil:
					unexpected = append(unexpected, err)
				}
				mu.Unlock()
				if code != codes.OK {
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
	for served[0].Load() < 20 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if sim.KeyUsage(upstreamKey) > budget/2 {
		t.Fatalf("half the budget was spent before the failover: the load is too fast for this test")
	}
	newMaster := set.Failover(t)
	switched.Store(true)
	t.Logf("failover to %s after %d pages", newMaster, served[0].Load())
	switchedAt, reconciledAfter := time.Now(), time.Duration(0)
	for (exhausted.Load() < 50 || !reconciled(logs)) && ctx.Err() == nil {
		if reconciledAfter == 0 && reconciled(logs) {
			reconciledAfter = time.Since(switchedAt)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	wg.Wait()

	mu.Lock()
	t.Logf("served %d before the switch, %d after; errors by code %v; largest page %d units; reconciled %s after the sentinel named the new master",
		served[0].Load(), served[1].Load(), codesSeen, maxCost.Load(), reconciledAfter)
	for _, err := range unexpected {
		t.Errorf("a call failed otherwise than UNAVAILABLE or RESOURCE_EXHAUSTED: %v", err)
	}
	for i, l := range logs {
		for line := range strings.Lines(l.String()) {
			if strings.Contains(line, `"level":"ERROR"`) || strings.Contains(line, "reconcil") || strings.Contains(line, "another Redis") {
				t.Logf("replica %d: %s", i, line)
			}
		}
	}
	mu.Unlock()
	if served[1].Load() == 0 {
		t.Errorf("no call was served after the failover")
	}
	for i, l := range logs {
		if !strings.Contains(l.String(), "another Redis server holds the budget now") {
			t.Errorf("replica %d did not notice the failover", i)
		}
	}
	if !reconciled(logs) {
		t.Fatalf("no reconciliation after the failover")
	}
	inFlight := workers * maxCost.Load()
	up := sim.KeyUsage(upstreamKey)
	if up > budget+inFlight {
		t.Errorf("the upstream charged %d of a budget of %d, more than the %d units in flight", up, budget, inFlight)
	}
	used := ledgerUsed(t, set, name, budget)
	t.Logf("upstream %d, ledger %d, budget %d, in flight at most %d", up, used, budget, inFlight)
	if used < up-inFlight || used > up+inFlight {
		t.Errorf("after the failover's reconciliation the ledger holds %d, the upstream %d: more than the %d units in flight apart", used, up, inFlight)
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// reconciled reports whether a replica logged a reconciliation (a line
// with its drift) after it noticed another Redis server.
func reconciled(logs []*logsink.Buffer) bool {
	for _, l := range logs {
		_, after, switched := strings.Cut(l.String(), "another Redis server holds the budget now")
		if switched && strings.Contains(after, `"drift":`) {
			return true
		}
	}
	return false
}

// ledgerUsed reads the pool's used units from the current master once no
// reservation is left open.
func ledgerUsed(t *testing.T, set *redistest.SentinelSet, budget string, limit int64) int64 {
	t.Helper()
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: set.MasterName, SentinelAddrs: set.SentinelAddrs()})
	defer c.Close()
	ledger, err := quota.New(quota.NewRedisStore(c), quota.Config{Budget: budget, PoolLimit: limit, ResetDay: 1, Lease: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		rep, err := ledger.AllUsage(context.Background())
		if err == nil && (rep.Pool.Reserved == 0 || time.Now().After(deadline)) {
			return rep.Pool.Used
		}
		if err != nil && time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRedisPasswordAndTLS: linkgate reaches a Redis that wants an ACL user
// and its password (read from a file), and one that serves only TLS and
// asks for a client certificate, signed by a throwaway CA; the password is
// never logged. A wrong password or a missing certificate stops the start
// with an error that names the setting and holds no secret.
func TestRedisPasswordAndTLS(t *testing.T) {
	const password = "REDIS-PASSWORD-4c1e9a77d0"
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pwFile, wrongFile := write("password", password+"\n"), write("wrong", "not-the-password\n")
	ca := newCA(t, "redis-test-ca")
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", ca.cert.Raw)
	pair := func(name string, server bool) (cert, key string) {
		c := ca.issue(t, name, server)
		der, err := x509.MarshalECPrivateKey(c.PrivateKey.(*ecdsa.PrivateKey))
		if err != nil {
			t.Fatal(err)
		}
		cert, key = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
		writePEM(t, cert, "CERTIFICATE", c.Certificate[0])
		writePEM(t, key, "EC PRIVATE KEY", der)
		return cert, key
	}
	serverCert, serverKey := pair("redis", true)
	clientCert, clientKey := pair("linkgate", false)
	caFile := filepath.Join(dir, "ca.pem")

	// The least the README's ACL gives linkgate.
	acl := []string{"--user", "default", "off", "--user", "linkgate", "on", ">" + password, "~linkgate:*",
		"+@read", "+@write", "+@scripting", "+@connection", "+info", "+time"}
	plain := redistest.Start(t, acl...)
	withTLS := redistest.StartTLS(t, redistest.TLSFiles{Cert: serverCert, Key: serverKey, CA: caFile, AuthClients: true}, acl...)

	for _, tc := range []struct {
		name    string
		env     map[string]string
		startOK string // empty: starts; else the start error holds it
	}{
		{"ACL user", map[string]string{"LINKGATE_REDIS_ADDR": plain.Addr, "LINKGATE_REDIS_MODE": "single",
			"LINKGATE_REDIS_USERNAME": "linkgate", "LINKGATE_REDIS_PASSWORD_FILE": pwFile}, ""},
		{"ACL user over TLS with a client certificate", map[string]string{"LINKGATE_REDIS_ADDR": withTLS.Addr,
			"LINKGATE_REDIS_USERNAME": "linkgate", "LINKGATE_REDIS_PASSWORD_FILE": pwFile,
			"LINKGATE_REDIS_TLS_CA_FILE": caFile, "LINKGATE_REDIS_TLS_CERT_FILE": clientCert,
			"LINKGATE_REDIS_TLS_KEY_FILE": clientKey}, ""},
		{"wrong password", map[string]string{"LINKGATE_REDIS_ADDR": plain.Addr, "LINKGATE_REDIS_USERNAME": "linkgate",
			"LINKGATE_REDIS_PASSWORD_FILE": wrongFile}, "WRONGPASS"},
		{"no client certificate", map[string]string{"LINKGATE_REDIS_ADDR": withTLS.Addr,
			"LINKGATE_REDIS_USERNAME": "linkgate", "LINKGATE_REDIS_PASSWORD_FILE": pwFile,
			"LINKGATE_REDIS_TLS_CA_FILE": caFile}, "LINKGATE_REDIS_ADDR"},
		{"TLS not asked for", map[string]string{"LINKGATE_REDIS_ADDR": withTLS.Addr,
			"LINKGATE_REDIS_USERNAME": "linkgate", "LINKGATE_REDIS_PASSWORD_FILE": pwFile}, "LINKGATE_REDIS_ADDR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			loaded, err := loadConfig(nil, func(k string) string { return tc.env[k] })
			if err != nil {
				t.Fatal(err)
			}
			sim := ahrefssim.New(ahrefssim.Config{Keys: []string{upstreamKey}})
			srv := httptest.NewServer(sim)
			defer srv.Close()
			cfg := testConfig(t, srv.URL)
			cfg.redisConfig = loaded.redisConfig
			cfg.BudgetName = fmt.Sprintf("secure%d", time.Now().UnixNano())
			cfg.TokenKey = "redis-token-key-0123456789abcdef"
			if tc.startOK != "" {
				logs := &logsink.Buffer{}
				s, err := start(t.Context(), cfg, newLogger(cfg, logs))
				if err == nil {
					_ = s.shutdown()
					t.Fatal("started")
				}
				t.Logf("start: %v", err)
				if !strings.Contains(err.Error(), tc.startOK) || strings.Contains(err.Error()+logs.String(), password) {
					t.Fatalf("start error %q: want %q in it and no password in it or the log", err, tc.startOK)
				}
				return
			}
			s, logs := startTest(t, cfg)
			c := dial(t, s.grpcAddr)
			cost, used := listAndQuota(t, c, "sized-700.example")
			if up := sim.KeyUsage(upstreamKey); cost == 0 || used != up || cost != up {
				t.Errorf("ledger %d, charged %d, upstream %d", used, cost, up)
			}
			// The page cache works under the ACL (its errors are misses).
			if again, _ := listAndQuota(t, c, "sized-700.example"); again != 0 || sim.KeyUsage(upstreamKey) != cost {
				t.Errorf("the same page again was charged %d; upstream %d", again, sim.KeyUsage(upstreamKey))
			}
			time.Sleep(2 * redisWatchEvery)
			if strings.Contains(logs.String(), "cannot watch Redis") {
				t.Errorf("the failover watch cannot work under this ACL:\n%s", logs)
			}
			if strings.Contains(logs.String(), password) || !strings.Contains(logs.String(), `"password":"[redacted]"`) {
				t.Errorf("the Redis password is in the log, or the log does not say it is set:\n%s", logs)
			}
		})
	}
}

// TestRedisSettings: the Redis variables are read (a password from its
// file, without the line end), and inconsistent ones are refused at start
// with the variable's name.
func TestRedisSettings(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte(" sp ace\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"LINKGATE_REDIS_ADDR":          "10.0.0.1:26379, 10.0.0.2:26379",
		"LINKGATE_REDIS_MASTER_NAME":   "ledger",
		"LINKGATE_REDIS_USERNAME":      "linkgate",
		"LINKGATE_REDIS_PASSWORD_FILE": pw,
		"LINKGATE_REDIS_TLS":           "true",
	}
	c, err := loadConfig(nil, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if got := c.addrs(); len(got) != 2 || got[1] != "10.0.0.2:26379" || c.RedisMasterName != "ledger" ||
		c.RedisUsername != "linkgate" || c.RedisPassword != " sp ace" || !c.tls() {
		t.Fatalf("redis config %+v", c.redisConfig)
	}
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"LINKGATE_REDIS_MODE": "cluster"}, "LINKGATE_REDIS_ADDR"},
		{map[string]string{"LINKGATE_REDIS_ADDR": "r:6379", "LINKGATE_REDIS_MODE": "ring"}, "LINKGATE_REDIS_MODE"},
		{map[string]string{"LINKGATE_REDIS_ADDR": "r:6379", "LINKGATE_REDIS_MODE": "sentinel"}, "LINKGATE_REDIS_MASTER_NAME"},
		{map[string]string{"LINKGATE_REDIS_ADDR": "r:6379", "LINKGATE_REDIS_MODE": "cluster", "LINKGATE_REDIS_MASTER_NAME": "m"}, "LINKGATE_REDIS_MASTER_NAME"},
		{map[string]string{"LINKGATE_REDIS_ADDR": "a:1,b:2", "LINKGATE_REDIS_MODE": "single"}, "LINKGATE_REDIS_ADDR"},
		{map[string]string{"LINKGATE_REDIS_ADDR": "r"}, "LINKGATE_REDIS_ADDR"},
		{map[string]string{"LINKGATE_REDIS_ADDR": "r:6379", "LINKGATE_REDIS_TLS_CERT_FILE": "c.pem"}, "LINKGATE_REDIS_TLS_KEY_FILE"},
		{map[string]string{"LINKGATE_REDIS_ADDR": "r:6379", "LINKGATE_REDIS_PASSWORD_FILE": "/nonexistent"}, "LINKGATE_REDIS_PASSWORD_FILE"},
		{map[string]string{"LINKGATE_REDIS_ADDR": "r:6379", "LINKGATE_REDIS_TLS": "maybe"}, "LINKGATE_REDIS_TLS"},
	} {
		_, err := loadConfig(nil, func(k string) string { return tc.env[k] })
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error naming %s", tc.env, err, tc.want)
		}
	}
}

// TestRedisRestartReconciles: the Redis of a replica restarts empty on its
// address (a new run_id): the replica reconciles at once, and the pool's
// used units are the upstream's again, though the next periodic
// reconciliation is an hour away.
func TestRedisRestartReconciles(t *testing.T) {
	rs := redistest.Start(t)
	sim := ahrefssim.New(ahrefssim.Config{Keys: []string{upstreamKey}})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	cfg := testConfig(t, srv.URL)
	cfg.RedisAddr, cfg.BudgetName, cfg.ReconcileEvery = rs.Addr, "restart", time.Hour
	cfg.TokenKey = "redis-token-key-0123456789abcdef"
	s, logs := startTest(t, cfg)
	c := dial(t, s.grpcAddr)
	cost, _ := listAndQuota(t, c, "sized-800.example")

	rs.Restart()
	deadline := time.Now().Add(30 * time.Second)
	for !reconciled([]*logsink.Buffer{logs}) {
		if time.Now().After(deadline) {
			t.Fatalf("no reconciliation within 30 s of the restart:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	q, err := c.quota.GetQuota(as(context.Background(), keyAdmin), &v1.GetQuotaRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if up := sim.KeyUsage(upstreamKey); q.GetPool().GetUsed() != up || up != cost {
		t.Errorf("after the restart: ledger %d, upstream %d, charged %d", q.GetPool().GetUsed(), up, cost)
	}
}
