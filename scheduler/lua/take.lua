-- GCRA without burst for one upstream key, on the server's clock.
-- KEYS[1]: theoretical arrival time of the next slot (µs); KEYS[2]:
-- pause-until (µs); KEYS[3]: a claim of the next slot by interactive work.
-- ARGV[1]: interval between slots (µs); ARGV[2]: 1 for interactive work.
-- Reply: 0 when a slot was taken, else the µs until the next try.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, urgent = tonumber(ARGV[1]), ARGV[2] == '1'
-- The next slot is free at the later of the GCRA's time and a pause's end.
-- Interactive work claims it, after a pause too: when a pause ends, every
-- replica's bulk work is waiting for that same slot.
local free = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), tonumber(redis.call('GET', KEYS[2]) or '0'))
if free > now then
  if urgent then
    redis.call('SET', KEYS[3], '1', 'PX', math.ceil((free - now + interval / 2) / 1000))
  end
  return free - now
end
if not urgent and redis.call('EXISTS', KEYS[3]) == 1 then
  -- The slot is claimed by interactive work on some replica: let it go first.
  return math.max(1000, math.floor(interval / 10))
end
redis.call('DEL', KEYS[3])
redis.call('SET', KEYS[1], string.format('%d', now + interval), 'PX', math.ceil(interval / 1000) + 1000)
return 0
