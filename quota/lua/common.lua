-- Shared by every script. Key layout (all in the budget's hash slot):
--   KEYS[1]          limits (tenant -> override; not per period)
--   KEYS[2..7]       period A: pool, tused, tres, label, res, lease
--   KEYS[8..13]      period B (the previous period, when the script sweeps it)
-- The rules mirror engine.go; the conformance suite keeps them in step.

local function pkeys(i)
  return {pool = KEYS[i], tused = KEYS[i + 1], tres = KEYS[i + 2],
          label = KEYS[i + 3], res = KEYS[i + 4], lease = KEYS[i + 5]}
end

-- Numbers go to Redis through %d: the default conversion of Lua numbers may
-- use exponent notation, which HINCRBY refuses.
local function n(x) return string.format('%d', x) end

local function hincr(key, field, d)
  if d ~= 0 then redis.call('HINCRBY', key, field, n(d)) end
end

local function hnum(key, field)
  return tonumber(redis.call('HGET', key, field) or '0')
end

-- Keys outlive their period by the store's retention, then vanish. A
-- script sets the TTL of the keys it may have created; writes to a key keep
-- its TTL.
local function expire_in(keys, ttl)
  for _, key in ipairs(keys) do
    redis.call('PEXPIRE', key, ttl)
  end
end

local function touch(k, ttl)
  expire_in({k.pool, k.tused, k.tres, k.label, k.res, k.lease}, ttl)
end

local function put(k, id, r)
  redis.call('HSET', k.res, id, cjson.encode(r))
end

-- Charges presumed rather than reported are provisional, per tenant and
-- label, until a reconciliation confirms or takes them back.
local function provisional(k, tenant, label, u)
  hincr(k.pool, 'provisional', u)
  hincr(k.pool, 'prov\30' .. tenant .. '\31' .. label, u)
end

-- A tenant's limit: a stored override wins over the configured one.
local function tlimit_of(tenant, configured)
  local override = redis.call('HGET', KEYS[1], tenant)
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
local function expire(k, id, r)
  local u = r.u
  provisional(k, r.t, r.l, u)
  hincr(k.pool, 'used', u)
  hincr(k.pool, 'reserved', -u)
  hincr(k.pool, 'expired', 1)
  hincr(k.pool, 'expired_units', u)
  hincr(k.tused, r.t, u)
  hincr(k.tres, r.t, -u)
  hincr(k.label, r.t .. "\31" .. r.l, u)
  r.s = 'expired'
  r.a = u
  put(k, id, r)
  redis.call('ZREM', k.lease, id)
end

local function sweep(k, now, ttl)
  local due = redis.call('ZRANGEBYSCORE', k.lease, '-inf', n(now), 'LIMIT', 0, 1000)
  for _, id in ipairs(due) do
    local raw = redis.call('HGET', k.res, id)
    local r = raw and cjson.decode(raw)
    if r and r.s == 'open' then
      expire(k, id, r)
    else
      redis.call('ZREM', k.lease, id)
    end
  end
  if #due > 0 then touch(k, ttl) end
end

local now = tonumber(ARGV[1])
