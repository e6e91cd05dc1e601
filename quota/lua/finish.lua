-- fetch reads a reservation's record, and the fields Finish changes.
local function fetch(key, rec, t, tu, tr, lf, pf)
  if not pf then
    return redis.call('HMGET', key, rec, 'used', 'reserved', tu, tr, 'settled', lf, tfield('lim', t), 'opened')
  end
  return redis.call('HMGET', key, rec, 'used', 'reserved', tu, tr, 'settled', lf, tfield('lim', t), 'opened',
    'provisional', pf)
end

-- KEYS: limits, the reservation's period.
-- ARGV: now, id, actual, how (settle, provisional or release), pool limit,
--       tenant limit, the reservation as the caller holds it (tenant, label,
--       units, expiry), when its finished record is dropped (not before its
--       lease would have run out, so that 'due', which is at or before
--       every record's time, needs no change), and the records, which the
--       caller encodes, that it is stored as and that it is to become. When
--       the stored record is the caller's, nothing is decoded.
-- Reply: {what the tenant may still reserve, its spend in the period, when
-- the period was opened or rebuilt (0: unknown)}, or 'sweep' when the
-- period needs one first.
local function finish(KEYS, ARGV)
  local now, id, actual = tonumber(ARGV[1]), ARGV[2], ARGV[3]
  local release, prov = ARGV[4] == 'release', ARGV[4] == 'provisional'
  local plimit, drop, finished = tonumber(ARGV[5]), ARGV[11], ARGV[13]
  local key, rec = KEYS[2], 'o\30' .. id
  -- The record: state, units, time, actual (the numbers as strings), label,
  -- tenant; and the fields of its tenant and label.
  local s, u, e, a, l, t = 'open', ARGV[9], ARGV[10], '0', ARGV[8], ARGV[7]
  local tu, tr, lf = 'u\30' .. t, 'r\30' .. t, 'l\30' .. t .. '\31' .. l
  local pf = prov and lfield('prov', t, l)
  local p = fetch(key, rec, t, tu, tr, lf, pf)
  if p[1] ~= ARGV[12] or tonumber(e) <= now then
    local r = decode(p[1])
    -- A lapsed lease is charged as every lapsed lease is, by a sweep, and
    -- then finished as one; a period never written is written by a sweep
    -- first, which gives its hash its TTL.
    if r and r.s == 'open' and r.e <= now then return 'sweep' end
    if not r and redis.call('HGET', key, 'v') ~= LAYOUT then return 'sweep' end
    finished = nil
    if not r or (r.s == 'open' and not p[1]) then
      -- No record (the store lost it, or it finished long ago): the units
      -- reported were spent upstream all the same, so a settlement is a
      -- direct charge, provisional (engine.go's direct).
      s = 'direct'
      if not release and not prov then
        prov, pf = true, lfield('prov', t, l)
        p = fetch(key, rec, t, tu, tr, lf, pf)
      end
    else
      s, u, e, a = r.s, n(r.u), n(r.e), n(r.a)
      if r.t ~= t or r.l ~= l then
        t, l = r.t, r.l
        tu, tr, lf, pf = tfield('u', t), tfield('r', t), lfield('l', t, l), prov and lfield('prov', t, l)
        p = fetch(key, rec, t, tu, tr, lf, pf)
      end
    end
  end
  local tlimit = tlimit_of(KEYS[1], t, ARGV[6], p[8])
  local units, spent = tonumber(u), tonumber(actual)
  local used, reserved, tused, tres = tonumber(p[2]) or 0, tonumber(p[3]) or 0, tonumber(p[4]) or 0, tonumber(p[5]) or 0

  local direct = s == 'direct'
  if s == 'open' or direct then
    if not direct then reserved, tres = reserved - units, tres - units end
    if release then
      s = 'released'
      redis.call('HSET', key, 'reserved', n(reserved), tr, n(tres), rec, finished or record(s, u, drop, a, l, t))
    else
      -- The fields are written out, as a table costs more than the call.
      s, used, tused = 'settled', used + spent, tused + spent
      if prov then
        redis.call('HSET', key, 'reserved', n(reserved), tr, n(tres), 'used', n(used), tu, n(tused),
          lf, n(num(p[7]) + spent), 'settled', n(num(p[6]) + 1), rec, finished or record(s, u, drop, actual, l, t),
          'provisional', n(num(p[10]) + spent), pf, n(num(p[11]) + spent))
      else
        redis.call('HSET', key, 'reserved', n(reserved), tr, n(tres), 'used', n(used), tu, n(tused),
          lf, n(num(p[7]) + spent), 'settled', n(num(p[6]) + 1), rec, finished or record(s, u, drop, actual, l, t))
      end
    end
  elseif s == 'expired' and not release then
    -- Already charged in full; only an actual above that adds spend. The
    -- record was expired by a sweep, which made 'due' cover its time.
    s = 'settled'
    if spent <= units then
      redis.call('HSET', key, rec, record(s, u, e, a, l, t))
    else
      local d = spent - units
      used, tused = used + d, tused + d
      redis.call('HSET', key, 'used', n(used), tu, n(tused), lf, n(num(p[7]) + d), rec, record(s, u, e, actual, l, t))
    end
  else
    -- Settled, released, or releasing an expired one: nothing changes.
    return {left(plimit, used, reserved, tlimit, tused, tres), tused, num(p[9])}
  end
  if spent > units and not release then
    redis.call('HINCRBY', key, 'overruns', 1)
    redis.call('HINCRBY', key, 'overrun_units', n(spent - units))
  end
  if direct then
    -- 'due' is at or before every record's time, this one's too.
    local due = tonumber(redis.call('HGET', key, 'due'))
    if not due or due > tonumber(drop) then redis.call('HSET', key, 'due', drop) end
    if not release then redis.call('HINCRBY', key, 'direct', 1) end
  end
  return {left(plimit, used, reserved, tlimit, tused, tres), tused, num(p[9])}
end
