package export

import (
	"sync"
	"time"
)

// NewMemoryStore returns a Store in this process's memory: for tests and a
// single replica that may lose its jobs on restart. now is its clock (nil:
// time.Now).
func NewMemoryStore(now func() time.Time) Store {
	m := &memTx{jobsByID: map[string]*Job{}, idx: map[string]string{}}
	var mu sync.Mutex
	run := func(fn func(localTx) error) error {
		mu.Lock()
		defer mu.Unlock()
		return fn(m)
	}
	if now == nil {
		now = time.Now
	}
	return &localStore{update: run, view: run, now: now}
}

// memTx keeps clones, so no caller shares a job with the store.
type memTx struct {
	jobsByID map[string]*Job
	idx      map[string]string
}

func (m *memTx) get(id string) (*Job, error) {
	j, ok := m.jobsByID[id]
	if !ok {
		return nil, ErrNotFound
	}
	return j.Clone(), nil
}

func (m *memTx) put(j *Job) error { m.jobsByID[j.ID] = j.Clone(); return nil }

func (m *memTx) del(id string) error { delete(m.jobsByID, id); return nil }

func (m *memTx) jobs(active bool) ([]*Job, error) {
	var out []*Job
	for _, j := range m.jobsByID {
		if !active || !j.State.Done() {
			out = append(out, j.Clone())
		}
	}
	return out, nil
}

func (m *memTx) index(key string) string { return m.idx[key] }

func (m *memTx) setIndex(key, id string) error { m.idx[key] = id; return nil }

func (m *memTx) delIndex(key string) error { delete(m.idx, key); return nil }
