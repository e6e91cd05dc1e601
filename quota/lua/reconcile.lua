-- ARGV: now, ttl cur, ttl prev, upstream used, adopt (1/0)
local cur, prev = pkeys(2), pkeys(8)
sweep(prev, now, ARGV[3])
sweep(cur, now, ARGV[2])
local upstream = tonumber(ARGV[4])
local used, reserved = hnum(cur.pool, 'used'), hnum(cur.pool, 'reserved')
-- In-flight reservations may already be spent upstream: adopt only the
-- part above used + reserved so they are not counted twice.
local adopted = 0
if ARGV[5] == '1' and upstream - used - reserved > 0 then
  adopted = upstream - used - reserved
  hincr(cur.pool, 'used', adopted)
  hincr(cur.pool, 'external', adopted)
end
redis.call('HSET', cur.pool, 'upstream', n(upstream), 'drift', n(upstream - used))
touch(cur, ARGV[2])
return {used, reserved, adopted}
