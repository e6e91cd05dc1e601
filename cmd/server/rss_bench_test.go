package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
)

// The memory benchmarks run linkgate as it ships: the server binary in a
// process of its own, with its embedded-default bolt ledger, in front of
// the simulator in another process (so that the simulator's memory is not
// counted), and read the server's resident memory from /proc.

// BenchmarkServerPeakRSS streams 10,000 and then 1,000,000 rows of
// StreamBacklinks (default selection, 1,000-row pages) from a fresh server
// each, and reports the server's peak resident memory (VmHWM) after each:
// memory must stay flat whatever the length of a stream, so the ratio
// should be close to 1.
func BenchmarkServerPeakRSS(b *testing.B) {
	bins := buildBinaries(b)
	for range b.N {
		peak := map[int]float64{}
		for _, rows := range []int{10_000, 1_000_000} {
			s := startProcesses(b, bins, 8)
			conn := s.dial(b)
			start := time.Now()
			n := streamRows(b, v1.NewBacklinksServiceClient(conn), rows)
			elapsed := time.Since(start)
			conn.Close()
			if n != rows {
				b.Fatalf("streamed %d rows, want %d", n, rows)
			}
			peak[rows] = float64(s.status(b, "VmHWM")) / (1 << 20)
			b.Logf("%d rows in %s: peak RSS %.1f MiB", rows, elapsed.Round(time.Millisecond), peak[rows])
			s.stop(b)
		}
		b.ReportMetric(peak[10_000], "MiB-peak-10k")
		b.ReportMetric(peak[1_000_000], "MiB-peak-1M")
		b.ReportMetric(peak[1_000_000]/peak[10_000], "ratio-1M/10k")
	}
}

// BenchmarkServerRSSPerStream opens N concurrent StreamBacklinks that read
// one message and then stall, as slow clients do, waits until the server's
// memory settles (gRPC flow control stops every stream's sender), and
// reports the resident memory they added, per stream. Each stream reads a
// target of its own, so that none shares a cached page. N is 100 and 1,000;
// LINKGATE_BENCH_STREAMS (comma-separated) chooses others.
func BenchmarkServerRSSPerStream(b *testing.B) {
	bins := buildBinaries(b)
	counts := []int{100, 1000}
	if env := os.Getenv("LINKGATE_BENCH_STREAMS"); env != "" {
		counts = nil
		for _, f := range strings.Split(env, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 {
				b.Fatalf("LINKGATE_BENCH_STREAMS: %q is not a positive count", f)
			}
			counts = append(counts, n)
		}
	}
	for _, n := range counts {
		b.Run(fmt.Sprintf("streams=%d", n), func(b *testing.B) {
			for range b.N {
				perStream, total := stalledStreams(b, bins, n)
				b.ReportMetric(perStream, "MiB/stream")
				b.ReportMetric(total, "MiB-RSS")
			}
		})
	}
}

// stalledStreams returns the resident memory per stream of n stalled
// streams and the server's resident memory with them open.
func stalledStreams(b *testing.B, bins binaries, n int) (perStream, total float64) {
	s := startProcesses(b, bins, n+1)
	defer s.stop(b)
	// One short stream first, so that the baseline includes what any stream
	// initialises once (connections, pools, the ledger's pages).
	warm := s.dial(b)
	streamRows(b, v1.NewBacklinksServiceClient(warm), 2000)
	warm.Close()
	base := s.status(b, "VmRSS")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Streams spread over connections as a fleet of clients would open them.
	const perConn = 100
	var conns []*grpc.ClientConn
	defer func() {
		cancel()
		for _, c := range conns {
			c.Close()
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		if i%perConn == 0 {
			conns = append(conns, s.dial(b))
		}
		client := v1.NewBacklinksServiceClient(conns[len(conns)-1])
		// A target of its own per stream: no page is shared through the
		// page cache.
		target := fmt.Sprintf("sized-%d.example", 1_000_000+i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := client.StreamBacklinks(ctx, &v1.StreamBacklinksRequest{Target: target, PageSize: 1000})
			if err == nil {
				_, err = st.Recv()
			}
			errs <- err
			<-ctx.Done() // stall: never read again
		}()
	}
	// A server short of memory crawls under GOMEMLIMIT rather than
	// failing; give the streams a bound to start in.
	timeout := time.After(2 * time.Minute)
	for started := 0; started < n; started++ {
		select {
		case err := <-errs:
			if err != nil {
				b.Fatalf("%d of %d streams started, then: %v (RSS %.1f MiB under GOMEMLIMIT=512MiB)",
					started, n, err, float64(s.status(b, "VmRSS"))/(1<<20))
			}
		case <-timeout:
			b.Fatalf("only %d of %d streams started in 2 minutes (RSS %.1f MiB under GOMEMLIMIT=512MiB)",
				started, n, float64(s.status(b, "VmRSS"))/(1<<20))
		}
	}
	// Wait for the senders to stop: the resident memory stops growing.
	rss := s.status(b, "VmRSS")
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); {
		time.Sleep(2 * time.Second)
		next := s.status(b, "VmRSS")
		if next < rss+rss/100 {
			rss = max(rss, next)
			break
		}
		rss = next
	}
	b.Logf("%d stalled streams: RSS %.1f MiB over a %.1f MiB baseline, peak %.1f MiB",
		n, float64(rss)/(1<<20), float64(base)/(1<<20), float64(s.status(b, "VmHWM"))/(1<<20))
	cancel()
	wg.Wait()
	return float64(rss-base) / float64(n) / (1 << 20), float64(rss) / (1 << 20)
}

// streamRows reads a whole StreamBacklinks of sized-N.example.
func streamRows(b *testing.B, c v1.BacklinksServiceClient, rows int) int {
	st, err := c.StreamBacklinks(context.Background(), &v1.StreamBacklinksRequest{
		Target: fmt.Sprintf("sized-%d.example", rows), PageSize: 1000})
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for {
		m, err := st.Recv()
		if err == io.EOF {
			return n
		}
		if err != nil {
			b.Fatalf("after %d rows: %v", n, err)
		}
		n += len(m.GetBacklinks())
	}
}

type binaries struct{ server, sim string }

// buildBinaries builds the server and the simulator as they ship.
func buildBinaries(b *testing.B) binaries {
	b.Helper()
	if _, err := os.Stat("/proc/self/status"); err != nil {
		b.Skip("needs /proc to read a process's memory")
	}
	dir := b.TempDir()
	bins := binaries{server: filepath.Join(dir, "linkgate"), sim: filepath.Join(dir, "ahrefssim")}
	for bin, pkg := range map[string]string{bins.server: "../server", bins.sim: "../ahrefssim"} {
		cmd := exec.Command("go", "build", "-o", bin, pkg)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	return bins
}

type processes struct {
	server, sim *exec.Cmd
	grpcAddr    string
}

// startServer starts the simulator and linkgate on free loopback ports,
// with a budget, a rate and a stream limit that do not get in the way, and
// waits until linkgate answers.
func startProcesses(b *testing.B, bins binaries, maxStreams int) *processes {
	b.Helper()
	simAddr, grpcAddr, httpAddr := freeAddr(b), freeAddr(b), freeAddr(b)
	p := &processes{grpcAddr: grpcAddr}
	p.sim = exec.Command(bins.sim, "-addr", simAddr, "-key", "bench-key", "-cache-ttl", "-1s")
	p.server = exec.Command(bins.server)
	p.server.Env = append(os.Environ(),
		"LINKGATE_GRPC_ADDR="+grpcAddr, "LINKGATE_HTTP_ADDR="+httpAddr,
		"LINKGATE_UPSTREAM_URL=http://"+simAddr, "LINKGATE_UPSTREAM_KEY=bench-key",
		"LINKGATE_UPSTREAM_RPM=10000000", "LINKGATE_BUDGET_UNITS=1000000000000",
		"LINKGATE_DATA_DIR="+b.TempDir(), "LINKGATE_RECONCILE_EVERY=0",
		// Both stream bounds lifted: what N streams cost is measured, not
		// how many the bound admits.
		"LINKGATE_MAX_STREAMS_PER_TENANT="+strconv.Itoa(maxStreams), "LINKGATE_MAX_STREAMS="+strconv.Itoa(maxStreams),
		"LINKGATE_LOG_LEVEL=error", "LINKGATE_DRAIN_DELAY=0s",
		// As deploy/kubernetes ships it: the GC keeps the heap under the
		// container's 512 Mi limit.
		"GOMEMLIMIT=512MiB")
	p.server.Stderr = os.Stderr // errors only, at this log level
	for _, c := range []*exec.Cmd{p.sim, p.server} {
		if err := c.Start(); err != nil {
			b.Fatal(err)
		}
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		conn, err := net.Dial("tcp", grpcAddr)
		if err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			p.stop(b)
			b.Fatalf("linkgate did not listen on %s", grpcAddr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p
}

func (p *processes) dial(b *testing.B) *grpc.ClientConn {
	conn, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	return conn
}

// status reads a memory figure of the server from /proc/PID/status, in bytes.
func (p *processes) status(b *testing.B, field string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.server.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				b.Fatalf("%s: %v", field, err)
			}
			return kb << 10
		}
	}
	b.Fatalf("no %s in /proc/%d/status", field, p.server.Process.Pid)
	return 0
}

func (p *processes) stop(b *testing.B) {
	for _, c := range []*exec.Cmd{p.server, p.sim} {
		if c.Process != nil {
			c.Process.Signal(os.Interrupt)
		}
	}
	for _, c := range []*exec.Cmd{p.server, p.sim} {
		done := make(chan struct{})
		go func() { c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			c.Process.Kill()
			<-done
		}
	}
}

// freeAddr is a loopback address with a port free at the time of asking.
func freeAddr(b testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
