package service

import (
	"container/list"
	"sync"
	"time"

	"github.com/linkgate/linkgate/upstream"
)

// pageCache keeps recent upstream pages, so that asking again for a page
// (a UI reloading its first page, two services reading the same target)
// costs nothing and is served even when the budget is spent. It is bounded
// by rows, evicts the least recently used page, and forgets a page after a
// TTL as short as the upstream's own cache, so data stays as fresh.
type pageCache struct {
	mu      sync.Mutex
	ttl     time.Duration
	maxRows int
	rows    int
	lru     *list.List // of *cachedPage, most recent first
	byKey   map[string]*list.Element
	now     func() time.Time
}

type cachedPage struct {
	key  string
	rows []upstream.Record
	at   time.Time
}

func newPageCache(maxRows int, ttl time.Duration, now func() time.Time) *pageCache {
	if maxRows <= 0 || ttl <= 0 {
		return nil
	}
	return &pageCache{ttl: ttl, maxRows: maxRows, lru: list.New(), byKey: map[string]*list.Element{}, now: now}
}

// pageKey identifies an upstream request by everything that shapes its
// answer: the endpoint and the encoded parameters.
func pageKey(q *upstream.Query) (string, bool) {
	v, err := q.Values()
	if err != nil {
		return "", false
	}
	return string(q.Endpoint) + "?" + v.Encode(), true
}

// get returns a cached page. Rows are shared: callers must not modify them.
func (c *pageCache) get(key string) ([]upstream.Record, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byKey[key]
	if !ok {
		return nil, false
	}
	cp := e.Value.(*cachedPage)
	if c.now().Sub(cp.at) > c.ttl {
		c.remove(e)
		return nil, false
	}
	c.lru.MoveToFront(e)
	return cp.rows, true
}

func (c *pageCache) put(key string, rows []upstream.Record) {
	if c == nil || len(rows) > c.maxRows {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[key]; ok {
		c.remove(e)
	}
	c.byKey[key] = c.lru.PushFront(&cachedPage{key: key, rows: rows, at: c.now()})
	c.rows += len(rows)
	for c.rows > c.maxRows {
		c.remove(c.lru.Back())
	}
}

func (c *pageCache) remove(e *list.Element) {
	cp := c.lru.Remove(e).(*cachedPage)
	delete(c.byKey, cp.key)
	c.rows -= len(cp.rows)
}
