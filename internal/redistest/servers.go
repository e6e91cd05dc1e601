package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// need returns the path of a Redis program, or skips the test without it
// (fails it with LINKGATE_REQUIRE_REDIS=1, as in CI).
func need(t testing.TB, name string) string {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("LINKGATE_REQUIRE_REDIS") == "1" {
			t.Fatalf("LINKGATE_REQUIRE_REDIS=1 but %s is not on PATH (scripts/install-test-deps.sh installs it)", name)
		}
		t.Skipf("skipping: %s is not on PATH", name)
	}
	return bin
}

// freePort is a loopback port nothing listens on now.
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// TLSFiles are the PEM files of a server that serves TLS only.
type TLSFiles struct {
	Cert, Key string // the server's certificate and key
	// CA signs the client certificates the server accepts; with
	// AuthClients it refuses clients without one.
	CA          string
	AuthClients bool
}

// StartTLS starts a server of the test's own (as Start) that serves TLS
// only, on Addr.
func StartTLS(t testing.TB, f TLSFiles, args ...string) *Server {
	t.Helper()
	port := freePort(t)
	auth := "no"
	if f.AuthClients {
		auth = "yes"
	}
	s := &Server{t: t, bin: need(t, "redis-server"), dir: t.TempDir(), Addr: net.JoinHostPort("127.0.0.1", port),
		args: append([]string{"--port", "0", "--tls-port", port, "--tls-cert-file", f.Cert, "--tls-key-file", f.Key,
			"--tls-ca-cert-file", f.CA, "--tls-auth-clients", auth}, args...)}
	s.launch()
	t.Cleanup(s.kill)
	return s
}

// Cluster starts a Redis Cluster of masters (at least 3) on loopback, its
// slots spread evenly by redis-cli --cluster create, and returns them once
// every node reports the cluster ok.
func Cluster(t testing.TB, masters int, args ...string) []*Server {
	t.Helper()
	cli := need(t, "redis-cli")
	nodes := make([]*Server, masters)
	addrs := make([]string, masters)
	for i := range nodes {
		nodes[i] = Start(t, append([]string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-port", freePort(t), "--cluster-node-timeout", "2000"}, args...)...)
		addrs[i] = nodes[i].Addr
	}
	cmd := exec.Command(cli, append(append([]string{"--cluster", "create"}, addrs...), "--cluster-yes")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, n := range nodes {
		c := redis.NewClient(&redis.Options{Addr: n.Addr})
		waitFor(t, n.Addr+" cluster_state:ok", func(ctx context.Context) error {
			return contains(c.ClusterInfo(ctx).Result())("cluster_state:ok")
		})
		_ = c.Close()
	}
	return nodes
}

// Sentinel is a redis-sentinel process of the test's own, killed when the
// test ends.
type Sentinel struct{ Addr string }

// SentinelSet is a master, its replica, and three sentinels watching them
// with a quorum of two, failing over a master unreachable for a second.
type SentinelSet struct {
	MasterName string
	Master     *Server
	Replica    *Server
	Sentinels  []*Sentinel
}

// SentinelAddrs are the sentinels' addresses.
func (s *SentinelSet) SentinelAddrs() []string {
	a := make([]string, len(s.Sentinels))
	for i, n := range s.Sentinels {
		a[i] = n.Addr
	}
	return a
}

// Sentinels starts a SentinelSet and returns it once every sentinel knows
// the replica and the other sentinels, so that a failover can start.
func Sentinels(t testing.TB) *SentinelSet {
	t.Helper()
	bin := need(t, "redis-sentinel")
	s := &SentinelSet{MasterName: "mymaster"}
	s.Master = Start(t)
	host, port, _ := net.SplitHostPort(s.Master.Addr)
	s.Replica = Start(t, "--replicaof", host, port)
	replica := redis.NewClient(&redis.Options{Addr: s.Replica.Addr})
	defer replica.Close()
	waitFor(t, "the replica's link up", func(ctx context.Context) error {
		return contains(replica.Info(ctx, "replication").Result())("master_link_status:up")
	})
	for range 3 {
		s.Sentinels = append(s.Sentinels, startSentinel(t, bin, s.MasterName, host, port))
	}
	for _, n := range s.Sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: n.Addr})
		waitFor(t, "sentinel "+n.Addr+" to know the replica and the other sentinels", func(ctx context.Context) error {
			replicas, err := sc.Replicas(ctx, s.MasterName).Result()
			if err != nil || len(replicas) != 1 || strings.Contains(replicas[0]["flags"], "down") {
				return fmt.Errorf("replicas %v (%v)", replicas, err)
			}
			others, err := sc.Sentinels(ctx, s.MasterName).Result()
			if err != nil || len(others) != 2 {
				return fmt.Errorf("sentinels %v (%v)", others, err)
			}
			return nil
		})
		_ = sc.Close()
	}
	return s
}

// startSentinel starts a sentinel of the master at host:port, which it
// calls name, and waits until its log says it watches it.
func startSentinel(t testing.TB, bin, name, host, port string) *Sentinel {
	t.Helper()
	dir := t.TempDir()
	p := freePort(t)
	conf := filepath.Join(dir, "sentinel.conf") // a sentinel rewrites its file
	text := fmt.Sprintf("bind 127.0.0.1\nport %s\ndir %s\nsentinel monitor %s %s %s 2\n"+
		"sentinel down-after-milliseconds %[3]s 1000\nsentinel failover-timeout %[3]s 5000\n", p, dir, name, host, port)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, err := spawn(bin, "+monitor master", conf, "--daemonize", "no", "--logfile", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return &Sentinel{Addr: net.JoinHostPort("127.0.0.1", p)}
}

// Failover makes the sentinels promote the replica now (SENTINEL FAILOVER)
// and returns the new master's address once the sentinel reports it.
func (s *SentinelSet) Failover(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sc := redis.NewSentinelClient(&redis.Options{Addr: s.Sentinels[0].Addr})
	defer sc.Close()
	if err := sc.Failover(ctx, s.MasterName).Err(); err != nil {
		t.Fatalf("SENTINEL FAILOVER: %v", err)
	}
	for {
		a, err := sc.GetMasterAddrByName(ctx, s.MasterName).Result()
		if err == nil && net.JoinHostPort(a[0], a[1]) == s.Replica.Addr {
			return s.Replica.Addr
		}
		if ctx.Err() != nil {
			t.Fatalf("the sentinel still names %v (%v) as master after a failover", a, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitFor polls check until it returns nil, for up to 30 s.
func waitFor(t testing.TB, what string, check func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		err := check(ctx)
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("waited 30 s for %s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// contains turns a reply and its error into a check that it holds want.
func contains(reply string, err error) func(want string) error {
	return func(want string) error {
		if err == nil && !strings.Contains(reply, want) {
			err = fmt.Errorf("no %q in %q", want, reply)
		}
		return err
	}
}
