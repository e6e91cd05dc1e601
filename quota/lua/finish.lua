-- KEYS[2..7]: the reservation's period.
-- ARGV: now, ttl, id, actual, release (1/0), provisional (1/0), pool limit,
--       tenant limit, keep
-- Reply: {state, remaining}, or 'unknown'.
local k, rk = pkeys(KEYS, 2, ARGV[2]), KEYS[#KEYS]
local now, id, actual = tonumber(ARGV[1]), ARGV[3], tonumber(ARGV[4])
local release, prov = ARGV[5] == '1', ARGV[6] == '1'
local plimit, keep = tonumber(ARGV[7]), ARGV[9]
local r = load(k, rk, id)
if not r then return 'unknown' end
if r.s == 'open' and r.e <= now then expire(k, id, rk, r, keep) end
local tlimit = tlimit_of(KEYS[1], r.t, tonumber(ARGV[8]))

-- charge records actual - already as spend and returns the pool's and the
-- tenant's used figures after it.
local function charge(already)
  local d = actual - already
  local used, tused = add(k, 'pool', 'used', d), add(k, 'tused', r.t, d)
  add(k, 'label', r.t .. '\31' .. r.l, d)
  if actual > r.u then
    add(k, 'pool', 'overruns', 1)
    add(k, 'pool', 'overrun_units', actual - r.u)
  end
  return used, tused
end

if r.s == 'open' and not release then
  -- The common case: the figures of what is left come from the writes.
  local reserved, tres = add(k, 'pool', 'reserved', -r.u), add(k, 'tres', r.t, -r.u)
  redis.call('ZREM', k.lease, id)
  local used, tused = charge(0)
  if prov then provisional(k, r.t, r.l, actual) end
  add(k, 'pool', 'settled', 1)
  r.s, r.a = 'settled', actual
  store(rk, r, keep)
  local left = math.max(0, plimit - used - reserved)
  if tlimit > 0 then left = math.min(left, math.max(0, tlimit - tused - tres)) end
  return {r.s, left}
end
if r.s == 'open' then
  add(k, 'pool', 'reserved', -r.u)
  add(k, 'tres', r.t, -r.u)
  redis.call('ZREM', k.lease, id)
  r.s = 'released'
  store(rk, r, keep)
elseif r.s == 'expired' and not release then
  -- Already charged in full; only an actual above that adds spend.
  if actual > r.u then
    charge(r.u)
    r.a = actual
  end
  r.s = 'settled'
  store(rk, r, keep)
end
return {r.s, room(k, r.t, plimit, tlimit)}
