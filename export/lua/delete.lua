-- KEYS: job, active, all, tenant, expires, idx
-- ARGV: id, request key or '', same key
local id = ARGV[1]
if redis.call('DEL', KEYS[1]) == 0 then return 'nf' end
for i = 2, 5 do redis.call('ZREM', KEYS[i], id) end
if ARGV[2] ~= '' then dropSame(KEYS[6], ARGV[2], id) end
dropSame(KEYS[6], ARGV[3], id)
return 'ok'
