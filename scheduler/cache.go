package scheduler

import (
	"container/list"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkgate/linkgate/internal/clock"
)

// MemoryCache keeps answers in process: fresh for a TTL, bounded by the
// bytes they hold, least recently used evicted first.
type MemoryCache struct {
	mu       sync.Mutex
	ttl      time.Duration
	maxBytes int
	bytes    int
	lru      *list.List // of *memEntry, most recent first
	byKey    map[string]*list.Element
	clock    clock.Clock
}

type memEntry struct {
	key  string
	body []byte
	at   time.Time
}

// NewMemoryCache returns a cache of at most maxBytes of bodies, each fresh
// for ttl by c (nil: clock.System). A body larger than maxBytes is not kept.
func NewMemoryCache(maxBytes int, ttl time.Duration, c clock.Clock) *MemoryCache {
	return &MemoryCache{ttl: ttl, maxBytes: maxBytes, lru: list.New(), byKey: map[string]*list.Element{}, clock: clock.Or(c)}
}

// Get implements Cache. The body is shared: callers must not modify it.
func (c *MemoryCache) Get(_ context.Context, key string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byKey[key]
	if !ok {
		return nil, false
	}
	me := e.Value.(*memEntry)
	if c.clock.Now().Sub(me.at) > c.ttl {
		c.remove(e)
		return nil, false
	}
	c.lru.MoveToFront(e)
	return me.body, true
}

// Put implements Cache.
func (c *MemoryCache) Put(_ context.Context, key string, body []byte) {
	if len(body) > c.maxBytes {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[key]; ok {
		c.remove(e)
	}
	c.byKey[key] = c.lru.PushFront(&memEntry{key: key, body: body, at: c.clock.Now()})
	c.bytes += len(body)
	for c.bytes > c.maxBytes {
		c.remove(c.lru.Back())
	}
}

// Bytes is what the cache holds now.
func (c *MemoryCache) Bytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}

func (c *MemoryCache) remove(e *list.Element) {
	me := c.lru.Remove(e).(*memEntry)
	delete(c.byKey, me.key)
	c.bytes -= len(me.body)
}

var (
	//go:embed lua/cacheput.lua
	luaCachePut    string
	scriptCachePut = redis.NewScript(luaCachePut)
)

// RedisCache keeps answers in Redis, shared by every replica: an entry per
// key expiring after the TTL, and an index by insertion time with the total
// bytes, so that a put evicts the oldest entries beyond the byte bound in
// the same script. Errors are ignored: a cache that cannot be reached is a
// miss, never a failure.
type RedisCache struct {
	c        redis.UniversalClient
	prefix   string
	ttl      time.Duration
	maxBytes int
}

// NewRedisCache returns a cache of at most maxBytes of bodies under prefix
// in c, each fresh for ttl.
func NewRedisCache(c redis.UniversalClient, prefix string, maxBytes int, ttl time.Duration) *RedisCache {
	return &RedisCache{c: c, prefix: prefix + ":{pages}", ttl: ttl, maxBytes: maxBytes}
}

// entryKey hashes the request key: request keys are long and name targets,
// which need not be readable in Redis.
func (c *RedisCache) entryKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return c.prefix + ":e:" + hex.EncodeToString(sum[:16])
}

// Get implements Cache.
func (c *RedisCache) Get(ctx context.Context, key string) ([]byte, bool) {
	b, err := c.c.Get(ctx, c.entryKey(key)).Bytes()
	if err != nil {
		return nil, false
	}
	return b, true
}

// Put implements Cache.
func (c *RedisCache) Put(ctx context.Context, key string, body []byte) {
	if len(body) > c.maxBytes {
		return
	}
	_ = scriptCachePut.Run(ctx, c.c, []string{c.entryKey(key), c.prefix + ":idx", c.prefix + ":sizes", c.prefix + ":seq"},
		body, c.ttl.Milliseconds(), c.maxBytes).Err()
}

// Bytes is what the index counts as held now (fresh or not yet evicted).
func (c *RedisCache) Bytes(ctx context.Context) (int, error) {
	m, err := c.c.HGetAll(ctx, c.prefix+":sizes").Result()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, v := range m {
		x, _ := strconv.Atoi(v)
		n += x
	}
	return n, nil
}
