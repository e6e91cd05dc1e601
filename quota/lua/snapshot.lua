-- KEYS: limits, the current period, the previous one.
-- ARGV: now, ttl cur, ttl prev, keep
-- Reply: {the current period's counters, the limits}, each a flat list.
local function snapshot(KEYS, ARGV)
  local cur = P.current(KEYS, ARGV)
  P.flush(cur)
  return {P.counters(cur), redis.call('HGETALL', KEYS[1])}
end
