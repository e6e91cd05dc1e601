-- KEYS: limits, the current period, the previous one.
-- ARGV: now, ttl cur, ttl prev, keep, id, tenant, label, units, expires,
--       pool limit, tenant limit
-- Reply: {1, remaining} granted; {0, scope, limit, remaining, reserved} denied.
local now, keep = tonumber(ARGV[1]), tonumber(ARGV[4])
local id, tenant, label = ARGV[5], ARGV[6], ARGV[7]
local units, expires = tonumber(ARGV[8]), tonumber(ARGV[9])
local plimit = tonumber(ARGV[10])
local rec, tu, tr = 'o\30' .. id, tfield('u', tenant), tfield('r', tenant)
local function fetch()
  return redis.call('HMGET', KEYS[2], 'v', 'prev_swept', 'due', rec, 'used', 'reserved', tu, tr)
end
local p = fetch()

-- The hash remembers what spares most Reserves their sweeps: 'due', when
-- a record of the period may first need one (a lower bound), and
-- 'prev_swept', that the previous period has no open lease left (none is
-- added to a period once it is over). A hash of the earlier layout, or none
-- yet, has neither.
if p[1] ~= LAYOUT or not p[2] or num(p[3]) <= now then
  local P = periods()
  local cur = P.open(KEYS[2], ARGV[2])
  if not P.get(cur, 'prev_swept') then
    local prev = P.open(KEYS[3], ARGV[3])
    local _, open = P.sweep(prev, now, keep)
    P.flush(prev)
    if not open then P.set(cur, 'prev_swept', 1) end
  end
  if num(P.get(cur, 'due')) <= now then
    P.set(cur, 'due', (P.sweep(cur, now, keep)) or 2 ^ 53)
  end
  P.flush(cur)
  p = fetch()
end

local tlimit = tlimit_of(KEYS[1], tenant, tonumber(ARGV[11]))
local used, reserved, tused, tres = num(p[5]), num(p[6]), num(p[7]), num(p[8])
-- A retried script (its reply was lost and the client sent it again) finds
-- the record, and is granted again and counted once.
if p[4] then return {1, left(plimit, used, reserved, tlimit, tused, tres)} end
if used + reserved + units > plimit then
  return {0, 'pool', plimit, math.max(0, plimit - used - reserved), reserved}
end
if tlimit > 0 and tused + tres + units > tlimit then
  return {0, 'tenant', tlimit, math.max(0, tlimit - tused - tres), tres}
end
reserved, tres = reserved + units, tres + units
local r = record('open', ARGV[8], ARGV[9], '0', label, tenant)
if expires < num(p[3]) then
  redis.call('HSET', KEYS[2], 'reserved', n(reserved), tr, n(tres), rec, r, 'due', n(expires))
else
  redis.call('HSET', KEYS[2], 'reserved', n(reserved), tr, n(tres), rec, r)
end
return {1, left(plimit, used, reserved, tlimit, tused, tres)}
