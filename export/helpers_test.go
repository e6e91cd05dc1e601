package export

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"gocloud.dev/blob"
	"gocloud.dev/blob/memblob"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/linkgate/linkgate/export/parts"
	"github.com/linkgate/linkgate/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// storeKinds are the stores every behaviour is checked on.
var storeKinds = []string{"memory", "bolt", "redis"}

// newStore returns a fresh store of kind for t. The Redis store gets keys
// of its own on the shared test server.
func newStore(t testing.TB, kind string) Store {
	t.Helper()
	switch kind {
	case "memory":
		return NewMemoryStore(nil)
	case "bolt":
		db, err := bolt.Open(filepath.Join(t.TempDir(), "linkgate.db"), 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		s, err := NewBoltStore(db, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	case "redis":
		return NewRedisStore(redistest.Client(t), WithRedisKeyPrefix(fmt.Sprintf("test:%s:%d", t.Name(), time.Now().UnixNano())))
	}
	t.Fatalf("no store %q", kind)
	return nil
}

func eachStore(t *testing.T, fn func(t *testing.T, kind string)) {
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) { fn(t, kind) })
	}
}

// fakeSource serves rows 0..Rows-1 in pages of Page; a token is the
// offset of the next row, "" at the start and after the last page. Each
// page costs Page units.
type fakeSource struct {
	Rows, Page int
	// before runs before each page (its offset); an error ends the run.
	before func(ctx context.Context, offset int) error
	pages  atomic.Int64
}

func (f *fakeSource) Run(ctx context.Context, tenant string, r Request, token string, emit func(Chunk) error) error {
	off := 0
	if token != "" {
		n, err := strconv.Atoi(token)
		if err != nil {
			return fmt.Errorf("bad token %q", token)
		}
		off = n
	}
	for off < f.Rows {
		if err := ctx.Err(); err != nil {
			return err
		}
		if f.before != nil {
			if err := f.before(ctx, off); err != nil {
				return err
			}
		}
		f.pages.Add(1)
		end := min(off+f.Page, f.Rows)
		rows := make([]proto.Message, 0, end-off)
		for i := off; i < end; i++ {
			rows = append(rows, row(i))
		}
		next := ""
		if end < f.Rows {
			next = strconv.Itoa(end)
		}
		if err := emit(Chunk{Rows: rows, Token: next, Units: int64(f.Page)}); err != nil {
			return err
		}
		off = end
	}
	return nil
}

func row(i int) proto.Message {
	s, _ := structpb.NewStruct(map[string]any{"n": float64(i), "url": fmt.Sprintf("https://example.com/%d", i)})
	return s
}

func memBucket(t *testing.T) *blob.Bucket {
	b := memblob.OpenBucket(nil)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func newJob(tenant, requestID string) *Job {
	return &Job{Tenant: tenant, RequestID: requestID,
		Request: Request{Dataset: "backlinks", Message: []byte("req:" + requestID), Format: parts.FormatNDJSON}}
}

// testRunner returns a runner with small parts and a short lease.
func testRunner(t *testing.T, st Store, b *blob.Bucket, src Source, tweak func(*RunnerConfig)) *Runner {
	t.Helper()
	cfg := RunnerConfig{Store: st, Source: src, Bucket: b, Lease: 300 * time.Millisecond, Poll: 20 * time.Millisecond,
		PartRows: 25, MaxRunning: 2, MaxPerTenant: 2}
	if tweak != nil {
		tweak(&cfg)
	}
	r, err := NewRunner(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// start runs r until the returned stop is called (or the test ends).
func start(t *testing.T, r *Runner) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = r.Run(ctx) })
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

func wait(t *testing.T, r *Runner, id string) *Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	j, err := r.Wait(ctx, "", id)
	if err != nil {
		t.Fatalf("waiting for %s: %v (last seen %+v)", id, err, j)
	}
	return j
}

// partRows reads the n of every row of the job's parts, in order.
func partRows(t *testing.T, b *blob.Bucket, j *Job) []int {
	t.Helper()
	var out []int
	for _, p := range j.Parts {
		r, err := b.NewReader(context.Background(), p.Key, nil)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(r)
		n := 0
		for sc.Scan() {
			var v struct{ N int }
			if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
				t.Fatal(err)
			}
			out = append(out, v.N)
			n++
		}
		_ = r.Close()
		if int64(n) != p.Rows {
			t.Errorf("%s holds %d rows, the job says %d", p.Key, n, p.Rows)
		}
	}
	return out
}

func upTo(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// keys lists the bucket under the job's prefix.
func keys(t *testing.T, b *blob.Bucket, j *Job) []string {
	t.Helper()
	var out []string
	it := b.List(&blob.ListOptions{Prefix: Prefix(j)})
	for {
		o, err := it.Next(context.Background())
		if errors.Is(err, ioEOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, o.Key)
	}
}

// checkExact asserts the job's parts hold rows 0..n-1 once each, in order,
// and the bucket holds those parts and the manifest, nothing else.
func checkExact(t *testing.T, b *blob.Bucket, j *Job, n int) {
	t.Helper()
	if got := partRows(t, b, j); !slices.Equal(got, upTo(n)) {
		t.Fatalf("parts hold %d rows %v..., want 0..%d once each", len(got), got[:min(len(got), 40)], n-1)
	}
	if j.Rows != int64(n) {
		t.Errorf("job rows %d, want %d", j.Rows, n)
	}
	want := []string{ManifestKey(j)}
	for i, p := range j.Parts {
		if p.Key != PartKey(j, i) {
			t.Errorf("part %d is %s, want %s", i, p.Key, PartKey(j, i))
		}
		want = append(want, p.Key)
	}
	slices.Sort(want)
	if got := keys(t, b, j); !slices.Equal(got, want) {
		t.Errorf("bucket holds %v, want %v", got, want)
	}
}

func readManifest(t *testing.T, b *blob.Bucket, j *Job) parts.Manifest {
	t.Helper()
	data, err := b.ReadAll(context.Background(), ManifestKey(j))
	if err != nil {
		t.Fatalf("reading the manifest: %v", err)
	}
	var m parts.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}
