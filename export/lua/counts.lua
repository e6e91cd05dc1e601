-- KEYS: active
-- ARGV: now
local now = clock(ARGV[1])
return {redis.call('ZCOUNT', KEYS[1], '-inf', now), redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')}
