-- Pause every replica's requests on the key after an upstream 429.
-- KEYS[2]: pause-until (µs). ARGV[1]: the pause (µs), from Retry-After.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local untilT = now + tonumber(ARGV[1])
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
if untilT > cur then
  redis.call('SET', KEYS[2], string.format('%d', untilT), 'PX', math.ceil(tonumber(ARGV[1]) / 1000) + 1000)
end
return 0
