-- What the ledger's functions share (one library, loaded once:
-- redislib.go).
--
-- A period of a budget is one hash, <prefix>:{budget}:p:<period-start>:pool:
-- the pool's counters by name and, after a tag and \30, each tenant's used
-- (u) and reserved (r) units, its spend (l) and provisional charges (prov)
-- per label ("tenant\31label"), a copy of its limit override (lim), and the
-- record of each reservation (o, by id): open, or finished and kept until a
-- retried or late Finish can no longer come. The limits (tenant -> override)
-- are one hash per budget. All keys of a budget share its hash slot.
--
-- A period's ledger is known once its hash holds 'opened'. The limits
-- hash's field '' (no tenant has an empty name) is the budget's marker:
-- the newest period opened. A period without 'opened' is opened at zero
-- only when the marker names an earlier one (a rollover); without a marker
-- (a first start, or a Redis that lost its data) or with one naming it or
-- a later period (it was lost), it stays unknown until a reconciliation
-- rebuilds it (engine.go's open and rebuild).
--
-- Reserve and Finish read what they need with one HMGET and write what they
-- changed with one HSET. The rest is sweep's, which they ask for when the
-- hash's 'due' has come: charging lapsed leases and dropping finished
-- records. Sweeps, reports and reconciliation work on a whole hash through
-- P. The rules mirror engine.go; the conformance suite keeps them in step.

local LAYOUT = '2'

-- Numbers go to Redis through %d: the default conversion of Lua numbers may
-- use exponent notation, which Redis refuses as an integer.
local function n(x) return string.format('%d', x) end

local function num(s) return tonumber(s) or 0 end

local function tfield(tag, tenant) return tag .. '\30' .. tenant end
local function lfield(tag, tenant, label) return tag .. '\30' .. tenant .. '\31' .. label end

-- A record: state, units, time (unix ms), actual, label, tenant. The time
-- is when the lease of an open record runs out, and when a finished one is
-- dropped. The tenant comes last, so any byte may be in it; a label never
-- holds \31. Its numbers come as strings, as the caller sent them.
local function record(s, u, e, a, l, t)
  return s .. '\31' .. u .. '\31' .. e .. '\31' .. a .. '\31' .. l .. '\31' .. t
end

local function encode(r) return record(r.s, n(r.u), n(r.e), n(r.a), r.l, r.t) end

local function decode(raw)
  if not raw then return nil end
  local s, u, e, a, l, t = string.match(raw, '^(%a+)\31(%d+)\31(%d+)\31(%d+)\31([^\31]*)\31(.*)$')
  return {s = s, u = tonumber(u), e = tonumber(e), a = tonumber(a), l = l, t = t}
end

-- A tenant's limit: a stored override wins over the configured one. A
-- period's hash keeps a copy of the override, read with the rest ('-1':
-- none; absent: not copied yet). tlimit_of returns the limit and the copy.
local function tlimit_of(limits, tenant, configured, copy)
  copy = copy or redis.call('HGET', limits, tenant) or '-1'
  if copy == '-1' then return tonumber(configured), copy end
  return tonumber(copy), copy
end

-- open marks period key opened at a rollover, and reports whether it is
-- known now (see above).
local function open(limits, key, now)
  local p = string.match(key, ':p:([%d-]+):pool$')
  local m = redis.call('HGET', limits, '')
  if not m or m >= p then return false end
  redis.call('HSET', key, 'opened', now)
  redis.call('HSET', limits, '', p)
  return true
end

-- What is left to reserve: the pool's room, and the tenant's own when it
-- has a limit.
local function left(plimit, used, reserved, tlimit, tused, tres)
  local l = math.max(0, plimit - used - reserved)
  if tlimit > 0 then l = math.min(l, math.max(0, tlimit - tused - tres)) end
  return l
end

-- P holds the operations on a whole period's hash.
local P = {}

-- A period's hash as one script sees it: v holds what was read (false:
-- absent), w what the script changed, until flush writes it back. ttl is
-- how long the hash lives from now, in ms, when the script may create it.
function P.open(key, ttl)
  return {key = key, ttl = ttl, v = {}, w = {}}
end

-- layout reads the hash's layout: false when it was never written.
function P.layout(h)
  if h.layout ~= nil then return end
  h.layout = redis.call('HGET', h.key, 'v') or false
end

-- load reads the whole hash once, after its layout.
function P.load(h)
  if h.full then return end
  P.layout(h)
  local all = redis.call('HGETALL', h.key)
  for i = 1, #all, 2 do h.v[all[i]] = all[i + 1] end
  h.full = true
end

function P.get(h, f) P.load(h) return h.v[f] or false end
function P.num(h, f) return num(P.get(h, f)) end
function P.set(h, f, x) h.v[f], h.w[f] = x, x end
function P.del(h, f) h.v[f], h.w[f] = false, false end
function P.add(h, f, d) P.set(h, f, P.num(h, f) + d) end

-- flush writes what the script changed. A hash written for the first
-- time gets its layout and its TTL; later writes keep the TTL.
function P.flush(h)
  local fv, gone = {}, {}
  for f, x in pairs(h.w) do
    if x == false then
      gone[#gone + 1] = f
    else
      fv[#fv + 1], fv[#fv + 2] = f, type(x) == 'number' and n(x) or x
    end
  end
  h.w = {}
  if #fv > 0 then
    local new = h.layout ~= LAYOUT
    if new then fv[#fv + 1], fv[#fv + 2] = 'v', LAYOUT end
    P.hset(h.key, fv)
    if new then
      redis.call('PEXPIRE', h.key, h.ttl)
      h.layout = LAYOUT
    end
  end
  if #gone > 0 then redis.call('HDEL', h.key, unpack(gone)) end
end

-- hset writes many fields, in slices that Lua's unpack can take.
function P.hset(key, fv)
  for i = 1, #fv, 1000 do
    redis.call('HSET', key, unpack(fv, i, math.min(i + 999, #fv)))
  end
end

-- Charges presumed rather than reported are provisional, per tenant and
-- label, until a reconciliation confirms or takes them back.
function P.provisional(h, tenant, label, u)
  P.add(h, 'provisional', u)
  P.add(h, lfield('prov', tenant, label), u)
end

-- expire charges in full a reservation whose holder never came back; its
-- record is kept until keep ms from now.
function P.expire(h, id, r, now, keep)
  local u = r.u
  P.provisional(h, r.t, r.l, u)
  P.add(h, 'used', u)
  P.add(h, 'reserved', -u)
  P.add(h, 'expired', 1)
  P.add(h, 'expired_units', u)
  P.add(h, tfield('u', r.t), u)
  P.add(h, tfield('r', r.t), -u)
  P.add(h, lfield('l', r.t, r.l), u)
  P.set(h, 'o\30' .. id, record('expired', n(u), n(now + keep), n(u), r.l, r.t))
end

-- sweep charges the open reservations of period h whose lease ran out by
-- now and drops the finished records whose time has come. It returns
-- when the first of the other records needs it, and whether any
-- reservation is still open.
function P.sweep(h, now, keep)
  P.load(h)
  local lapsed, nxt, open = {}, nil, false
  for f, raw in pairs(h.v) do
    if raw and string.sub(f, 1, 2) == 'o\30' then
      local r = decode(raw)
      open = open or (r.s == 'open' and r.e > now)
      if r.e > now then
        nxt = math.min(nxt or r.e, r.e)
      elseif r.s == 'open' then
        lapsed[string.sub(f, 3)] = r
      else
        lapsed[string.sub(f, 3)] = false
      end
    end
  end
  for id, r in pairs(lapsed) do
    if r then
      P.expire(h, id, r, now, keep)
      nxt = math.min(nxt or now + keep, now + keep)
    else
      P.del(h, 'o\30' .. id)
    end
  end
  return nxt, open
end

-- current opens the current period for a report (KEYS and ARGV as
-- snapshot and reconcile take them), after sweeping it and the one before,
-- so that every report counts lapsed leases.
function P.current(KEYS, ARGV)
  local now, keep = tonumber(ARGV[1]), tonumber(ARGV[4])
  local cur, prev = P.open(KEYS[2], ARGV[2]), P.open(KEYS[3], ARGV[3])
  P.sweep(prev, now, keep)
  P.flush(prev)
  P.sweep(cur, now, keep)
  return cur
end

-- counters returns the period's fields as a flat list, without the
-- reservations' records.
function P.counters(h)
  local out = {}
  for f, x in pairs(h.v) do
    if x and string.sub(f, 1, 2) ~= 'o\30' then
      out[#out + 1], out[#out + 2] = f, type(x) == 'number' and n(x) or x
    end
  end
  return out
end
