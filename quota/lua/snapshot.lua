-- KEYS: limits, the current period, the previous one.
-- ARGV: now, ttl cur, ttl prev, keep
-- Reply: {the current period's counters, the limits}, each a flat list.
local function snapshot(KEYS, ARGV)
  local now, keep = tonumber(ARGV[1]), tonumber(ARGV[4])
  local cur, prev = P.open(KEYS[2], ARGV[2]), P.open(KEYS[3], ARGV[3])
  P.sweep(prev, now, keep)
  P.flush(prev)
  P.sweep(cur, now, keep)
  P.flush(cur)
  return {P.counters(cur), redis.call('HGETALL', KEYS[1])}
end
