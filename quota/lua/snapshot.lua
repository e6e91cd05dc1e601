-- ARGV: now, ttl cur, ttl prev
local cur, prev = pkeys(2), pkeys(8)
sweep(prev, now, ARGV[3])
sweep(cur, now, ARGV[2])
return {redis.call('HGETALL', cur.pool), redis.call('HGETALL', cur.tused),
        redis.call('HGETALL', cur.tres), redis.call('HGETALL', cur.label),
        redis.call('HGETALL', KEYS[1])}
