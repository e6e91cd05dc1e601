-- KEYS: limits, the current period, the previous one.
-- ARGV: now, ttl cur, ttl prev, keep, upstream used, adopt (1/0), the
--       current period's key, lost (1/0), the number of override pairs
--       that follow (-1: the caller never read them), those pairs (tenant,
--       limit), then pairs of tenant and spend of the current period, all
--       as the caller last read them (engine.go's Seed).
-- Reply: {used, reserved, adopted, corrected, rebuilt (1/0)}.
local function reconcile(KEYS, ARGV)
  local cur = P.current(KEYS, ARGV)
  local upstream, period, lost = tonumber(ARGV[5]), ARGV[7], ARGV[8] == '1'
  local used, reserved = P.num(cur, 'used'), P.num(cur, 'reserved')
  local adopted, corrected = 0, 0
  local novr = tonumber(ARGV[9])
  -- A new period the store knows to follow its last one opens as Reserve
  -- opens it; only an unknown one is rebuilt.
  local rebuilt = not P.get(cur, 'opened') and not open(KEYS[1], KEYS[2], ARGV[1])
  if not rebuilt then P.set(cur, 'opened', P.get(cur, 'opened') or ARGV[1]) end
  local marker = redis.call('HGET', KEYS[1], '')
  -- Overrides the store lost (with the marker) come back from the caller's
  -- copy, where none newer was set (engine.go's restoreOverrides).
  if (lost or not marker) and novr >= 0 then
    for i = 10, 9 + 2 * novr, 2 do redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) end
    if not marker or marker < period then
      marker = period
      redis.call('HSET', KEYS[1], '', period)
    end
  end
  -- A period not opened is rebuilt: the tenants' spend is raised to what
  -- the caller last read, the upstream's figure adopted whatever the
  -- reset dates say (engine.go's rebuild).
  if rebuilt or lost then
    for i = 10 + 2 * math.max(novr, 0), #ARGV - 1, 2 do
      local f, v = tfield('u', ARGV[i]), tonumber(ARGV[i + 1])
      if v > P.num(cur, f) then P.set(cur, f, v) end
    end
    if rebuilt then P.set(cur, 'opened', ARGV[1]) end
    if not marker or marker < period then redis.call('HSET', KEYS[1], '', period) end
  end
  if ARGV[6] == '1' or rebuilt then
    -- In-flight reservations may already be spent upstream: adopt only the
    -- part above used + reserved so they are not counted twice.
    if upstream - used - reserved > 0 then
      adopted = upstream - used - reserved
      P.add(cur, 'used', adopted)
      P.add(cur, rebuilt and 'rebuilt' or 'external', adopted)
    end
  end
  if ARGV[6] == '1' and not rebuilt then
    -- Provisional charges the upstream never made come back down, never
    -- below confirmed spend; the rest are confirmed by this reading.
    local down = math.min(P.num(cur, 'provisional'), math.max(0, used - upstream))
    corrected = down
    local prov = {}
    for f, x in pairs(cur.v) do
      if x and string.sub(f, 1, 5) == 'prov\30' then prov[#prov + 1] = f end
    end
    table.sort(prov)
    for _, f in ipairs(prov) do
      local d = math.min(down, P.num(cur, f))
      if d > 0 then
        local rest = string.sub(f, 6)
        local tenant = string.sub(rest, 1, string.find(rest, '\31', 1, true) - 1)
        P.add(cur, 'used', -d)
        P.add(cur, tfield('u', tenant), -d)
        P.add(cur, 'l\30' .. rest, -d)
        P.add(cur, 'corrected', d)
        down = down - d
      end
      P.del(cur, f)
    end
    P.set(cur, 'provisional', 0)
  end
  P.set(cur, 'upstream', upstream)
  P.set(cur, 'drift', upstream - used)
  P.flush(cur)
  return {used, reserved, adopted, corrected, rebuilt and 1 or 0}
end
