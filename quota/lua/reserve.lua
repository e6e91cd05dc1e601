-- The hash remembers what spares most Reserves their sweeps: 'due', when a
-- record of the period may first need one (a lower bound), and 'swept', that
-- the previous period has no open lease left (none is added to a period once
-- it is over). A hash of the earlier layout, or none yet, has no 'swept'.
local function housekeep(KEYS, ARGV, now)
  local keep = tonumber(ARGV[4])
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
end

-- KEYS: limits, the current period, the previous one.
-- ARGV: now, ttl cur, ttl prev, keep, id, tenant, label, units, expires,
--       pool limit, tenant limit
-- Reply: what the tenant may still reserve, granted; {scope, limit,
-- remaining, reserved}, denied.
local function reserve(KEYS, ARGV)
  local now, tenant, rec = tonumber(ARGV[1]), ARGV[6], 'o\30' .. ARGV[5]
  local tu, tr, tl = 'u\30' .. tenant, 'r\30' .. tenant, 'lim\30' .. tenant
  local p = redis.call('HMGET', KEYS[2], 'swept', 'due', rec, 'used', 'reserved', tu, tr, tl)
  local due = tonumber(p[2])
  if not p[1] or not due or due <= now then
    housekeep(KEYS, ARGV, now)
    p = redis.call('HMGET', KEYS[2], 'swept', 'due', rec, 'used', 'reserved', tu, tr, tl)
    due = tonumber(p[2])
  end
  local tlimit, copy = tlimit_of(KEYS[1], tenant, ARGV[11], p[8])
  local used, reserved, tused, tres = tonumber(p[4]) or 0, tonumber(p[5]) or 0, tonumber(p[6]) or 0, tonumber(p[7]) or 0
  local units, plimit = tonumber(ARGV[8]), tonumber(ARGV[10])
  -- A retried call (its reply was lost and the client sent it again) finds
  -- the record, and is granted again and counted once.
  if p[3] then return left(plimit, used, reserved, tlimit, tused, tres) end
  if used + reserved + units > plimit then
    return {'pool', plimit, math.max(0, plimit - used - reserved), reserved}
  end
  if tlimit > 0 and tused + tres + units > tlimit then
    return {'tenant', tlimit, math.max(0, tlimit - tused - tres), tres}
  end
  reserved, tres = reserved + units, tres + units
  local fv = {'reserved', n(reserved), tr, n(tres), rec, record('open', ARGV[8], ARGV[9], '0', ARGV[7], tenant)}
  if tonumber(ARGV[9]) < due then fv[#fv + 1], fv[#fv + 2] = 'due', ARGV[9] end
  if not p[8] then fv[#fv + 1], fv[#fv + 2] = tl, copy end
  redis.call('HSET', KEYS[2], unpack(fv))
  return left(plimit, used, reserved, tlimit, tused, tres)
end
