-- KEYS: job, active
-- ARGV: id, epoch, now
local job, active = KEYS[1], KEYS[2]
local bad = fence(job, ARGV[2])
if bad then return bad end
redis.call('HSET', job, 'owner', '', 'lease', 0, 'updated', clock(ARGV[3]))
redis.call('ZADD', active, tonumber(redis.call('HGET', job, 'created')) - QUEUED, ARGV[1])
return 'ok'
