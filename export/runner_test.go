package export

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/linkgate/linkgate/export/parts"
	"github.com/linkgate/linkgate/internal/redistest"
)

func TestDirectRun(t *testing.T) {
	eachStore(t, func(t *testing.T, kind string) {
		st, b := newStore(t, kind), memBucket(t)
		src := &fakeSource{Rows: 200, Page: 10}
		r := testRunner(t, st, b, src, nil)
		j, err := r.Submit(context.Background(), newJob("t1", "a"))
		if err != nil {
			t.Fatal(err)
		}
		start(t, r)
		j = wait(t, r, j.ID)
		if j.State != StateSucceeded || j.Units != 200 || !j.End {
			t.Fatalf("job ended %v units %d end %v, want succeeded 200 true", j.State, j.Units, j.End)
		}
		checkExact(t, b, j, 200)
		m := readManifest(t, b, j)
		if m.State != "SUCCEEDED" || m.Rows != 200 || m.Units != 200 || m.NextPageToken != "" ||
			len(m.Parts) != len(j.Parts) || m.Parts[3] != j.Parts[3] || m.Name != "exports/"+j.ID {
			t.Errorf("manifest %+v does not match the job %+v", m, j)
		}
		// Parts end at the first page boundary at or after 25 rows.
		if len(j.Parts) != 7 || j.Parts[0].Rows != 30 || j.Parts[6].Rows != 20 {
			t.Errorf("parts %+v, want 6 of 30 rows and one of 20", j.Parts)
		}
	})
}

// crasher kills a runner at its n-th step: a page about to be served, or
// a checkpoint commit just before or just after the store applied it.
type crasher struct {
	left atomic.Int64
	r    *Runner
	hit  chan struct{}
}

func newCrasher(n int64) *crasher {
	c := &crasher{hit: make(chan struct{})}
	c.left.Store(n)
	return c
}

func (c *crasher) step() bool {
	if c.left.Add(-1) == 0 {
		c.r.crash()
		close(c.hit)
		return true
	}
	return c.left.Load() < 0
}

var errDead = errors.New("the process died")

type crashingStore struct {
	Store
	c *crasher
}

func (s crashingStore) Commit(ctx context.Context, j *Job) error {
	if s.c.step() {
		return errDead
	}
	err := s.Store.Commit(ctx, j)
	if s.c.step() {
		return errDead
	}
	return err
}

type crashingSource struct {
	*fakeSource
	c *crasher
}

func (s crashingSource) Run(ctx context.Context, tenant string, r Request, token string, emit func(Chunk) error) error {
	return s.fakeSource.Run(ctx, tenant, r, token, func(ch Chunk) error {
		if s.c.step() {
			return errDead
		}
		return emit(ch)
	})
}

// TestExactlyOnceAcrossCrashes kills replicas at random steps, with no
// release and whatever they had in flight, and lets another take over after
// the lease: the parts hold every row once, in order, and nothing else lies
// in the bucket.
func TestExactlyOnceAcrossCrashes(t *testing.T) {
	eachStore(t, func(t *testing.T, kind string) {
		rng := rand.New(rand.NewPCG(20, uint64(len(kind))))
		for iter := range 10 {
			st, b := newStore(t, kind), memBucket(t)
			src := &fakeSource{Rows: 200, Page: 10}
			var id string
			crashes := 0
			for replica := 0; ; replica++ {
				if replica == 3 {
					// A last replica that does not crash.
					r := testRunner(t, st, b, src, nil)
					stop := start(t, r)
					j := wait(t, r, id)
					stop()
					if j.State != StateSucceeded || j.Units != 200 {
						t.Fatalf("iteration %d: job ended %v with %d units, want succeeded with 200", iter, j.State, j.Units)
					}
					checkExact(t, b, j, 200)
					break
				}
				c := newCrasher(1 + rng.Int64N(40))
				r := testRunner(t, crashingStore{st, c}, b, crashingSource{src, c}, nil)
				c.r = r
				if id == "" {
					j, err := r.Submit(context.Background(), newJob("t1", "a"))
					if err != nil {
						t.Fatal(err)
					}
					id = j.ID
				}
				stop := start(t, r)
				done := make(chan struct{})
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				go func() {
					_, _ = r.Wait(ctx, "", id)
					close(done)
				}()
				select {
				case <-c.hit:
					crashes++
				case <-done:
				}
				cancel()
				stop()
				<-done
				if j, _ := st.Get(context.Background(), id); j.State.Done() {
					checkExact(t, b, j, 200)
					break
				}
			}
			// A crash costs the pages since the last committed part: at most
			// the 3 pages of one part of 30 rows.
			if extra := src.pages.Load() - 20; extra > int64(3*crashes) {
				t.Errorf("iteration %d: %d pages fetched again after %d crashes, want at most %d", iter, extra, crashes, 3*crashes)
			}
		}
	})
}

// TestFencing: an owner whose lease another claim took cannot renew,
// commit or release; neither can one whose job was cancelled while nobody
// held it.
func TestFencing(t *testing.T) {
	eachStore(t, func(t *testing.T, kind string) {
		ctx := context.Background()
		st := newStore(t, kind)
		j := newJob("t1", "a")
		j.ID, j.Created, j.Expires = "j1", time.Now(), time.Now().Add(time.Hour)
		if _, _, err := st.Create(ctx, j); err != nil {
			t.Fatal(err)
		}
		a, err := st.Claim(ctx, "a", 100*time.Millisecond, 1)
		if err != nil || a == nil || a.Epoch != 1 || a.State != StateRunning {
			t.Fatalf("first claim: %+v, %v", a, err)
		}
		if again, err := st.Claim(ctx, "b", time.Minute, 1); err != nil || again != nil {
			t.Fatalf("a claim under a live lease got %+v, %v", again, err)
		}
		time.Sleep(150 * time.Millisecond)
		bj, err := st.Claim(ctx, "b", time.Minute, 1)
		if err != nil || bj == nil || bj.Epoch != 2 || bj.Owner != "b" {
			t.Fatalf("claim after the lease: %+v, %v", bj, err)
		}
		a.Checkpoint, a.Rows = "stale", 99
		if err := st.Commit(ctx, a); !errors.Is(err, ErrFenced) {
			t.Errorf("stale commit: %v, want ErrFenced", err)
		}
		if _, err := st.Renew(ctx, a, time.Minute); !errors.Is(err, ErrFenced) {
			t.Errorf("stale renew: %v, want ErrFenced", err)
		}
		if err := st.Release(ctx, a); !errors.Is(err, ErrFenced) {
			t.Errorf("stale release: %v, want ErrFenced", err)
		}
		bj.Checkpoint, bj.Rows = "10", 10
		if err := st.Commit(ctx, bj); err != nil {
			t.Fatalf("owner's commit: %v", err)
		}
		got, _ := st.Get(ctx, "j1")
		if got.Checkpoint != "10" || got.Rows != 10 || got.Owner != "b" {
			t.Errorf("stored %+v after the owner's commit", got)
		}
		// Released, then cancelled while nobody holds it: it ends, and the
		// owner it had cannot write over the end.
		if err := st.Release(ctx, bj); err != nil {
			t.Fatal(err)
		}
		c, err := st.Cancel(ctx, "j1")
		if err != nil || c.State != StateCancelled || c.ErrorCode != codeCancelled || c.Checkpoint != "10" {
			t.Fatalf("cancel of a released job: %+v, %v", c, err)
		}
		if err := st.Commit(ctx, bj); !errors.Is(err, ErrFenced) {
			t.Errorf("commit after the cancel: %v, want ErrFenced", err)
		}
		if err := st.Commit(ctx, &Job{ID: "nope", Epoch: 1, Request: Request{Format: parts.FormatNDJSON}}); !errors.Is(err, ErrNotFound) {
			t.Errorf("commit of a missing job: %v, want ErrNotFound", err)
		}
	})
}

// gate holds the source before the page at offset until opened, and says
// when it got there.
type gate struct {
	at      int
	reached chan struct{}
	open    chan struct{}
	once    sync.Once
}

func newGate(at int) *gate {
	return &gate{at: at, reached: make(chan struct{}), open: make(chan struct{})}
}

func (g *gate) before(ctx context.Context, off int) error {
	if off != g.at {
		return nil
	}
	g.once.Do(func() { close(g.reached) })
	select {
	case <-g.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestHandover: a replica stopped (SIGTERM) closes its part, commits and
// releases, and another claims the job at once, long before the lease
// would have run out, fetching no page twice.
func TestHandover(t *testing.T) {
	eachStore(t, func(t *testing.T, kind string) {
		st, b := newStore(t, kind), memBucket(t)
		g := newGate(80)
		src := &fakeSource{Rows: 200, Page: 10, before: g.before}
		long := func(c *RunnerConfig) { c.Lease = time.Minute }
		a := testRunner(t, st, b, src, long)
		j, err := a.Submit(context.Background(), newJob("t1", "a"))
		if err != nil {
			t.Fatal(err)
		}
		stopA := start(t, a)
		<-g.reached
		stopA()
		mid, _ := st.Get(context.Background(), j.ID)
		if mid.Owner != "" || !mid.LeaseUntil.IsZero() || mid.Rows != 80 || mid.Checkpoint != "80" {
			t.Fatalf("after the handover the job is %+v, want released at row 80", mid)
		}
		close(g.open)
		began := time.Now()
		bR := testRunner(t, st, b, src, long)
		start(t, bR)
		j = wait(t, bR, j.ID)
		if time.Since(began) >= time.Minute {
			t.Fatalf("the takeover waited for the lease")
		}
		checkExact(t, b, j, 200)
		if p := src.pages.Load(); p != 20 {
			t.Errorf("the source served %d pages, want 20 (none twice)", p)
		}
	})
}

// TestCancelWithinOnePage: a cancel recorded by any replica stops the
// source in the page it waits for; the job ends cancelled with its parts
// and checkpoint.
func TestCancelWithinOnePage(t *testing.T) {
	for _, how := range []string{"store", "runner"} {
		t.Run(how, func(t *testing.T) {
			eachStore(t, func(t *testing.T, kind string) {
				st, b := newStore(t, kind), memBucket(t)
				g := newGate(50)
				src := &fakeSource{Rows: 200, Page: 10, before: g.before}
				r := testRunner(t, st, b, src, func(c *RunnerConfig) { c.Lease = 3 * time.Second })
				j, err := r.Submit(context.Background(), newJob("t1", "a"))
				if err != nil {
					t.Fatal(err)
				}
				start(t, r)
				<-g.reached
				if how == "store" {
					_, err = st.Cancel(context.Background(), j.ID)
				} else {
					_, err = r.Cancel(context.Background(), "t1", j.ID)
				}
				if err != nil {
					t.Fatal(err)
				}
				j = wait(t, r, j.ID)
				if j.State != StateCancelled || j.ErrorCode != codeCancelled || j.Checkpoint != "50" || j.Rows != 50 {
					t.Fatalf("job ended %+v, want cancelled at row 50", j)
				}
				if p := src.pages.Load(); p != 5 {
					t.Errorf("the source served %d pages, want 5", p)
				}
				if got := partRows(t, b, j); len(got) != 50 {
					t.Errorf("the parts kept %d rows, want 50", len(got))
				}
				if how == "runner" {
					if m := readManifest(t, b, j); m.State != "CANCELLED" || m.NextPageToken != "50" || m.Rows != 50 {
						t.Errorf("manifest of the cancelled job: %+v", m)
					}
				}
			})
		})
	}
}

func TestSubmitIdempotent(t *testing.T) {
	eachStore(t, func(t *testing.T, kind string) {
		ctx := context.Background()
		st, b := newStore(t, kind), memBucket(t)
		r := testRunner(t, st, b, &fakeSource{Rows: 20, Page: 10}, nil)
		first, err := r.Submit(ctx, newJob("t1", "x"))
		if err != nil {
			t.Fatal(err)
		}
		other := newJob("t1", "x")
		other.Request.Message = []byte("another request")
		if again, _ := r.Submit(ctx, other); again.ID != first.ID {
			t.Errorf("the same request_id made a second job %s", again.ID)
		}
		same := newJob("t1", "y")
		same.Request = first.Request
		if dup, _ := r.Submit(ctx, same); dup.ID != first.ID {
			t.Errorf("an identical pending request made a second job %s", dup.ID)
		}
		if y, _ := r.Submit(ctx, newJob("t1", "y")); y.ID != first.ID {
			t.Errorf("request_id y, given to the identical request, made a job %s", y.ID)
		}
		if t2, _ := r.Submit(ctx, newJob("t2", "x")); t2.ID == first.ID {
			t.Errorf("another tenant's request_id found t1's job")
		}
		if _, err := r.Get(ctx, "t2", first.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("t2 reading t1's job: %v, want ErrNotFound", err)
		}
		start(t, r)
		wait(t, r, first.ID)
		// Done, the request may run again; the request_id still answers.
		again := newJob("t1", "z")
		again.Request = first.Request
		if n, _ := r.Submit(ctx, again); n.ID == first.ID {
			t.Errorf("an identical request after the first ended was not started")
		}
		if x, _ := r.Submit(ctx, newJob("t1", "x")); x.ID != first.ID {
			t.Errorf("request_id x after the job ended made a job %s", x.ID)
		}
	})
}

func TestSweepDeletesExpired(t *testing.T) {
	eachStore(t, func(t *testing.T, kind string) {
		ctx := context.Background()
		st, b := newStore(t, kind), memBucket(t)
		var skew atomic.Int64
		now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
		r := testRunner(t, st, b, &fakeSource{Rows: 60, Page: 10}, func(c *RunnerConfig) { c.Now = now; c.TTL = time.Hour })
		j, _ := r.Submit(ctx, newJob("t1", "a"))
		keep, _ := r.Submit(ctx, newJob("t1", "b"))
		start(t, r)
		j = wait(t, r, j.ID)
		wait(t, r, keep.ID)
		if n, err := r.Sweep(ctx); n != 0 || err != nil {
			t.Fatalf("sweep before the TTL deleted %d (%v)", n, err)
		}
		// Only the first one expires: move its expiry into the past.
		if err := st.Delete(ctx, keep.ID); err != nil {
			t.Fatal(err)
		}
		skew.Store(int64(2 * time.Hour))
		if len(keys(t, b, j)) == 0 {
			t.Fatal("no objects before the sweep")
		}
		if n, err := r.Sweep(ctx); n != 1 || err != nil {
			t.Fatalf("sweep deleted %d (%v), want 1", n, err)
		}
		if _, err := r.Get(ctx, "", j.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("swept job: %v, want ErrNotFound", err)
		}
		if k := keys(t, b, j); len(k) != 0 {
			t.Errorf("objects left after the sweep: %v", k)
		}
	})
}

// TestRedisRestartDuringExport: Redis killed and started again in the
// middle of an export. With persistence the job carries on and ends exact;
// without it the jobs are gone: the owner stops at its next renewal or
// commit, and the parts it committed stay in the bucket.
func TestRedisRestartDuringExport(t *testing.T) {
	t.Run("persisted", func(t *testing.T) {
		srv := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
		st, b := NewRedisStore(srv.Client()), memBucket(t)
		var once sync.Once
		src := &fakeSource{Rows: 200, Page: 10}
		src.before = func(ctx context.Context, off int) error {
			if off == 100 {
				once.Do(srv.Restart)
			}
			return nil
		}
		r := testRunner(t, st, b, src, func(c *RunnerConfig) { c.Lease = 5 * time.Second })
		j, err := r.Submit(context.Background(), newJob("t1", "a"))
		if err != nil {
			t.Fatal(err)
		}
		start(t, r)
		j = wait(t, r, j.ID)
		checkExact(t, b, j, 200)
		if p := src.pages.Load(); p != 20 {
			t.Errorf("the source served %d pages, want 20", p)
		}
	})
	t.Run("empty", func(t *testing.T) {
		srv := redistest.Start(t)
		st, b := NewRedisStore(srv.Client()), memBucket(t)
		var once sync.Once
		src := &fakeSource{Rows: 200, Page: 10}
		src.before = func(ctx context.Context, off int) error {
			if off == 100 {
				once.Do(srv.Restart)
			}
			return nil
		}
		r := testRunner(t, st, b, src, func(c *RunnerConfig) { c.Lease = 5 * time.Second })
		j, err := r.Submit(context.Background(), newJob("t1", "a"))
		if err != nil {
			t.Fatal(err)
		}
		stop := start(t, r)
		deadline := time.Now().Add(10 * time.Second)
		for {
			r.mu.Lock()
			n := len(r.cancels)
			r.mu.Unlock()
			if n == 0 && src.pages.Load() > 10 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the owner did not stop after Redis lost its job")
			}
			time.Sleep(20 * time.Millisecond)
		}
		stop()
		if _, err := st.Get(context.Background(), j.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("after an empty restart the job reads %v, want ErrNotFound", err)
		}
		if p := src.pages.Load(); p > 12 {
			t.Errorf("the owner fetched %d pages, went on well past its lost job", p)
		}
		// What recovers the export: the manifest lists the committed parts
		// and the token after them; a stream from that token gives the rest.
		m := readManifest(t, b, j)
		if m.State != "RUNNING" || len(m.Parts) < 2 || m.NextPageToken == "" {
			t.Fatalf("the manifest left behind: %+v", m)
		}
		rec := &Job{Parts: m.Parts}
		rows := partRows(t, b, rec)
		err = (&fakeSource{Rows: 200, Page: 10}).Run(context.Background(), "t1", Request{}, m.NextPageToken, func(c Chunk) error {
			for _, r := range c.Rows {
				rows = append(rows, int(r.(*structpb.Struct).Fields["n"].GetNumberValue()))
			}
			return nil
		})
		if err != nil || !slices.Equal(rows, upTo(200)) {
			t.Errorf("the manifest's parts and a stream from its token give %d rows, want 0..199 once each (%v)", len(rows), err)
		}
	})
}

// TestRedisCluster: every key of the job store shares one slot, so its
// scripts run on a Redis Cluster, and an export there ends exact.
func TestRedisCluster(t *testing.T) {
	nodes := redistest.Cluster(t, 3)
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{nodes[0].Addr, nodes[1].Addr, nodes[2].Addr}})
	t.Cleanup(func() { _ = c.Close() })
	st, b := NewRedisStore(c), memBucket(t)
	src := &fakeSource{Rows: 200, Page: 10}
	r := testRunner(t, st, b, src, nil)
	j, err := r.Submit(context.Background(), newJob("t1", "a"))
	if err != nil {
		t.Fatal(err)
	}
	if again, err := r.Submit(context.Background(), newJob("t1", "a")); err != nil || again.ID != j.ID {
		t.Fatalf("the same request_id on the cluster: %+v, %v", again, err)
	}
	start(t, r)
	j = wait(t, r, j.ID)
	checkExact(t, b, j, 200)
	if err := r.Delete(context.Background(), "t1", j.ID); err != nil {
		t.Fatal(err)
	}
	if k := keys(t, b, j); len(k) != 0 {
		t.Errorf("objects left after Delete: %v", k)
	}
}
