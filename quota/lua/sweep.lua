-- KEYS: the period, the one before it.
-- ARGV: now, ttl of each, keep
-- sweep does what Reserve and Finish leave to it (they reply 'sweep'): it
-- charges lapsed leases, drops
-- finished records whose time has come, and sets 'due', when a record of
-- the period or an open lease of the one before may first need it again (a
-- lower bound). 'swept' says that the period before has no open lease left
-- (none is added to a period once it is over), so it need not be read.
local function sweep(KEYS, ARGV)
  local now, keep = tonumber(ARGV[1]), tonumber(ARGV[4])
  local cur = P.open(KEYS[1], ARGV[2])
  local due = P.sweep(cur, now, keep) or 2 ^ 53
  if not P.get(cur, 'swept') then
    local prev = P.open(KEYS[2], ARGV[3])
    local first, open = P.sweep(prev, now, keep)
    P.flush(prev)
    if open then due = math.min(due, first) else P.set(cur, 'swept', 1) end
  end
  P.set(cur, 'due', due)
  P.flush(cur)
  return true
end
