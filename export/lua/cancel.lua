-- KEYS: job, active, idx
-- ARGV: id, same key, now
local job, active, idx = KEYS[1], KEYS[2], KEYS[3]
local st = redis.call('HMGET', job, 'state', 'lease')
if not st[1] then return 'nf' end
if not done(st[1]) then
  local now = clock(ARGV[3])
  redis.call('HSET', job, 'cancel', 1, 'updated', now)
  if tonumber(st[2]) <= now then
    -- Nobody runs it: it ends here, and the epoch moves so that an owner
    -- whose lease ran out cannot write over the end.
    redis.call('HINCRBY', job, 'epoch', 1)
    redis.call('HSET', job, 'state', 5, 'ecode', 1, 'emsg', 'export cancelled', 'owner', '', 'lease', 0)
    redis.call('ZREM', active, ARGV[1])
    dropSame(idx, ARGV[2], ARGV[1])
  end
end
return read(job)
