package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

// BenchmarkManyStreamsPeakRSS runs linkgate as a process with the memory
// the Kubernetes manifest gives a replica (LINKGATE_MEMORY_LIMIT=512Mi),
// asks it for 1,000 concurrent streams whose callers never read, and
// reports the process's peak resident memory (VmHWM) once every admitted
// stream holds its pages, with how many streams it admitted and refused.
// LINKGATE_BENCH_MAX_STREAMS overrides the bound (e.g. 1000, to see the
// memory without it). The upstream simulator runs in the benchmark's
// process, as a remote upstream would, so its memory is not counted.
//
//	go test -run '^$' -bench ManyStreamsPeakRSS -benchtime 1x ./cmd/server/
func BenchmarkManyStreamsPeakRSS(b *testing.B) {
	const streams = 1000
	sim := ahrefssim.New(ahrefssim.Config{Keys: []string{upstreamKey}})
	sim.SetCacheTTL(-1)
	srv := httptest.NewServer(sim)
	defer srv.Close()
	for range b.N {
		env := []string{
			"LINKGATE_TEST_MAIN=1", "GOMEMLIMIT=",
			"LINKGATE_GRPC_ADDR=127.0.0.1:0", "LINKGATE_HTTP_ADDR=127.0.0.1:0",
			"LINKGATE_DATA_DIR=" + b.TempDir(), "LINKGATE_DRAIN_DELAY=0s", "LINKGATE_SHUTDOWN_TIMEOUT=1s",
			"LINKGATE_RECONCILE_EVERY=0", "LINKGATE_UPSTREAM_RPM=1000000",
			"LINKGATE_UPSTREAM_URL=" + srv.URL, "LINKGATE_UPSTREAM_KEY=" + upstreamKey,
			"LINKGATE_BUDGET_UNITS=10000000000000", "LINKGATE_MEMORY_LIMIT=512Mi",
			// One tenant (authentication off) standing for many: the per-tenant
			// cap is lifted so that only the server's bound is measured.
			"LINKGATE_MAX_STREAMS_PER_TENANT=" + strconv.Itoa(streams),
		}
		if n := os.Getenv("LINKGATE_BENCH_MAX_STREAMS"); n != "" {
			env = append(env, "LINKGATE_MAX_STREAMS="+n)
		}
		admitted, refused, rss := manyStreams(b, env, streams, sim)
		b.ReportMetric(float64(rss)/(1<<20), "peak-RSS-MiB")
		b.ReportMetric(float64(admitted), "admitted")
		b.ReportMetric(float64(refused), "refused")
	}
}

func manyStreams(b *testing.B, env []string, streams int, sim *ahrefssim.Server) (admitted, refused int64, rss int64) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), env...)
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}()
	var grpcAddr string
	sc := bufio.NewScanner(stdout)
	for grpcAddr == "" && sc.Scan() {
		var rec struct{ Msg, GRPC string }
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "linkgate is serving" {
			grpcAddr = rec.GRPC
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	if grpcAddr == "" {
		b.Fatal("linkgate did not start")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Several connections, as many callers would use.
	var conns []*grpc.ClientConn
	for range 20 {
		conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		conns = append(conns, conn)
	}
	var wg sync.WaitGroup
	var ok, busy atomic.Int64
	for i := range streams {
		wg.Go(func() {
			c := v1.NewBacklinksServiceClient(conns[i%len(conns)])
			s, err := c.StreamBacklinks(ctx, &v1.StreamBacklinksRequest{Target: fmt.Sprintf("sized-10000000-%d.example", i%50)})
			if err == nil {
				// The first message tells admitted from refused; then the
				// caller stalls, leaving the pager its three pages.
				_, err = s.Recv()
			}
			switch status.Code(err) {
			case codes.OK:
				ok.Add(1)
			case codes.ResourceExhausted:
				busy.Add(1)
			default:
				b.Errorf("stream: %v", err)
			}
		})
	}
	wg.Wait()
	// Wait until the upstream sees no more requests: every admitted
	// stream's pager is blocked holding its pages.
	for last := int64(-1); ; {
		time.Sleep(time.Second)
		if u := sim.Usage(); u == last {
			break
		} else {
			last = u
		}
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, found := strings.CutPrefix(line, "VmHWM:"); found {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			rss = kb << 10
		}
	}
	return ok.Load(), busy.Load(), rss
}
