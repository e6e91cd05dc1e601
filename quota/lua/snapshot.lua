-- ARGV: now, ttl cur, ttl prev, keep
local now, keep = tonumber(ARGV[1]), ARGV[4]
local cur, prev = pkeys(KEYS, 2, ARGV[2]), pkeys(KEYS, 8, ARGV[3])
sweep(prev, now, keep)
sweep(cur, now, keep)
return {redis.call('HGETALL', cur.pool), redis.call('HGETALL', cur.tused),
        redis.call('HGETALL', cur.tres), redis.call('HGETALL', cur.label),
        redis.call('HGETALL', KEYS[1])}
