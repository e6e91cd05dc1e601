package redistest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// Server is a redis-server of one test's own, for a test that restarts it
// or configures it otherwise than the shared one. It has no persistence
// unless args ask for it, so a restart brings it back empty, as a Redis
// without persistence (or that lost its volume) comes back.
type Server struct {
	t    testing.TB
	bin  string
	args []string
	dir  string // its working directory, where persistence (if asked) writes
	cmd  *exec.Cmd
	// Addr is host:port; it stays the same across restarts.
	Addr string
}

// Start starts a server with args added to its command line; it is
// killed when the test ends. Without redis-server it skips the test (fails
// it with LINKGATE_REQUIRE_REDIS=1).
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	s := &Server{t: t, bin: need(t, "redis-server"), args: args, dir: t.TempDir(),
		Addr: net.JoinHostPort("127.0.0.1", freePort(t))}
	s.launch()
	t.Cleanup(s.kill)
	return s
}

func (s *Server) launch() {
	s.t.Helper()
	_, port, _ := net.SplitHostPort(s.Addr)
	args := append([]string{"--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no",
		"--daemonize", "no", "--logfile", "", "--dir", s.dir}, s.args...)
	cmd, err := spawn(s.bin, "Ready to accept connections", args...)
	if err != nil {
		s.t.Fatal(err)
	}
	s.cmd = cmd
}

// spawn starts a Redis program in a session of its own and returns once
// its log prints ready; a program that exits first is an error holding
// what its log said.
func spawn(bin, ready string, args ...string) (*exec.Cmd, error) {
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = ownSession()
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(out)
	var log strings.Builder
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), ready) {
			go func() { _, _ = io.Copy(io.Discard, out) }() // ends with the program
			return cmd, nil
		}
	}
	_ = cmd.Wait()
	return nil, fmt.Errorf("%s did not start:\n%s", filepath.Base(bin), log.String())
}

// Restart kills the server (SIGKILL: nothing is saved on the way out) and
// starts it again on the same address and directory: empty, or with what
// the persistence args asked for had written.
func (s *Server) Restart() {
	s.t.Helper()
	s.kill()
	s.launch()
}

func (s *Server) kill() {
	if s.cmd != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		s.cmd = nil
	}
}

// Client returns a client of the server, closed when the test ends.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	s.t.Cleanup(func() { _ = c.Close() })
	return c
}

// String names the server in test output.
func (s *Server) String() string { return fmt.Sprintf("redis-server %s", s.Addr) }
