package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/internal/logsink"
	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

// These tests attack a linkgate running as it ships, in a process of its
// own with authentication on and LINKGATE_MEMORY_LIMIT set, so that its
// resident memory (from /proc) counts the server alone, never the
// attacking clients of the test.

// replica is a linkgate process.
type replica struct {
	cmd                *exec.Cmd
	grpcAddr, httpAddr string
	log                *logsink.Buffer
}

// startReplica builds and starts the server binary with the tests' tenants
// and the simulator of this process as its upstream, and waits until both
// listeners answer.
func startReplica(t *testing.T, env ...string) *replica {
	t.Helper()
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Fatalf("reading a process's memory needs /proc: %v", err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "linkgate")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cfg := testConfig(t, simulator(t, ahrefssim.Config{}))
	r := &replica{grpcAddr: freeAddr(t), httpAddr: freeAddr(t), log: &logsink.Buffer{}}
	r.cmd = exec.Command(bin)
	r.cmd.Env = append(os.Environ(),
		"LINKGATE_GRPC_ADDR="+r.grpcAddr, "LINKGATE_HTTP_ADDR="+r.httpAddr,
		"LINKGATE_UPSTREAM_URL="+cfg.UpstreamURL, "LINKGATE_UPSTREAM_KEY="+upstreamKey,
		"LINKGATE_UPSTREAM_RPM=1000000", "LINKGATE_TENANTS_FILE="+cfg.TenantsFile,
		"LINKGATE_DATA_DIR="+dir, "LINKGATE_RECONCILE_EVERY=0", "LINKGATE_METRICS_ADDR=off",
		"LINKGATE_DRAIN_DELAY=0s", "LINKGATE_SHUTDOWN_TIMEOUT=2s", "LINKGATE_LOG_LEVEL=warn", "GOMEMLIMIT=")
	r.cmd.Env = append(r.cmd.Env, env...)
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	// The replica dies with the test process, whatever happens to it.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { r.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			r.cmd.Process.Kill()
			<-done
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; {
		if keyedCall(r) == nil {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("linkgate did not answer on %s\n%s", r.grpcAddr, r.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// status reads a memory figure (VmRSS, VmHWM) of the replica, in MiB.
func (r *replica) status(t *testing.T, field string) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", r.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb / 1024
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, r.cmd.Process.Pid)
	return 0
}

// keyedCall is a tenant's request on a connection of its own, over gRPC
// and over REST, as other tenants keep sending during an attack.
func keyedCall(r *replica) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := newClientConn(r.grpcAddr)
	if err != nil {
		return err
	}
	defer conn.Close()
	page, err := v1.NewBacklinksServiceClient(conn).ListBacklinks(as(ctx, keyA), &v1.ListBacklinksRequest{Target: "sized-30.example", PageSize: 5})
	if err != nil {
		return fmt.Errorf("gRPC: %w", err)
	}
	if len(page.GetBacklinks()) != 5 {
		return fmt.Errorf("gRPC: %d rows, want 5", len(page.GetBacklinks()))
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.httpAddr+"/v1/backlinks?target=sized-30.example&page_size=5", nil)
	req.Header.Set("Authorization", "Bearer "+keyA)
	// A connection of its own, not one kept from an earlier call.
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return fmt.Errorf("REST: %w", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("REST: %s", resp.Status)
	}
	return nil
}

// raiseFileLimit lets this process hold n more descriptors; the replica
// inherits the limit.
func raiseFileLimit(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	if lim.Max < n {
		t.Fatalf("the test needs %d file descriptors; the hard limit is %d (ulimit -Hn)", n, lim.Max)
	}
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
}

// h2Attacker speaks raw HTTP/2 on one connection, as no gRPC client
// would: it opens streams with HEADERS and never sends their DATA.
type h2Attacker struct {
	conn net.Conn
	mu   sync.Mutex // the framer's writes
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
	// What the server answered.
	statuses sync.Map // grpc-status value -> *atomic.Int64
	refused  atomic.Int64
	closed   chan struct{}
}

func dialH2(t *testing.T, addr string) *h2Attacker {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	a := &h2Attacker{conn: conn, closed: make(chan struct{})}
	a.fr = http2.NewFramer(conn, bufio.NewReader(conn))
	a.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	a.enc = hpack.NewEncoder(&a.hbuf)
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	if err := a.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	go a.read()
	return a
}

// read answers the server's settings and pings and counts what it says
// about the streams, until the connection ends.
func (a *h2Attacker) read() {
	defer close(a.closed)
	for {
		f, err := a.fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				a.mu.Lock()
				a.fr.WriteSettingsAck()
				a.mu.Unlock()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				a.mu.Lock()
				a.fr.WritePing(true, f.Data)
				a.mu.Unlock()
			}
		case *http2.RSTStreamFrame:
			if f.ErrCode == http2.ErrCodeRefusedStream {
				a.refused.Add(1)
			}
		case *http2.MetaHeadersFrame:
			if s := f.PseudoValue("status"); s != "" && s != "200" {
				a.count("http " + s)
			}
			for _, hf := range f.RegularFields() {
				if hf.Name == "grpc-status" {
					a.count(hf.Value)
				}
			}
		}
	}
}

func (a *h2Attacker) count(key string) {
	n, _ := a.statuses.LoadOrStore(key, new(atomic.Int64))
	n.(*atomic.Int64).Add(1)
}

func (a *h2Attacker) answered(status string) int64 {
	if n, ok := a.statuses.Load(status); ok {
		return n.(*atomic.Int64).Load()
	}
	return 0
}

func (a *h2Attacker) String() string {
	var parts []string
	a.statuses.Range(func(k, v any) bool {
		parts = append(parts, fmt.Sprintf("status %v: %d", k, v.(*atomic.Int64).Load()))
		return true
	})
	return fmt.Sprintf("refused %d, %s", a.refused.Load(), strings.Join(parts, ", "))
}

// open sends the HEADERS of n streams of method, with key if not empty,
// and without DATA: each waits on the server for a request message that
// never comes.
func (a *h2Attacker) open(t *testing.T, n int, method, key string) {
	t.Helper()
	fields := [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", method},
		{":authority", "linkgate"}, {"content-type", "application/grpc"}, {"te", "trailers"}}
	if key != "" {
		fields = append(fields, [2]string{"authorization", "Bearer " + key})
	}
	for i := range n {
		a.mu.Lock()
		a.hbuf.Reset()
		for _, f := range fields {
			a.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		a.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
		err := a.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1),
			BlockFragment: a.hbuf.Bytes(), EndHeaders: true})
		a.mu.Unlock()
		if err != nil {
			t.Fatalf("stream %d of %d: %v", i+1, n, err)
		}
	}
}

// settle waits until the replica's resident memory stops growing.
func settle(t *testing.T, r *replica) {
	t.Helper()
	rss := r.status(t, "VmRSS")
	for range 15 {
		time.Sleep(time.Second)
		next := r.status(t, "VmRSS")
		if next < rss+1 {
			return
		}
		rss = next
	}
}

// TestManyStreamsOnOneConnection: one TCP connection without a key
// opens 45,000 ListBacklinks streams (HEADERS, never DATA), another 20,000
// streams of the open health service, a third, with a tenant's key, 45,000
// ListBacklinks. The replica's memory stays far inside
// LINKGATE_MEMORY_LIMIT, and a tenant is served meanwhile.
func TestManyStreamsOnOneConnection(t *testing.T) {
	const limitMiB = 512
	r := startReplica(t, fmt.Sprintf("LINKGATE_MEMORY_LIMIT=%dMiB", limitMiB))
	base := r.status(t, "VmRSS")

	const listMethod = "/linkgate.v1.BacklinksService/ListBacklinks"
	list := dialH2(t, r.grpcAddr)
	list.open(t, 45_000, listMethod, "")
	health := dialH2(t, r.grpcAddr)
	health.open(t, 20_000, "/grpc.health.v1.Health/Check", "")
	keyed := dialH2(t, r.grpcAddr)
	keyed.open(t, 45_000, listMethod, keyA)
	settle(t, r)
	if err := keyedCall(r); err != nil {
		t.Fatalf("a tenant during the attack: %v", err)
	}
	rss, peak := r.status(t, "VmRSS"), r.status(t, "VmHWM")
	t.Logf("RSS %.1f MiB before, %.1f MiB with the streams open, peak %.1f MiB (limit %d MiB)", base, rss, peak, limitMiB)
	t.Logf("ListBacklinks: %v", list)
	t.Logf("Health/Check: %v", health)
	t.Logf("ListBacklinks with a key: %v", keyed)
	if peak >= limitMiB {
		t.Fatalf("peak RSS %.1f MiB is past LINKGATE_MEMORY_LIMIT=%dMiB", peak, limitMiB)
	}
	// A peer without a key holds almost nothing: the peak stays within a
	// few pages' worth of the baseline.
	if peak-base > 64 {
		t.Fatalf("keyless streams grew the replica by %.1f MiB (from %.1f to a peak of %.1f)", peak-base, base, peak)
	}
	// Every keyless ListBacklinks is refused as soon as its headers arrive.
	if got := list.answered("16"); got != 45_000 {
		t.Fatalf("%d of 45,000 keyless ListBacklinks answered UNAUTHENTICATED; %v", got, list)
	}
	// Health checks need no key: one connection holds at most
	// LINKGATE_MAX_STREAMS_PER_CONNECTION (100) of them, the rest refused.
	if got := health.refused.Load(); got < 20_000-100 {
		t.Fatalf("%d of 20,000 health checks on one connection refused; %v", got, health)
	}
	// So does a tenant's.
	if got := keyed.refused.Load(); got < 45_000-100 {
		t.Fatalf("%d of 45,000 keyed ListBacklinks on one connection refused; %v", got, keyed)
	}
}

// TestManyKeylessConnections: 8,000 gRPC connections that never send a
// request and 8,000 REST POSTs trickling their bodies a byte a second,
// none with a key. The replica closes every one of them within its header
// timeout, its memory stays inside LINKGATE_MEMORY_LIMIT, and tenants are
// served meanwhile, on connections of their own opened during the attack.
// The test holds a descriptor per connection, and so does the replica: it
// raises the soft limit of open files (RLIMIT_NOFILE) to 17,024, which the
// replica inherits.
func TestManyKeylessConnections(t *testing.T) {
	const limitMiB, perKind = 256, 8_000
	raiseFileLimit(t, 2*perKind+1024)
	r := startReplica(t, fmt.Sprintf("LINKGATE_MEMORY_LIMIT=%dMiB", limitMiB))
	base := r.status(t, "VmRSS")

	idleGRPC := func() (*heldConn, error) {
		conn, err := net.DialTimeout("tcp", r.grpcAddr, 30*time.Second)
		if err != nil {
			return nil, err
		}
		// The HTTP/2 preface and empty settings, then nothing.
		_, err = conn.Write(append([]byte(http2.ClientPreface), 0, 0, 0, 4, 0, 0, 0, 0, 0))
		return hold(conn, false), err
	}
	tricklingPOST := func() (*heldConn, error) {
		conn, err := net.DialTimeout("tcp", r.httpAddr, 30*time.Second)
		if err != nil {
			return nil, err
		}
		_, err = io.WriteString(conn, "POST /v1/cost:estimate HTTP/1.1\r\nHost: linkgate\r\n"+
			"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
		return hold(conn, true), err
	}

	// A few dialers, not a goroutine per connection: the race detector
	// allows 8,128 goroutines at once.
	start := time.Now()
	jobs := make(chan func() (*heldConn, error))
	results := make(chan *heldConn, 2*perKind)
	var dialers sync.WaitGroup
	for range 128 {
		dialers.Go(func() {
			for job := range jobs {
				h, err := job()
				if err != nil {
					t.Errorf("dial: %v", err)
				}
				if h != nil {
					results <- h
				}
			}
		})
	}
	for range perKind {
		jobs <- idleGRPC
		jobs <- tricklingPOST
	}
	close(jobs)
	dialers.Wait()
	close(results)
	var conns []*heldConn
	for h := range results {
		conns = append(conns, h)
		defer h.conn.Close()
	}
	opened := time.Since(start)
	if err := keyedCall(r); err != nil {
		t.Fatalf("a tenant during the attack: %v", err)
	}
	// The header timeout (10 s by default) and some slack; the trickling
	// bodies go on meanwhile.
	open := len(conns)
	for deadline := time.Now().Add(40 * time.Second); open > 0 && time.Now().Before(deadline); time.Sleep(time.Second) {
		open = 0
		for _, h := range conns {
			if h.stillOpen() {
				open++
			}
		}
	}
	rss, peak := r.status(t, "VmRSS"), r.status(t, "VmHWM")
	t.Logf("%d connections opened in %s; %d still open %s after the first; RSS %.1f MiB before, %.1f MiB after, peak %.1f MiB (limit %d MiB)",
		len(conns), opened.Round(time.Millisecond), open, time.Since(start).Round(time.Second), base, rss, peak, limitMiB)
	if peak >= limitMiB {
		t.Fatalf("peak RSS %.1f MiB is past LINKGATE_MEMORY_LIMIT=%dMiB", peak, limitMiB)
	}
	if open > 0 {
		t.Fatalf("%d keyless connections still held %s after they were opened", open, time.Since(start).Round(time.Second))
	}
	if err := keyedCall(r); err != nil {
		t.Fatalf("a tenant after the attack: %v", err)
	}
	if !strings.Contains(r.log.String(), "connection limit reached") {
		t.Errorf("no log line says the connection limit was reached:\n%s", r.log)
	}
}

// heldConn is a connection the test keeps open until the server closes
// it, watched without a goroutine of its own.
type heldConn struct {
	conn    net.Conn
	raw     syscall.RawConn
	trickle bool // send a byte of body at each look
	closed  bool
}

func hold(conn net.Conn, trickle bool) *heldConn {
	raw, _ := conn.(*net.TCPConn).SyscallConn()
	return &heldConn{conn: conn, raw: raw, trickle: trickle}
}

// stillOpen drains what the server sent, without waiting, and reports
// whether it has not closed the connection yet.
func (h *heldConn) stillOpen() bool {
	if h.closed {
		return false
	}
	buf := make([]byte, 4096)
	h.raw.Read(func(fd uintptr) bool {
		for {
			n, _, err := syscall.Recvfrom(int(fd), buf, syscall.MSG_DONTWAIT)
			switch {
			case err == syscall.EAGAIN:
				return true
			case err == syscall.EINTR:
			case err != nil || n == 0:
				h.closed = true
				return true
			}
		}
	})
	if !h.closed && h.trickle {
		h.conn.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := h.conn.Write([]byte(" ")); err != nil {
			h.closed = true
		}
	}
	return !h.closed
}

func newClientConn(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}
