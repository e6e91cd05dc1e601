-- ARGV: now, ttl cur, ttl prev, id, tenant, label, units, expires, pool limit, tenant limit
-- Reply: {1, remaining} granted; {0, scope, limit, remaining, reserved} denied.
local cur, prev = pkeys(2), pkeys(8)
sweep(prev, now, ARGV[3])
sweep(cur, now, ARGV[2])
local id, tenant, label = ARGV[4], ARGV[5], ARGV[6]
local units, expires = tonumber(ARGV[7]), tonumber(ARGV[8])
local plimit = tonumber(ARGV[9])
local tlimit = tlimit_of(tenant, tonumber(ARGV[10]))

-- A retried script (its reply was lost and the client sent it again) finds
-- its reservation already recorded: grant it again, count it once.
if redis.call('HEXISTS', cur.res, id) == 1 then
  return {1, room(cur, tenant, plimit, tlimit)}
end
local p = redis.call('HMGET', cur.pool, 'used', 'reserved')
local used, reserved = tonumber(p[1] or '0'), tonumber(p[2] or '0')
if used + reserved + units > plimit then
  return {0, 'pool', plimit, math.max(0, plimit - used - reserved), reserved}
end
local left = plimit - used - reserved - units
if tlimit > 0 then
  local tu, tr = hnum(cur.tused, tenant), hnum(cur.tres, tenant)
  if tu + tr + units > tlimit then
    return {0, 'tenant', tlimit, math.max(0, tlimit - tu - tr), tr}
  end
  left = math.min(left, tlimit - tu - tr - units)
end
hincr(cur.pool, 'reserved', units)
hincr(cur.tres, tenant, units)
put(cur, id, {t = tenant, l = label, u = units, e = expires, s = 'open', a = 0})
redis.call('ZADD', cur.lease, n(expires), id)
-- The keys a reservation writes; settling writes the others.
expire_in({cur.pool, cur.tres, cur.res, cur.lease}, ARGV[2])
return {1, left}
