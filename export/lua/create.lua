-- KEYS: job, active, all, tenant, expires, idx
-- ARGV: prefix, id, request key or '', same key, data, created, expires, tenant, now
local job, active, all, byTenant, expires, idx = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local prefix, id, rk, sk = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if rk ~= '' then
  local old = redis.call('HGET', idx, rk)
  if old and redis.call('EXISTS', prefix .. old) == 1 then return {'old', old} end
end
local old = redis.call('HGET', idx, sk)
if old then
  local st = redis.call('HGET', prefix .. old, 'state')
  if st and not done(st) then
    if rk ~= '' then redis.call('HSET', idx, rk, old) end
    return {'old', old}
  end
end
if redis.call('EXISTS', job) == 1 then return {'exists'} end
local created, now = tonumber(ARGV[6]), clock(ARGV[9])
redis.call('HSET', job, 'data', ARGV[5], 'state', 1, 'epoch', 0, 'owner', '', 'lease', 0, 'cancel', 0,
  'ecode', 0, 'emsg', '', 'tenant', ARGV[8], 'created', created, 'updated', now)
redis.call('ZADD', active, created - QUEUED, id)
redis.call('ZADD', all, created, id)
redis.call('ZADD', byTenant, created, id)
redis.call('ZADD', expires, ARGV[7], id)
redis.call('HSET', idx, sk, id)
if rk ~= '' then redis.call('HSET', idx, rk, id) end
return {'new', id}
