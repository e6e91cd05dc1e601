// Package redistest gives tests a real Redis: one throwaway redis-server
// per test binary on a free loopback port when redis-server is on PATH, or
// the server named by LINKGATE_TEST_REDIS_ADDR. Without either, tests skip,
// or fail when LINKGATE_REQUIRE_REDIS=1 (as in CI).
package redistest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

var server struct {
	once sync.Once
	addr string
	cmd  *exec.Cmd
	err  error
}

func start() {
	if addr := os.Getenv("LINKGATE_TEST_REDIS_ADDR"); addr != "" {
		server.addr = addr
		return
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		server.err = fmt.Errorf("redis-server is not on PATH (install redis-server, or set LINKGATE_TEST_REDIS_ADDR)")
		return
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		server.err = err
		return
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	cmd, err := spawn(bin, "Ready to accept connections", "--bind", "127.0.0.1", "--port", fmt.Sprint(port),
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "")
	if err != nil {
		server.err = err
		return
	}
	server.addr, server.cmd = fmt.Sprintf("127.0.0.1:%d", port), cmd
}

// Addr returns the test server's address, or skips the test (fails it
// with LINKGATE_REQUIRE_REDIS=1) when there is none.
func Addr(t testing.TB) string {
	t.Helper()
	server.once.Do(start)
	if server.err != nil {
		if os.Getenv("LINKGATE_REQUIRE_REDIS") == "1" {
			t.Fatalf("LINKGATE_REQUIRE_REDIS=1 but no Redis: %v", server.err)
		}
		t.Skipf("skipping: %v", server.err)
	}
	return server.addr
}

// Client returns a client of the test server, closed when the test ends.
func Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: Addr(t)})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Main runs a package's tests, then stops the server they shared, and
// fails the run on a goroutine a test left behind (the one that drains
// the server's log lives until the stop).
func Main(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/linkgate/linkgate/internal/redistest.spawn.func1"),
		goleak.Cleanup(func(code int) {
			stop()
			os.Exit(code)
		}))
}

// stop kills the server this binary started, if any.
func stop() {
	if server.cmd != nil {
		_ = server.cmd.Process.Kill()
		_ = server.cmd.Wait()
	}
}
