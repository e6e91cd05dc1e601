-- GCRA without burst for one upstream key, on the server's clock.
-- KEYS[1]: theoretical arrival time of the next slot (µs); KEYS[2]: pause-until (µs).
-- ARGV[1]: interval between slots (µs).
-- Reply: 0 when a slot was taken, else the µs until the next one.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local pause = tonumber(redis.call('GET', KEYS[2]) or '0')
if pause > now then return pause - now end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat > now then return tat - now end
local interval = tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%d', now + interval), 'PX', math.ceil(interval / 1000) + 1000)
return 0
