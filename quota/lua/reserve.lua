-- KEYS: limits, the current period.
-- ARGV: now, id, tenant, label, units, expires, pool limit, tenant limit,
--       and the reservation's record, which the caller encodes
-- Reply: what the tenant may still reserve, granted; {scope, limit,
-- remaining, reserved, when the period was opened or rebuilt}, denied; 'sweep' when the period needs one first;
-- 'unknown' when the period's ledger is unknown (common.lua).
local function reserve(KEYS, ARGV)
  local tenant, rec = ARGV[3], 'o\30' .. ARGV[2]
  local tu, tr, tl = 'u\30' .. tenant, 'r\30' .. tenant, 'lim\30' .. tenant
  local p = redis.call('HMGET', KEYS[2], 'v', 'due', rec, 'used', 'reserved', tu, tr, tl, 'opened')
  local due = tonumber(p[2])
  if p[1] ~= LAYOUT or not due or due <= tonumber(ARGV[1]) then return 'sweep' end
  if not p[9] and not open(KEYS[1], KEYS[2], ARGV[1]) then return 'unknown' end
  local tlimit, copy = tlimit_of(KEYS[1], tenant, ARGV[8], p[8])
  local used, reserved, tused, tres = tonumber(p[4]) or 0, tonumber(p[5]) or 0, tonumber(p[6]) or 0, tonumber(p[7]) or 0
  local units, plimit = tonumber(ARGV[5]), tonumber(ARGV[7])
  -- A retried call (its reply was lost and the client sent it again) finds
  -- the record, and is granted again and counted once.
  if p[3] then return left(plimit, used, reserved, tlimit, tused, tres) end
  if used + reserved + units > plimit then
    return {'pool', plimit, math.max(0, plimit - used - reserved), reserved, num(p[9])}
  end
  if tlimit > 0 and tused + tres + units > tlimit then
    return {'tenant', tlimit, math.max(0, tlimit - tused - tres), tres, num(p[9])}
  end
  reserved, tres = reserved + units, tres + units
  -- The record's lease runs out after 'due' but for the first lease after
  -- a sweep, and the limit is copied but for the tenant's first Reserve of
  -- the period: the common write is one call with its fields written out,
  -- as a table costs more than the call.
  if tonumber(ARGV[6]) >= due and p[8] then
    redis.call('HSET', KEYS[2], 'reserved', n(reserved), tr, n(tres), rec, ARGV[9])
  else
    redis.call('HSET', KEYS[2], 'reserved', n(reserved), tr, n(tres), rec, ARGV[9],
      'due', n(math.min(due, tonumber(ARGV[6]))), tl, copy)
  end
  return left(plimit, used, reserved, tlimit, tused, tres)
end
