-- ARGV: now, ttl cur, ttl prev, keep, upstream used, adopt (1/0)
local now, keep = tonumber(ARGV[1]), ARGV[4]
local cur, prev = pkeys(KEYS, 2, ARGV[2]), pkeys(KEYS, 8, ARGV[3])
sweep(prev, now, keep)
sweep(cur, now, keep)
local upstream = tonumber(ARGV[5])
local used, reserved = hnum(cur.pool, 'used'), hnum(cur.pool, 'reserved')
local adopted, corrected = 0, 0
if ARGV[6] == '1' then
  -- In-flight reservations may already be spent upstream: adopt only the
  -- part above used + reserved so they are not counted twice.
  if upstream - used - reserved > 0 then
    adopted = upstream - used - reserved
    add(cur, 'pool', 'used', adopted)
    add(cur, 'pool', 'external', adopted)
  end
  -- Provisional charges the upstream never made come back down, never
  -- below confirmed spend; the rest are confirmed by this reading.
  local down = math.min(hnum(cur.pool, 'provisional'), math.max(0, used - upstream))
  corrected = down
  local fields = {}
  local all = redis.call('HGETALL', cur.pool)
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 5) == 'prov\30' then table.insert(fields, all[i]) end
  end
  table.sort(fields)
  for _, f in ipairs(fields) do
    local v = hnum(cur.pool, f)
    local d = math.min(down, v)
    if d > 0 then
      local rest = string.sub(f, 6)
      local sep = string.find(rest, '\31', 1, true)
      local tenant = string.sub(rest, 1, sep - 1)
      add(cur, 'pool', 'used', -d)
      add(cur, 'tused', tenant, -d)
      add(cur, 'label', rest, -d)
      add(cur, 'pool', 'corrected', d)
      down = down - d
    end
    redis.call('HDEL', cur.pool, f)
  end
  redis.call('HSET', cur.pool, 'provisional', '0')
end
redis.call('HSET', cur.pool, 'upstream', n(upstream), 'drift', n(upstream - used))
redis.call('PEXPIRE', cur.pool, cur.ttl)
return {used, reserved, adopted, corrected}
