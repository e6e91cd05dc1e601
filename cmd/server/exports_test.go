package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/longrunning/autogen/longrunningpb"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/linkgate/linkgate/export"
	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/internal/logsink"
	"github.com/linkgate/linkgate/internal/redistest"
	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

// restOperation reads an operation's JSON as the REST API answers it.
func restOperation(t *testing.T, body string) *longrunningpb.Operation {
	t.Helper()
	var op longrunningpb.Operation
	if err := protojson.Unmarshal([]byte(body), &op); err != nil {
		t.Fatalf("not an operation: %v\n%s", err, body)
	}
	return &op
}

func exportMetadata(t *testing.T, op *longrunningpb.Operation) *v1.ExportMetadata {
	t.Helper()
	var m v1.ExportMetadata
	if err := op.GetMetadata().UnmarshalTo(&m); err != nil {
		t.Fatalf("metadata of %s: %v", op.GetName(), err)
	}
	return &m
}

// ndjsonBacklinks reads the rows of an NDJSON part.
func ndjsonBacklinks(t *testing.T, b []byte) []*v1.Backlink {
	t.Helper()
	var rows []*v1.Backlink
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r v1.Backlink
		if err := protojson.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("a part's line is not a backlink: %v: %s", err, sc.Bytes())
		}
		rows = append(rows, &r)
	}
	return rows
}

// sameRows compares rows one by one and names the first difference.
func sameRows(t *testing.T, got, want []*v1.Backlink) {
	t.Helper()
	if len(want) == 0 {
		t.Fatal("the direct stream has no rows: the test proves nothing")
	}
	for i := range min(len(got), len(want)) {
		if !proto.Equal(got[i], want[i]) {
			t.Fatalf("row %d differs:\nexport %v\nstream %v", i, got[i], want[i])
		}
	}
	if len(got) != len(want) {
		t.Fatalf("the export has %d rows, a direct stream %d", len(got), len(want))
	}
}

// TestExportEndToEndREST starts an export over REST, watches its
// operation, downloads its parts, and finds in them exactly the rows a
// direct stream of the same request sends, in order.
func TestExportEndToEndREST(t *testing.T) {
	cfg := testConfig(t, simulator(t, ahrefssim.Config{}))
	cfg.UpstreamPageRows, cfg.ExportPartRows = 100, 250
	s, _ := startTest(t, cfg)
	base := "http://" + s.httpAddr
	const request = `{"target": "sized-1203.example", "order_by": "domain_rating_source:desc", "max_rows": 1100, "page_size": 100}`

	code, body, _ := restCall(t, nil, http.MethodPost, base+"/v1/exports", keyB, `{"backlinks": `+request+`, "format": "EXPORT_FORMAT_NDJSON"}`)
	if code != http.StatusOK {
		t.Fatalf("POST /v1/exports: %d %s", code, body)
	}
	op := restOperation(t, body)
	id := strings.TrimPrefix(op.GetName(), "operations/")
	if id == op.GetName() || id == "" {
		t.Fatalf("operation name %q", op.GetName())
	}
	for deadline := time.Now().Add(time.Minute); !op.GetDone(); {
		if time.Now().After(deadline) {
			t.Fatalf("the export is not done after a minute: %v", op)
		}
		time.Sleep(50 * time.Millisecond)
		code, body, _ = restCall(t, nil, http.MethodGet, base+"/v1/"+op.GetName(), keyB, "")
		if code != http.StatusOK {
			t.Fatalf("GET /v1/%s: %d %s", op.GetName(), code, body)
		}
		op = restOperation(t, body)
	}
	var result v1.Export
	if err := op.GetResponse().UnmarshalTo(&result); err != nil {
		t.Fatalf("the done operation has no Export: %v (%v)", err, op)
	}
	if m := exportMetadata(t, op); m.GetState() != v1.ExportState_EXPORT_STATE_SUCCEEDED || m.GetRowsWritten() != 1100 {
		t.Fatalf("metadata %v", m)
	}
	if len(result.GetParts()) < 4 {
		t.Fatalf("%d parts of about 250 rows for 1100 rows", len(result.GetParts()))
	}

	var got []*v1.Backlink
	for i, p := range result.GetParts() {
		if want := fmt.Sprintf("exports/%s/parts/%d", id, i); p.GetName() != want {
			t.Errorf("part %d is named %q, want %q", i, p.GetName(), want)
		}
		code, body, h := restCall(t, nil, http.MethodGet, base+"/v1/"+p.GetName(), keyB, "")
		if code != http.StatusOK || h.Get("Content-Type") != "application/x-ndjson" {
			t.Fatalf("GET /v1/%s: %d %q %s", p.GetName(), code, h.Get("Content-Type"), clip(body))
		}
		sum := sha256.Sum256([]byte(body))
		if hex.EncodeToString(sum[:]) != p.GetSha256() || int64(len(body)) != p.GetBytes() {
			t.Errorf("part %d: %d bytes, sha256 %x; the export says %d bytes, %s", i, len(body), sum, p.GetBytes(), p.GetSha256())
		}
		rows := ndjsonBacklinks(t, []byte(body))
		if int64(len(rows)) != p.GetRows() {
			t.Errorf("part %d holds %d rows, the export says %d", i, len(rows), p.GetRows())
		}
		got = append(got, rows...)
	}
	sameRows(t, got, directStreamREST(t, base, keyB, request))

	// Another tenant sees none of it; an admin lists it.
	for _, path := range []string{"/v1/" + op.GetName(), "/v1/" + result.GetParts()[0].GetName()} {
		if code, body, _ := restCall(t, nil, http.MethodGet, base+path, keyA, ""); code != http.StatusNotFound {
			t.Errorf("GET %s by another tenant: %d %s, want 404", path, code, clip(body))
		}
	}
	if _, body, _ := restCall(t, nil, http.MethodGet, base+"/v1/operations", keyA, ""); strings.Contains(body, id) {
		t.Errorf("another tenant lists the export: %s", clip(body))
	}
	if code, body, _ := restCall(t, nil, http.MethodGet, base+"/v1/operations?filter=done%3Dtrue", keyAdmin, ""); code != http.StatusOK || !strings.Contains(body, id) {
		t.Errorf("an admin's list of done operations: %d %s", code, clip(body))
	}
	// A bad request is refused with the field named, before any unit.
	code, body, _ = restCall(t, nil, http.MethodPost, base+"/v1/exports", keyB, `{"backlinks": {"target": "sized-10.example", "filter": "nope >"}}`)
	if code != http.StatusBadRequest || !strings.Contains(body, `"backlinks.filter"`) {
		t.Errorf("an export with a bad filter: %d %s", code, clip(body))
	}
	// Mistakes are 4xx naming what is wrong, as on every other route.
	for _, tc := range []struct{ method, path, body, names string }{
		{http.MethodPost, "/v1/exports", `{"backlinks": {"target": "sized-10.example"}, "fromat": "EXPORT_FORMAT_CSV"}`, "fromat"},
		{http.MethodPost, "/v1/exports", `{"backlinks": {"target": "sized-10.example"}, "format": "EXPORT_FORMAT_XLS"}`, "format"},
		{http.MethodGet, "/v1/operations?nosuch=1", "", "nosuch"},
		{http.MethodGet, "/v1/operations?page_size=-1", "", "page_size"},
		{http.MethodGet, "/v1/operations/nosuch", "", "no such export"},
		{http.MethodGet, "/v1/exports/" + id + "/parts/99", "", "no part 99"},
		{http.MethodGet, "/v1/exports/" + id + "/parts/x", "", "part number"},
		{http.MethodPut, "/v1/exports", "", "PUT"},
	} {
		code, body, _ := restCall(t, nil, tc.method, base+tc.path, keyB, tc.body)
		if code < 400 || code >= 500 || !strings.Contains(body, tc.names) {
			t.Errorf("%s %s: %d %s; want a 4xx naming %q", tc.method, tc.path, code, clip(body), tc.names)
		}
	}
	// Deleting it removes the operation and its parts.
	if code, body, _ := restCall(t, nil, http.MethodDelete, base+"/v1/"+op.GetName(), keyB, ""); code != http.StatusOK {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	if code, _, _ := restCall(t, nil, http.MethodGet, base+"/v1/"+result.GetParts()[0].GetName(), keyB, ""); code != http.StatusNotFound {
		t.Errorf("a deleted export's part: %d, want 404", code)
	}
}

// TestExportFormatsEndToEnd downloads a gzip CSV and a Parquet export over
// REST: each part is the file its content type says, the CSV with the
// columns of the request's select.
func TestExportFormatsEndToEnd(t *testing.T) {
	cfg := testConfig(t, simulator(t, ahrefssim.Config{}))
	s, _ := startTest(t, cfg)
	base := "http://" + s.httpAddr
	for _, tc := range []struct{ format, gzip, contentType string }{
		{"EXPORT_FORMAT_CSV", "true", "application/gzip"},
		{"EXPORT_FORMAT_CSV", "false", "text/csv; charset=utf-8; header=present"},
		{"EXPORT_FORMAT_PARQUET", "false", "application/vnd.apache.parquet"},
	} {
		t.Run(tc.format+"/gzip="+tc.gzip, func(t *testing.T) {
			code, body, _ := restCall(t, nil, http.MethodPost, base+"/v1/exports", keyB,
				`{"refdomains": {"target": "sized-300.example", "select": ["domain_rating", "domain"]}, "format": "`+tc.format+`", "gzip": `+tc.gzip+`}`)
			if code != http.StatusOK {
				t.Fatalf("POST /v1/exports: %d %s", code, body)
			}
			name := restOperation(t, body).GetName()
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			op, err := longrunningpb.NewOperationsClient(dial(t, s.grpcAddr).conn).WaitOperation(as(ctx, keyB),
				&longrunningpb.WaitOperationRequest{Name: name})
			if err != nil || !op.GetDone() || op.GetError() != nil {
				t.Fatalf("WaitOperation: %v, %v", op, err)
			}
			var result v1.Export
			if err := op.GetResponse().UnmarshalTo(&result); err != nil || len(result.GetParts()) != 1 || result.GetRows() < 100 {
				t.Fatalf("export %v (%v): want one part of the target's 100+ referring domains", &result, err)
			}
			p := result.GetParts()[0]
			code, body, h := restCall(t, nil, http.MethodGet, base+"/v1/"+p.GetName(), keyB, "")
			if code != http.StatusOK || h.Get("Content-Type") != tc.contentType || p.GetContentType() != tc.contentType {
				t.Fatalf("GET: %d, Content-Type %q, the part says %q; want %q", code, h.Get("Content-Type"), p.GetContentType(), tc.contentType)
			}
			sum := sha256.Sum256([]byte(body))
			if hex.EncodeToString(sum[:]) != p.GetSha256() {
				t.Errorf("the download's sha256 is not the part's")
			}
			file := []byte(body)
			if tc.gzip == "true" {
				zr, err := gzip.NewReader(bytes.NewReader(file))
				if err != nil {
					t.Fatal(err)
				}
				if file, err = io.ReadAll(zr); err != nil {
					t.Fatal(err)
				}
			}
			switch tc.format {
			case "EXPORT_FORMAT_CSV":
				records, err := csv.NewReader(bytes.NewReader(file)).ReadAll()
				if err != nil {
					t.Fatal(err)
				}
				if int64(len(records)) != p.GetRows()+1 || strings.Join(records[0], ",") != "domain_rating,domain" {
					t.Errorf("%d records, header %v; want %d rows under domain_rating,domain", len(records), records[0], p.GetRows())
				}
			case "EXPORT_FORMAT_PARQUET":
				if !bytes.HasPrefix(file, []byte("PAR1")) || !bytes.HasSuffix(file, []byte("PAR1")) {
					t.Errorf("not a Parquet file: %q…", file[:min(8, len(file))])
				}
			}
		})
	}
}

// directStreamREST is the rows of a direct stream of the same request over REST.
func directStreamREST(t *testing.T, base, key, request string) []*v1.Backlink {
	t.Helper()
	var req v1.StreamBacklinksRequest
	if err := protojson.Unmarshal([]byte(request), &req); err != nil {
		t.Fatal(err)
	}
	q := fmt.Sprintf("target=%s&order_by=%s&max_rows=%d&page_size=%d", req.GetTarget(), req.GetOrderBy(), req.GetMaxRows(), req.GetPageSize())
	code, body, _ := restCall(t, nil, http.MethodGet, base+"/v1/backlinks:stream?"+q, key, "")
	if code != http.StatusOK {
		t.Fatalf("the direct stream: %d %s", code, clip(body))
	}
	var rows []*v1.Backlink
	for line := range strings.Lines(body) {
		var msg struct {
			Result json.RawMessage `json:"result"`
		}
		if err := json.Unmarshal([]byte(line), &msg); err != nil || msg.Result == nil {
			t.Fatalf("a stream line is not a result: %s", clip(line))
		}
		var page v1.StreamBacklinksResponse
		if err := protojson.Unmarshal(msg.Result, &page); err != nil {
			t.Fatal(err)
		}
		rows = append(rows, page.GetBacklinks()...)
	}
	return rows
}

// exportCluster is linkgate replicas in processes of their own, sharing a
// Redis (ledger, rate, jobs), a bucket folder and a slow upstream, for the
// faults no in-process server can have: kill -9, SIGTERM, a Redis restart.
type exportCluster struct {
	t        *testing.T
	bin      string
	env      []string
	sim      *ahrefssim.Server
	redis    string
	budget   string
	replicas []*exportReplica
}

type exportReplica struct {
	cmd                *exec.Cmd
	grpcAddr, httpAddr string
	log                *logsink.Buffer
	conn               *grpc.ClientConn
	exited             chan struct{}
}

// pageRows is the rows of every upstream page and stream message of these
// tests; each is one part, so a crash loses at most the page in flight.
const pageRows = 100

func newExportCluster(t *testing.T, redisAddr string) *exportCluster {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "linkgate")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// Pages take a while, so that an export is mid-way long enough to be
	// hit; no cache anywhere, so that every page is paid and counted.
	sim := ahrefssim.New(ahrefssim.Config{Keys: []string{upstreamKey}, Latency: 60 * time.Millisecond, CacheTTL: -1,
		Logger: slog.New(slog.DiscardHandler)})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	cfg := testConfig(t, srv.URL)
	c := &exportCluster{t: t, bin: bin, sim: sim, redis: redisAddr, budget: fmt.Sprintf("exports%d", time.Now().UnixNano())}
	c.env = append(os.Environ(),
		"LINKGATE_UPSTREAM_URL="+srv.URL, "LINKGATE_UPSTREAM_KEY="+upstreamKey,
		"LINKGATE_UPSTREAM_RPM=1000000", "LINKGATE_UPSTREAM_PAGE_ROWS="+strconv.Itoa(pageRows), "LINKGATE_PAGE_CACHE_BYTES=0",
		"LINKGATE_TENANTS_FILE="+cfg.TenantsFile, "LINKGATE_REDIS_ADDR="+redisAddr, "LINKGATE_BUDGET_NAME="+c.budget,
		"LINKGATE_TOKEN_KEY=export-cluster-token-key-0123456789",
		"LINKGATE_EXPORT_BUCKET=file://"+filepath.ToSlash(filepath.Join(dir, "bucket"))+"?create_dir=true",
		"LINKGATE_EXPORT_PART_ROWS=1", "LINKGATE_EXPORT_LEASE=3s",
		"LINKGATE_RECONCILE_EVERY=0", "LINKGATE_METRICS_ADDR=off",
		"LINKGATE_DRAIN_DELAY=0s", "LINKGATE_SHUTDOWN_TIMEOUT=10s", "LINKGATE_LOG_LEVEL=info", "GOMEMLIMIT=")
	return c
}

// start starts a replica with extra environment and waits until it
// answers.
func (c *exportCluster) start(env ...string) *exportReplica {
	t := c.t
	t.Helper()
	r := &exportReplica{grpcAddr: freeAddr(t), httpAddr: freeAddr(t), log: &logsink.Buffer{}, exited: make(chan struct{})}
	r.cmd = exec.Command(c.bin)
	r.cmd.Env = append(append(slicesClone(c.env), "LINKGATE_GRPC_ADDR="+r.grpcAddr, "LINKGATE_HTTP_ADDR="+r.httpAddr,
		"LINKGATE_DATA_DIR="+t.TempDir()), env...)
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.cmd.Wait(); close(r.exited) }()
	t.Cleanup(func() {
		r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.exited:
		case <-time.After(20 * time.Second):
			r.cmd.Process.Kill()
			<-r.exited
		}
	})
	var err error
	if r.conn, err = newClientConn(r.grpcAddr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.conn.Close() })
	for deadline := time.Now().Add(30 * time.Second); ; {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := r.ops().ListOperations(as(ctx, keyB), &longrunningpb.ListOperationsRequest{})
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica does not answer: %v\n%s", err, r.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.replicas = append(c.replicas, r)
	return r
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }

func (r *exportReplica) ops() longrunningpb.OperationsClient {
	return longrunningpb.NewOperationsClient(r.conn)
}

// owner is the replica whose runner holds the export's lease, read in the
// store as any replica reads it (owners are named host-pid-random).
func (c *exportCluster) owner(id string) *exportReplica {
	c.t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: c.redis})
	defer rdb.Close()
	j, err := export.NewRedisStore(rdb, export.WithRedisKeyPrefix("linkgate:export:"+c.budget)).Get(context.Background(), id)
	if err != nil {
		c.t.Fatalf("the job in Redis: %v", err)
	}
	for _, r := range c.replicas {
		if strings.Contains(j.Owner, fmt.Sprintf("-%d-", r.cmd.Process.Pid)) {
			return r
		}
	}
	c.t.Fatalf("no replica owns the export (owner %q)", j.Owner)
	return nil
}

// exportRequest is the export every fault test runs: 3,000 rows in 30
// pages of 100.
func exportRequest() *v1.StreamBacklinksRequest {
	return &v1.StreamBacklinksRequest{Target: "sized-3000.example", OrderBy: "domain_rating_source:desc", PageSize: pageRows}
}

// create starts the export through r and returns its id and the upstream
// usage before it.
func (c *exportCluster) create(r *exportReplica) (id string, usageBefore int64) {
	c.t.Helper()
	usageBefore = c.sim.KeyUsage(upstreamKey)
	op, err := v1.NewExportServiceClient(r.conn).CreateExport(as(c.t.Context(), keyB), &v1.CreateExportRequest{
		Request: &v1.CreateExportRequest_Backlinks{Backlinks: exportRequest()}})
	if err != nil {
		c.t.Fatalf("CreateExport: %v", err)
	}
	return strings.TrimPrefix(op.GetName(), "operations/"), usageBefore
}

// waitParts waits until the export has committed n parts, read through r.
func (c *exportCluster) waitParts(r *exportReplica, id string, n int) {
	c.t.Helper()
	for deadline := time.Now().Add(time.Minute); ; {
		op, err := r.ops().GetOperation(as(c.t.Context(), keyB), &longrunningpb.GetOperationRequest{Name: "operations/" + id})
		if err != nil {
			c.t.Fatalf("GetOperation: %v", err)
		}
		m := exportMetadata(c.t, op)
		if op.GetDone() {
			c.t.Fatalf("the export ended before %d parts: the fault would miss it (%v)", n, m)
		}
		if len(m.GetParts()) >= n {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the export has %d parts after a minute", len(m.GetParts()))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// check waits for the export to succeed through r, reads its parts, and
// compares them with a direct stream of the same request: the same rows,
// and the upstream charged the export at most one page more.
func (c *exportCluster) check(r *exportReplica, id string, usageBefore int64) {
	t := c.t
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var op *longrunningpb.Operation
	for {
		var err error
		op, err = r.ops().WaitOperation(as(ctx, keyB), &longrunningpb.WaitOperationRequest{Name: "operations/" + id})
		if err != nil {
			t.Fatalf("WaitOperation: %v", err)
		}
		if op.GetDone() {
			break
		}
	}
	if op.GetError() != nil {
		t.Fatalf("the export failed: %v\n%s", op.GetError(), r.log)
	}
	var result v1.Export
	if err := op.GetResponse().UnmarshalTo(&result); err != nil {
		t.Fatal(err)
	}
	exportUnits := c.sim.KeyUsage(upstreamKey) - usageBefore
	var got []*v1.Backlink
	for _, p := range result.GetParts() {
		s, err := v1.NewExportServiceClient(r.conn).GetExportPart(as(ctx, keyB), &v1.GetExportPartRequest{Name: p.GetName()})
		if err != nil {
			t.Fatal(err)
		}
		var b []byte
		for {
			m, err := s.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", p.GetName(), err)
			}
			b = append(b, m.GetData()...)
		}
		got = append(got, ndjsonBacklinks(t, b)...)
	}

	before := c.sim.KeyUsage(upstreamKey)
	st, err := v1.NewBacklinksServiceClient(r.conn).StreamBacklinks(as(ctx, keyB), exportRequest())
	if err != nil {
		t.Fatal(err)
	}
	var want []*v1.Backlink
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("the direct stream: %v", err)
		}
		want = append(want, m.GetBacklinks()...)
	}
	streamUnits := c.sim.KeyUsage(upstreamKey) - before
	sameRows(t, got, want)

	price, err := v1.NewBacklinksServiceClient(r.conn).EstimateCost(as(ctx, keyB), &v1.EstimateCostRequest{
		Request: &v1.EstimateCostRequest_Backlinks{Backlinks: &v1.ListBacklinksRequest{
			Target: exportRequest().GetTarget(), OrderBy: exportRequest().GetOrderBy(), PageSize: pageRows}}})
	if err != nil {
		t.Fatal(err)
	}
	onePage := price.GetFirstPageUnits()
	t.Logf("%d rows in %d parts; the upstream charged the export %d units, a direct stream %d (one page: %d)",
		len(got), len(result.GetParts()), exportUnits, streamUnits, onePage)
	if exportUnits > streamUnits+onePage {
		t.Errorf("the export cost %d units, more than a direct stream's %d and one page (%d)", exportUnits, streamUnits, onePage)
	}
	if result.GetUnits() < streamUnits {
		t.Errorf("the export counts %d units; its pages cost at least %d", result.GetUnits(), streamUnits)
	}
}

// TestExportSurvivesKillingItsReplica kills the replica running an export
// with SIGKILL mid-way: another takes it over when the lease runs out and
// finishes it from the last committed part.
func TestExportSurvivesKillingItsReplica(t *testing.T) {
	c := newExportCluster(t, redistest.Addr(t))
	a, b := c.start(), c.start()
	id, before := c.create(a)
	c.waitParts(a, id, 3)
	victim, survivor := c.owner(id), a
	if victim == a {
		survivor = b
	}
	victim.cmd.Process.Signal(syscall.SIGKILL)
	<-victim.exited
	c.check(survivor, id, before)
}

// TestExportHandedOverOnSIGTERM stops the replica running an export with
// SIGTERM: it commits its part and releases the lease at once, so the
// other replica continues although the lease (5 minutes) is far from
// running out.
func TestExportHandedOverOnSIGTERM(t *testing.T) {
	c := newExportCluster(t, redistest.Addr(t))
	a := c.start("LINKGATE_EXPORT_LEASE=5m")
	b := c.start("LINKGATE_EXPORT_LEASE=5m")
	id, before := c.create(a)
	c.waitParts(a, id, 3)
	victim, survivor := c.owner(id), a
	if victim == a {
		survivor = b
	}
	victim.cmd.Process.Signal(syscall.SIGTERM)
	<-victim.exited
	if code := victim.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("the replica exited %d after SIGTERM\n%s", code, victim.log)
	}
	c.check(survivor, id, before)
}

// TestExportSurvivesARedisRestart restarts the Redis that holds the jobs,
// the ledger and the key's rate (with its append-only file, as it runs in
// production) while an export runs.
func TestExportSurvivesARedisRestart(t *testing.T) {
	rs := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	c := newExportCluster(t, rs.Addr)
	a := c.start("LINKGATE_EXPORT_LEASE=10s")
	id, before := c.create(a)
	c.waitParts(a, id, 3)
	rs.Restart()
	c.check(a, id, before)
}
