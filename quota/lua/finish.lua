-- KEYS: limits, the reservation's period, its record in the earlier layout.
-- ARGV: now, ttl, id, actual, release (1/0), provisional (1/0), pool limit,
--       tenant limit, keep, the reservation as the caller holds it (tenant,
--       label, units, expiry), and when its finished record is dropped. The
--       stored record decides; when it is the same, nothing is decoded.
-- Reply: {state, remaining}, or 'unknown'.
local now, id, actual = tonumber(ARGV[1]), ARGV[3], ARGV[4]
local release, prov = ARGV[5] == '1', ARGV[6] == '1'
local plimit, keep, drop = tonumber(ARGV[7]), tonumber(ARGV[9]), ARGV[14]
local key, rec = KEYS[2], 'o\30' .. id
-- The record: state, units, time, actual (the numbers as strings), label,
-- tenant; and the fields of its tenant and label.
local s, u, e, a, l, t = 'open', ARGV[12], ARGV[13], '0', ARGV[11], ARGV[10]
local tu, tr, lf, pf
local function fetch()
  tu, tr, lf, pf = tfield('u', t), tfield('r', t), lfield('l', t, l), lfield('prov', t, l)
  return redis.call('HMGET', key, 'v', rec, 'due', 'used', 'reserved', tu, tr, 'settled', lf, 'provisional', pf)
end
local p = fetch()
if p[1] ~= LAYOUT or p[2] ~= record(s, u, e, a, l, t) or tonumber(e) <= now then
  local r = decode(p[2])
  if p[1] ~= LAYOUT or (r and r.s == 'open' and r.e <= now) then
    -- A period of the earlier layout is folded in first; a lapsed lease is
    -- charged as every lapsed lease is, and then finished as one.
    local P = periods()
    local h = P.open(key, ARGV[2])
    if r then P.sweep(h, now, keep) else P.load(h) end
    P.flush(h)
    p = fetch()
    r = decode(p[2])
  end
  -- A reservation finished in the earlier layout: a key of its own, or a
  -- field of the res hash.
  r = r or decode(redis.call('GET', KEYS[3]) or redis.call('HGET', base(key) .. 'res', id))
  if not r or (r.s == 'open' and not p[2]) then return 'unknown' end
  s, u, e, a = r.s, n(r.u), n(r.e), n(r.a)
  if r.t ~= t or r.l ~= l then
    t, l = r.t, r.l
    p = fetch()
  end
end
local tlimit = tlimit_of(KEYS[1], t, tonumber(ARGV[8]))
local units, spent = tonumber(u), tonumber(actual)
local used, reserved, tused, tres = num(p[4]), num(p[5]), num(p[6]), num(p[7])
local function remaining() return {s, left(plimit, used, reserved, tlimit, tused, tres)} end

-- A finished record stays in place until its time (drop) comes; 'due'
-- makes sure a sweep looks at it then.
local due = p[3] or '0'
if tonumber(drop) < tonumber(due) then due = drop end
if s == 'open' then
  reserved, tres = reserved - units, tres - units
  if release then
    s = 'released'
    redis.call('HSET', key, 'reserved', n(reserved), tr, n(tres), 'due', due, rec, record(s, u, drop, a, l, t))
    return remaining()
  end
  s, used, tused = 'settled', used + spent, tused + spent
  local settled = {'reserved', n(reserved), tr, n(tres), 'used', n(used), tu, n(tused), lf, n(num(p[9]) + spent),
    'settled', n(num(p[8]) + 1), 'due', due, rec, record(s, u, drop, actual, l, t)}
  if prov then
    settled[17], settled[18] = 'provisional', n(num(p[10]) + spent)
    settled[19], settled[20] = pf, n(num(p[11]) + spent)
  end
  redis.call('HSET', key, unpack(settled))
elseif s == 'expired' and not release then
  -- Already charged in full; only an actual above that adds spend.
  s = 'settled'
  if spent <= units then
    redis.call('HSET', key, rec, record(s, u, e, a, l, t))
    return remaining()
  end
  local d = spent - units
  used, tused = used + d, tused + d
  redis.call('HSET', key, 'used', n(used), tu, n(tused), lf, n(num(p[9]) + d), 'due', due,
    rec, record(s, u, drop, actual, l, t))
else
  return remaining() -- settled, released, or releasing an expired one: nothing changes
end
if spent > units then
  redis.call('HINCRBY', key, 'overruns', 1)
  redis.call('HINCRBY', key, 'overrun_units', n(spent - units))
end
return remaining()
