-- KEYS: job, active
-- ARGV: id, epoch, lease ms, now
local job, active = KEYS[1], KEYS[2]
local bad = fence(job, ARGV[2])
if bad then return bad end
local now = clock(ARGV[4])
redis.call('HSET', job, 'lease', now + tonumber(ARGV[3]))
redis.call('ZADD', active, now + tonumber(ARGV[3]), ARGV[1])
return read(job)
