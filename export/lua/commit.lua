-- KEYS: job, active, expires, idx
-- ARGV: id, epoch, data, state, ecode, emsg, expires, same key, now
local job, active, expires, idx = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id = ARGV[1]
local bad = fence(job, ARGV[2])
if bad then return bad end
redis.call('HSET', job, 'data', ARGV[3], 'state', ARGV[4], 'ecode', ARGV[5], 'emsg', ARGV[6],
  'updated', clock(ARGV[9]))
redis.call('ZADD', expires, ARGV[7], id)
if done(ARGV[4]) then
  redis.call('HSET', job, 'owner', '', 'lease', 0)
  redis.call('ZREM', active, id)
  dropSame(idx, ARGV[8], id)
end
return 'ok'
