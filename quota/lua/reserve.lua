-- KEYS: limits, the current period, the previous one.
-- ARGV: now, ttl cur, ttl prev, keep, id, tenant, label, units, expires,
--       pool limit, tenant limit
-- Reply: {1, remaining} granted; {0, scope, limit, remaining, reserved} denied.
local now, keep = tonumber(ARGV[1]), tonumber(ARGV[4])
local id, tenant, label = ARGV[5], ARGV[6], ARGV[7]
local units, expires = tonumber(ARGV[8]), tonumber(ARGV[9])
local plimit = tonumber(ARGV[10])
local rec, tu, tr, tl = 'o\30' .. id, tfield('u', tenant), tfield('r', tenant), tfield('lim', tenant)
local function fetch()
  return redis.call('HMGET', KEYS[2], 'swept', 'due', rec, 'used', 'reserved', tu, tr, tl)
end
local p = fetch()

-- The hash remembers what spares most Reserves their sweeps: 'due', when
-- a record of the period may first need one (a lower bound), and 'swept',
-- that the previous period has no open lease left (none is added to a
-- period once it is over). A hash of the earlier layout, or none yet, has
-- no 'swept'.
if not p[1] or num(p[2]) <= now then
  local P = periods()
  local cur = P.open(KEYS[2], ARGV[2])
  if not P.get(cur, 'swept') then
    local prev = P.open(KEYS[3], ARGV[3])
    local _, open = P.sweep(prev, now, keep)
    P.flush(prev)
    if not open then P.set(cur, 'swept', 1) end
  end
  if num(P.get(cur, 'due')) <= now then
    P.set(cur, 'due', (P.sweep(cur, now, keep)) or 2 ^ 53)
  end
  P.flush(cur)
  p = fetch()
end

local tlimit, copy = tlimit_of(KEYS[1], tenant, tonumber(ARGV[11]), p[8])
local used, reserved, tused, tres = num(p[4]), num(p[5]), num(p[6]), num(p[7])
-- A retried script (its reply was lost and the client sent it again) finds
-- the record, and is granted again and counted once.
if p[3] then return {1, left(plimit, used, reserved, tlimit, tused, tres)} end
if used + reserved + units > plimit then
  return {0, 'pool', plimit, math.max(0, plimit - used - reserved), reserved}
end
if tlimit > 0 and tused + tres + units > tlimit then
  return {0, 'tenant', tlimit, math.max(0, tlimit - tused - tres), tres}
end
reserved, tres = reserved + units, tres + units
local fv = {'reserved', n(reserved), tr, n(tres), rec, record('open', ARGV[8], ARGV[9], '0', label, tenant)}
if expires < num(p[2]) then fv[#fv + 1], fv[#fv + 2] = 'due', ARGV[9] end
if not p[8] then fv[#fv + 1], fv[#fv + 2] = tl, copy end
redis.call('HSET', KEYS[2], unpack(fv))
return {1, left(plimit, used, reserved, tlimit, tused, tres)}
