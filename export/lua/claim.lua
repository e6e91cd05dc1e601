-- KEYS: active
-- ARGV: prefix, owner, lease ms, max per tenant (0: none), now
local active, prefix, owner = KEYS[1], ARGV[1], ARGV[2]
local lease, most, now = tonumber(ARGV[3]), tonumber(ARGV[4]), clock(ARGV[5])
local live = {}
if most > 0 then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', active, '(' .. now, '+inf')) do
    local t = redis.call('HGET', prefix .. id, 'tenant')
    if t then live[t] = (live[t] or 0) + 1 end
  end
end
local from = 0
while true do
  local ids = redis.call('ZRANGEBYSCORE', active, '-inf', now, 'LIMIT', from, 100)
  if #ids == 0 then return false end
  for _, id in ipairs(ids) do
    local key = prefix .. id
    local t = redis.call('HGET', key, 'tenant')
    if not t then
      redis.call('ZREM', active, id) -- deleted under it
    elseif most == 0 or (live[t] or 0) < most then
      redis.call('HINCRBY', key, 'epoch', 1)
      redis.call('HSET', key, 'state', 2, 'owner', owner, 'lease', now + lease, 'updated', now)
      redis.call('ZADD', active, now + lease, id)
      return read(key)
    end
  end
  from = from + #ids
end
