-- Shared by every script. Key layout of one operation (all in the budget's
-- hash slot):
--   keys[1]          limits (tenant -> override; not per period)
--   keys[2..7]       a period: pool, tused, tres, label, res, lease
--   keys[8..13]      the previous period, when the operation sweeps it
--   keys[#keys]      Reserve and Finish: the reservation's record
-- A reservation's record is a string key of its own, <res>:<id>, so that it
-- expires by itself once finished; records written into the res hash by
-- earlier versions are still read. The rules mirror engine.go; the
-- conformance suite keeps them in step.

-- ttl is how long the period's keys live from now, in ms.
local function pkeys(keys, i, ttl)
  return {pool = keys[i], tused = keys[i + 1], tres = keys[i + 2],
          label = keys[i + 3], res = keys[i + 4], lease = keys[i + 5], ttl = ttl}
end

-- Numbers go to Redis through %d: the default conversion of Lua numbers may
-- use exponent notation, which HINCRBY refuses.
local function n(x) return string.format('%d', x) end

local function hnum(key, field)
  return tonumber(redis.call('HGET', key, field) or '0')
end

-- Keys outlive their period by the store's retention, then vanish. Only a
-- write that finds its field at zero can have created its key, so only such
-- a write sets the key's TTL; every other write keeps it.
-- add returns the field's new value.
local function add(k, name, field, d)
  if d == 0 then return hnum(k[name], field) end
  local v = redis.call('HINCRBY', k[name], field, n(d))
  if v == d then
    redis.call('PEXPIRE', k[name], k.ttl)
  end
  return v
end

-- hset sets one field; a new field may be in a key just created.
local function hset(k, name, field, value)
  if redis.call('HSET', k[name], field, value) == 1 then
    redis.call('PEXPIRE', k[name], k.ttl)
  end
end

-- A record: state, units, expiry (unix ms), actual, label, tenant. The
-- tenant comes last, so any byte may be in it; a label never holds \31.
local function encode(r)
  return table.concat({r.s, n(r.u), n(r.e), n(r.a), r.l, r.t}, '\31')
end

local function load(k, rk, id)
  local raw = redis.call('GET', rk) or redis.call('HGET', k.res, id)
  if not raw then return nil end
  if string.sub(raw, 1, 1) == '{' then return cjson.decode(raw) end
  local s, u, e, a, l, t = string.match(raw, '^(%a+)\31(%d+)\31(%d+)\31(%d+)\31([^\31]*)\31(.*)$')
  return {s = s, u = tonumber(u), e = tonumber(e), a = tonumber(a), l = l, t = t}
end

-- A finished record is kept as long as a retried or late Finish may still
-- come (ARGV keep, in ms); an open one as long as its period's keys, so a
-- sweep always finds it.
local function store(rk, r, px)
  redis.call('SET', rk, encode(r), 'PX', px)
end

-- Charges presumed rather than reported are provisional, per tenant and
-- label, until a reconciliation confirms or takes them back.
local function provisional(k, tenant, label, u)
  add(k, 'pool', 'provisional', u)
  add(k, 'pool', 'prov\30' .. tenant .. '\31' .. label, u)
end

-- A tenant's limit: a stored override wins over the configured one.
local function tlimit_of(limits, tenant, configured)
  local override = redis.call('HGET', limits, tenant)
  if override then return tonumber(override) end
  return configured
end

-- What tenant may still reserve in period k.
local function room(k, tenant, plimit, tlimit)
  local p = redis.call('HMGET', k.pool, 'used', 'reserved')
  local left = math.max(0, plimit - tonumber(p[1] or '0') - tonumber(p[2] or '0'))
  if tlimit > 0 then
    left = math.min(left, math.max(0, tlimit - hnum(k.tused, tenant) - hnum(k.tres, tenant)))
  end
  return left
end

-- Charge in full a reservation whose holder never came back.
local function expire(k, id, rk, r, keep)
  local u = r.u
  provisional(k, r.t, r.l, u)
  add(k, 'pool', 'used', u)
  add(k, 'pool', 'reserved', -u)
  add(k, 'pool', 'expired', 1)
  add(k, 'pool', 'expired_units', u)
  add(k, 'tused', r.t, u)
  add(k, 'tres', r.t, -u)
  add(k, 'label', r.t .. '\31' .. r.l, u)
  r.s = 'expired'
  r.a = u
  store(rk, r, keep)
  redis.call('ZREM', k.lease, id)
end

-- sweep charges the leases of period k that ran out by now, at most 1000
-- at a time, and returns when the next of the others runs out (nil: none
-- is open).
local function sweep(k, now, keep)
  local due = redis.call('ZRANGEBYSCORE', k.lease, '-inf', n(now), 'LIMIT', 0, 1000)
  for _, id in ipairs(due) do
    local rk = k.res .. ':' .. id
    local r = load(k, rk, id)
    if r and r.s == 'open' then
      expire(k, id, rk, r, keep)
    else
      redis.call('ZREM', k.lease, id)
    end
  end
  local next = redis.call('ZRANGE', k.lease, 0, 0, 'WITHSCORES')
  return tonumber(next[2])
end
