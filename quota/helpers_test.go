package quota

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testRedis.stop()
	// Checked after the Redis server is gone, so its log drain has ended.
	if err := goleak.Find(); code == 0 && err != nil {
		fmt.Fprintln(os.Stderr, "goleak:", err)
		code = 1
	}
	os.Exit(code)
}

// fakeClock is the injected clock of every test: time moves only when a test
// says so.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// uniqueBudget keeps tests that share one Redis server apart.
func uniqueBudget() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "t" + hex.EncodeToString(b[:])
}

// redisServer is one throwaway redis-server for the whole test binary, or
// the server named by LINKGATE_TEST_REDIS_ADDR.
type redisServer struct {
	once sync.Once
	addr string
	cmd  *exec.Cmd
	err  error
}

var testRedis redisServer

func (s *redisServer) start() {
	if addr := os.Getenv("LINKGATE_TEST_REDIS_ADDR"); addr != "" {
		s.addr = addr
		return
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		s.err = fmt.Errorf("redis-server is not on PATH (install redis-server, or set LINKGATE_TEST_REDIS_ADDR)")
		return
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.err = err
		return
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	s.cmd = exec.Command(bin, "--bind", "127.0.0.1", "--port", fmt.Sprint(port),
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "")
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		s.err = err
		return
	}
	if err := s.cmd.Start(); err != nil {
		s.err = err
		return
	}
	// Redis says when it accepts connections: read its log rather than poll.
	sc := bufio.NewScanner(out)
	var log strings.Builder
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), "Ready to accept connections") {
			s.addr = fmt.Sprintf("127.0.0.1:%d", port)
			go func() { _, _ = io.Copy(io.Discard, out) }() // ends when the server does
			return
		}
	}
	_ = s.cmd.Wait()
	s.cmd = nil
	s.err = fmt.Errorf("redis-server did not start:\n%s", log.String())
}

func (s *redisServer) stop() {
	if s.cmd != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
}

// redisAddr returns the test server's address, or skips (fails when
// LINKGATE_REQUIRE_REDIS=1, as in CI) if there is none.
func redisAddr(t testing.TB) string {
	t.Helper()
	testRedis.once.Do(testRedis.start)
	if testRedis.err != nil {
		if os.Getenv("LINKGATE_REQUIRE_REDIS") == "1" {
			t.Fatalf("LINKGATE_REQUIRE_REDIS=1 but no Redis: %v", testRedis.err)
		}
		t.Skipf("skipping redis store: %v", testRedis.err)
	}
	return testRedis.addr
}

func redisClient(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: redisAddr(t)})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// storeKind opens fresh stores of one kind; shared opens a second handle on
// the same state where the kind allows it (a replica, or a restart).
type storeKind struct {
	name string
	open func(t testing.TB) Store
}

func storeKinds() []storeKind {
	return []storeKind{
		{"memory", func(testing.TB) Store { return NewMemoryStore() }},
		{"bolt", func(t testing.TB) Store {
			s, err := OpenBoltStore(filepath.Join(t.TempDir(), "ledger.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return s
		}},
		{"redis", func(t testing.TB) Store { return NewRedisStore(redisClient(t)) }},
	}
}

var t0 = time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)

func newLedger(t testing.TB, s Store, clk *fakeClock, mod func(*Config)) *Ledger {
	t.Helper()
	cfg := Config{Budget: uniqueBudget(), PoolLimit: 1000, ResetDay: 15, Lease: time.Minute, Clock: clk.Now}
	if mod != nil {
		mod(&cfg)
	}
	l, err := New(s, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func mustReserve(t testing.TB, l *Ledger, tenant, label string, units int64) Reservation {
	t.Helper()
	r, err := l.Reserve(context.Background(), tenant, label, units)
	if err != nil {
		t.Fatalf("Reserve(%s, %d): %v", tenant, units, err)
	}
	return r
}

func mustSettle(t testing.TB, l *Ledger, r Reservation, actual int64) {
	t.Helper()
	if err := l.Settle(context.Background(), r, actual); err != nil {
		t.Fatalf("Settle(%d): %v", actual, err)
	}
}

func mustReport(t testing.TB, l *Ledger) Report {
	t.Helper()
	rep, err := l.AllUsage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func checkPool(t testing.TB, l *Ledger, used, reserved int64) {
	t.Helper()
	rep := mustReport(t, l)
	if rep.Pool.Used != used || rep.Pool.Reserved != reserved {
		t.Fatalf("pool used/reserved = %d/%d, want %d/%d", rep.Pool.Used, rep.Pool.Reserved, used, reserved)
	}
}
