package quota

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/clock"
)

// boltLedger opens the ledger in the file at path; first: the file is new,
// and the period is opened as a first start's reconciliation opens it.
func boltLedger(t testing.TB, path string, clk *clock.Fake, first bool) (*BoltStore, *Ledger) {
	t.Helper()
	s, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	l, err := New(s, Config{Budget: "crash", PoolLimit: 1000, ResetDay: 15, Lease: time.Minute,
		Tenants: map[string]int64{"a": 500}, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	if first {
		openPeriod(t, l)
	}
	return s, l
}

func TestBoltRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	clk := clock.NewFake(t0)
	s, l := boltLedger(t, path, clk, true)
	mustSettle(t, l, mustReserve(t, l, "a", "backlinks", 30), 25)
	open := mustReserve(t, l, "a", "backlinks", 10)
	limit := int64(40)
	if err := l.SetTenantLimit(ctx, "a", &limit); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Ping(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Ping on a closed store: %v", err)
	}
	if _, err := l.Reserve(ctx, "a", "x", 1); !errors.Is(err, ErrUnavailable) ||
		!strings.Contains(err.Error(), "cannot be reached") {
		t.Fatalf("Reserve on a closed store: %v", err)
	}

	s2, l2 := boltLedger(t, path, clk, false)
	defer s2.Close()
	mustSettle(t, l2, open, 10) // the reservation made before the restart
	u, err := l2.Usage(ctx, "a")
	if err != nil || u.Pool.Used != 35 || u.Tenant.Limit != 40 || u.Tenant.Remaining != 5 {
		t.Fatalf("after restart: %+v %v", u, err)
	}
}

const crashEnv = "LINKGATE_QUOTA_CRASH_DB"

// TestBoltCrashChild is the child half of TestBoltKill9: it settles a few
// reservations, makes one more, reports it, and waits to be killed.
func TestBoltCrashChild(t *testing.T) {
	path := os.Getenv(crashEnv)
	if path == "" {
		t.Skip("child process of TestBoltKill9")
	}
	_, l := boltLedger(t, path, clock.NewFake(t0), true)
	for range 5 {
		mustSettle(t, l, mustReserve(t, l, "a", "backlinks", 10), 7)
	}
	r := mustReserve(t, l, "a", "backlinks", 20)
	b, _ := json.Marshal(r)
	fmt.Printf("RESERVED %s\n", b)
	_, _ = io.Copy(io.Discard, os.Stdin) // the parent never writes; it kills
}

// TestBoltKill9 kills a process with SIGKILL between a reserve and its
// settle, then reopens the file: every settled unit is there, and the
// orphaned reservation is charged in full once its lease has run out.
func TestBoltKill9(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestBoltCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var r Reservation
	var lines []string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if js, ok := strings.CutPrefix(sc.Text(), "RESERVED "); ok {
			if err := json.Unmarshal([]byte(js), &r); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL: no deferred code runs
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if r.ID == "" {
		t.Fatalf("child never reserved; output:\n%s", strings.Join(lines, "\n"))
	}

	clk := clock.NewFake(t0)
	s, l := boltLedger(t, path, clk, false)
	defer s.Close()
	checkPool(t, l, 35, 20)
	clk.Advance(time.Minute)
	checkPool(t, l, 55, 0)
	mustSettle(t, l, r, 5) // the holder coming back late changes nothing
	rep := mustReport(t, l)
	if rep.Pool.Used != 55 || rep.Expired != 1 || rep.Settled != 5 || rep.SpendByTenant["a"] != 55 {
		t.Fatalf("report %+v", rep)
	}
}

// TestBoltLockedByAnotherProcess: a file another process holds is refused
// as locked, naming that process where the system tells (Linux), not as a
// store that "cannot be reached … timeout".
func TestBoltLockedByAnotherProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestBoltCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	sc := bufio.NewScanner(out)
	for sc.Scan() && !strings.HasPrefix(sc.Text(), "RESERVED ") {
	}

	_, err = OpenBoltStore(path, WithBoltLockTimeout(50*time.Millisecond))
	if !errors.Is(err, ErrLocked) || errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), path) {
		t.Fatalf("open a file another process holds: %v", err)
	}
	if runtime.GOOS == "linux" && !strings.Contains(err.Error(), fmt.Sprintf("(pid %d: %s", cmd.Process.Pid, os.Args[0])) {
		t.Errorf("the error does not name the holder, pid %d: %v", cmd.Process.Pid, err)
	}
	t.Log(err)
}
