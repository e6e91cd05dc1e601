local now = tonumber(ARGV[1])
-- KEYS[2..7]: the reservation's own period.
-- ARGV: now, ttl, id, actual, release (1/0), provisional (1/0), pool limit, tenant limit
-- Reply: {state, remaining}, or 'unknown'.
local k = pkeys(2)
local id, actual, release = ARGV[3], tonumber(ARGV[4]), ARGV[5] == '1'
local prov = ARGV[6] == '1'
local plimit = tonumber(ARGV[7])
local raw = redis.call('HGET', k.res, id)
if not raw then return 'unknown' end
local r = cjson.decode(raw)
if r.s == 'open' and r.e <= now then expire(k, id, r) end

local function charge(already)
  local d = actual - already
  hincr(k.pool, 'used', d)
  hincr(k.tused, r.t, d)
  hincr(k.label, r.t .. "\31" .. r.l, d)
  if actual > r.u then
    hincr(k.pool, 'overruns', 1)
    hincr(k.pool, 'overrun_units', actual - r.u)
  end
end

local function left()
  return room(k, r.t, plimit, tlimit_of(r.t, tonumber(ARGV[8])))
end

if r.s == 'open' then
  hincr(k.pool, 'reserved', -r.u)
  hincr(k.tres, r.t, -r.u)
  redis.call('ZREM', k.lease, id)
  if release then
    r.s = 'released'
  else
    charge(0)
    if prov then provisional(k, r.t, r.l, actual) end
    hincr(k.pool, 'settled', 1)
    r.s = 'settled'
    r.a = actual
  end
elseif r.s == 'expired' and not release then
  if actual > r.u then
    charge(r.u)
    r.a = actual
  end
  r.s = 'settled'
else
  return {r.s, left()}
end
put(k, id, r)
-- Reserve set the TTL of the keys it wrote; a charge may create these.
expire_in({k.tused, k.label}, ARGV[2])
return {r.s, left()}
