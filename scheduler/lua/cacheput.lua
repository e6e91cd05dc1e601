-- Put one page in the shared cache and keep the cache under its byte bound.
-- KEYS[1]: the entry; KEYS[2]: index (zset entry -> insertion sequence);
-- KEYS[3]: sizes (hash entry -> bytes); KEYS[4]: the insertion sequence.
-- ARGV: body, ttl (ms), max bytes.
local ttl, maxb = tonumber(ARGV[2]), tonumber(ARGV[3])
-- Entries past their TTL have expired by themselves: drop them from the
-- index, oldest first.
while true do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not oldest or redis.call('EXISTS', oldest) == 1 then break end
  redis.call('ZREM', KEYS[2], oldest)
  redis.call('HDEL', KEYS[3], oldest)
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), KEYS[1])
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
for i = 2, 4 do redis.call('PEXPIRE', KEYS[i], ttl + 1000) end
return total
