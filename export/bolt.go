package export

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The bolt store keeps its jobs in a bucket of their own in the file the
// ledger opens, so the embedded default needs no second file: jobs by id
// (JSON), the ids not yet done, and the request index.
var (
	boltRoot   = []byte("exports")
	boltJobs   = []byte("jobs")
	boltActive = []byte("active")
	boltIndex  = []byte("index")
)

// NewBoltStore returns a Store in db, creating its buckets. Every write is
// one fsynced transaction, so a committed checkpoint survives kill -9. now
// is its clock (nil: time.Now).
func NewBoltStore(db *bolt.DB, now func() time.Time) (Store, error) {
	err := db.Update(func(tx *bolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists(boltRoot)
		if err != nil {
			return err
		}
		for _, name := range [][]byte{boltJobs, boltActive, boltIndex} {
			if _, err := root.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("export: creating the bolt buckets: %w", err)
	}
	if now == nil {
		now = time.Now
	}
	wrap := func(run func(func(*bolt.Tx) error) error) func(func(localTx) error) error {
		return func(fn func(localTx) error) error {
			return run(func(tx *bolt.Tx) error {
				root := tx.Bucket(boltRoot)
				return fn(&boltTx{byID: root.Bucket(boltJobs), active: root.Bucket(boltActive), idx: root.Bucket(boltIndex)})
			})
		}
	}
	return &localStore{update: wrap(db.Update), view: wrap(db.View), now: now}, nil
}

type boltTx struct{ byID, active, idx *bolt.Bucket }

func (b *boltTx) get(id string) (*Job, error) {
	v := b.byID.Get([]byte(id))
	if v == nil {
		return nil, ErrNotFound
	}
	return decodeJob(v)
}

func decodeJob(v []byte) (*Job, error) {
	j := new(Job)
	if err := json.Unmarshal(v, j); err != nil {
		return nil, fmt.Errorf("export: decoding a job: %w", err)
	}
	return j, nil
}

func (b *boltTx) put(j *Job) error {
	v, err := json.Marshal(j)
	if err != nil {
		return err
	}
	if err := b.byID.Put([]byte(j.ID), v); err != nil {
		return err
	}
	if j.State.Done() {
		return b.active.Delete([]byte(j.ID))
	}
	return b.active.Put([]byte(j.ID), nil)
}

func (b *boltTx) del(id string) error {
	if err := b.active.Delete([]byte(id)); err != nil {
		return err
	}
	return b.byID.Delete([]byte(id))
}

func (b *boltTx) jobs(active bool) ([]*Job, error) {
	var out []*Job
	if active {
		err := b.active.ForEach(func(k, _ []byte) error {
			j, err := b.get(string(k))
			out = append(out, j)
			return err
		})
		return out, err
	}
	err := b.byID.ForEach(func(_, v []byte) error {
		j, err := decodeJob(v)
		out = append(out, j)
		return err
	})
	return out, err
}

func (b *boltTx) index(key string) string { return string(b.idx.Get([]byte(key))) }

func (b *boltTx) setIndex(key, id string) error { return b.idx.Put([]byte(key), []byte(id)) }

func (b *boltTx) delIndex(key string) error { return b.idx.Delete([]byte(key)) }
