-- KEYS[2..7]: the current period; KEYS[8..13]: the previous one.
-- ARGV: now, ttl cur, ttl prev, keep, id, tenant, label, units, expires,
--       pool limit, tenant limit
-- Reply: {1, remaining} granted; {0, scope, limit, remaining, reserved} denied.
local now, keep = tonumber(ARGV[1]), ARGV[4]
local k, prev, rk = pkeys(KEYS, 2, ARGV[2]), pkeys(KEYS, 8, ARGV[3]), KEYS[#KEYS]
local id, tenant, label = ARGV[5], ARGV[6], ARGV[7]
local units, expires = tonumber(ARGV[8]), tonumber(ARGV[9])
local plimit = tonumber(ARGV[10])
local tlimit = tlimit_of(KEYS[1], tenant, tonumber(ARGV[11]))

-- The pool remembers what spares most Reserves their sweeps: 'due', when the
-- first open lease of the period may run out (a lower bound; absent:
-- unknown), and 'prev_swept', that the previous period has no open lease
-- left (none is added to a period once it is over).
local p = redis.call('HMGET', k.pool, 'used', 'reserved', 'due', 'prev_swept')
local due = tonumber(p[3])
if not p[4] then
  sweep(prev, now, keep)
  if redis.call('ZCARD', prev.lease) == 0 then hset(k, 'pool', 'prev_swept', '1') end
end
if not due or due <= now then
  due = sweep(k, now, keep)
  hset(k, 'pool', 'due', n(due or 2 ^ 53))
  p = redis.call('HMGET', k.pool, 'used', 'reserved')
end
local used, reserved = tonumber(p[1] or '0'), tonumber(p[2] or '0')
local tu, tr = 0, 0
if tlimit > 0 then tu, tr = hnum(k.tused, tenant), hnum(k.tres, tenant) end
local function left(extra)
  local l = plimit - used - reserved - extra
  if tlimit > 0 then l = math.min(l, tlimit - tu - tr - extra) end
  return math.max(0, l)
end

-- The record is written only if absent: a retried script (its reply was
-- lost and the client sent it again) finds it, and is granted again and
-- counted once.
local r = {s = 'open', u = units, e = expires, a = 0, l = label, t = tenant}
if not redis.call('SET', rk, encode(r), 'NX', 'PX', k.ttl) then
  return {1, left(0)}
end
if used + reserved + units > plimit then
  redis.call('DEL', rk)
  return {0, 'pool', plimit, math.max(0, plimit - used - reserved), reserved}
end
if tlimit > 0 and tu + tr + units > tlimit then
  redis.call('DEL', rk)
  return {0, 'tenant', tlimit, math.max(0, tlimit - tu - tr), tr}
end
add(k, 'tres', tenant, units)
redis.call('ZADD', k.lease, n(expires), id)
if not due or expires < due then hset(k, 'pool', 'due', n(expires)) end
-- With nothing reserved before, no lease was open: ZADD created the lease
-- set, and the pool may be new as well.
if redis.call('HINCRBY', k.pool, 'reserved', n(units)) == units then
  redis.call('PEXPIRE', k.pool, k.ttl)
  redis.call('PEXPIRE', k.lease, k.ttl)
end
return {1, left(units)}
