-- KEYS: limits, the current period, the previous one.
-- ARGV: now, ttl cur, ttl prev, keep, upstream used, adopt (1/0)
local function reconcile(KEYS, ARGV)
  local cur = P.current(KEYS, ARGV)
  local upstream = tonumber(ARGV[5])
  local used, reserved = P.num(cur, 'used'), P.num(cur, 'reserved')
  local adopted, corrected = 0, 0
  if ARGV[6] == '1' then
    -- In-flight reservations may already be spent upstream: adopt only the
    -- part above used + reserved so they are not counted twice.
    if upstream - used - reserved > 0 then
      adopted = upstream - used - reserved
      P.add(cur, 'used', adopted)
      P.add(cur, 'external', adopted)
    end
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
  return {used, reserved, adopted, corrected}
end
