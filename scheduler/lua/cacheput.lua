-- Put one page in the shared cache and keep the cache under its byte bound.
-- KEYS[1]: the entry; KEYS[2]: index (zset entry -> insertion ms);
-- KEYS[3]: sizes (hash entry -> bytes).
-- ARGV: body, ttl (ms), max bytes.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl, maxb = tonumber(ARGV[2]), tonumber(ARGV[3])
-- Entries past their TTL have expired by themselves: drop them from the index.
for _, k in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - ttl)) do
  redis.call('ZREM', KEYS[2], k)
  redis.call('HDEL', KEYS[3], k)
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('ZADD', KEYS[2], now, KEYS[1])
redis.call('HSET', KEYS[3], KEYS[1], #ARGV[1])
local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[3])) do total = total + tonumber(v) end
while total > maxb do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not oldest then break end
  total = total - tonumber(redis.call('HGET', KEYS[3], oldest) or '0')
  redis.call('ZREM', KEYS[2], oldest)
  redis.call('HDEL', KEYS[3], oldest)
  redis.call('DEL', oldest)
end
redis.call('PEXPIRE', KEYS[2], ttl + 1000)
redis.call('PEXPIRE', KEYS[3], ttl + 1000)
return total
