-- KEYS: limits, then the hashes of the periods whose copy of the tenant's
-- limit the change drops.
-- ARGV: tenant, limit ('': remove the override)
local function limit(KEYS, ARGV)
  if ARGV[2] == '' then
    redis.call('HDEL', KEYS[1], ARGV[1])
  else
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  end
  for i = 2, #KEYS do redis.call('HDEL', KEYS[i], tfield('lim', ARGV[1])) end
  return true
end
