-- ARGV: now, ttl cur, ttl prev, id, tenant, label, units, expires, pool limit, tenant limit
local cur, prev = pkeys(2), pkeys(8)
sweep(prev, now, ARGV[3])
sweep(cur, now, ARGV[2])
local id, tenant, label = ARGV[4], ARGV[5], ARGV[6]
local units, expires = tonumber(ARGV[7]), tonumber(ARGV[8])
local plimit, tlimit = tonumber(ARGV[9]), tonumber(ARGV[10])

local used, reserved = hnum(cur.pool, 'used'), hnum(cur.pool, 'reserved')
if used + reserved + units > plimit then
  return {0, 'pool', plimit, math.max(0, plimit - used - reserved)}
end
local override = redis.call('HGET', KEYS[1], tenant)
if override then tlimit = tonumber(override) end
if tlimit > 0 then
  local tu, tr = hnum(cur.tused, tenant), hnum(cur.tres, tenant)
  if tu + tr + units > tlimit then
    return {0, 'tenant', tlimit, math.max(0, tlimit - tu - tr)}
  end
end
hincr(cur.pool, 'reserved', units)
hincr(cur.tres, tenant, units)
put(cur, id, {t = tenant, l = label, u = units, e = expires, s = 'open', a = 0})
redis.call('ZADD', cur.lease, n(expires), id)
touch(cur, ARGV[2])
return {1}
