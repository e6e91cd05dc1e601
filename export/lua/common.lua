-- Shared head of every job script. A job is a hash: 'data' is the JSON the
-- replicas write (opaque here); the fields the scripts decide on are their
-- own: state, epoch, owner, lease (unix ms), cancel, ecode, emsg, tenant,
-- created, updated. The active zset holds the jobs not done, scored by the
-- lease's end; a job waiting for a claim is scored before every lease, in
-- the order of its creation (created - QUEUED).
local QUEUED = 1125899906842624 -- 2^50
local FIELDS = {'data', 'state', 'epoch', 'owner', 'lease', 'cancel', 'ecode', 'emsg', 'updated'}

local function clock(arg)
  if arg ~= nil and arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function read(key)
  return redis.call('HMGET', key, unpack(FIELDS))
end

local function done(state)
  local s = tonumber(state)
  return s == 3 or s == 4 or s == 5
end

-- fence checks that the caller's epoch is the job's and the job not done.
local function fence(key, epoch)
  local st = redis.call('HMGET', key, 'state', 'epoch')
  if not st[1] then return 'nf' end
  if st[2] ~= epoch or done(st[1]) then return 'fenced' end
  return nil
end

local function dropSame(idx, sk, id)
  if redis.call('HGET', idx, sk) == id then redis.call('HDEL', idx, sk) end
end
