-- Store jobs that may carry a unique key, all or nothing: a job whose key is held is not
-- written and answers with the holder's id; the others are enqueued as enqueue.lua does and
-- take their keys ({ns}:unique:{key}, a hash: job = holder id, for = unique_for seconds).
-- The rule mirrors bananas.unique.key_held: a key is held while its job is pending,
-- scheduled or processing, and for `for` seconds after the job completed (its updated_at);
-- a dead, unreadable or missing holder releases it.
-- KEYS[1] scheduled set; ARGV[1..4] as enqueue.lua (namespace prefix, missing-job error,
-- updated_at, now in seconds); ARGV[5] the number of jobs n; then per job three arguments:
-- its part of enqueue.lua's packed ARGV[5], its unique key ('' for none), its unique_for.
-- Returns {'ok', id...} (the id each job stands for, in order) or {'dup', id} (nothing written).
-- Keys are also in {ns}:unique-keys, scored by when they were taken or last looked at; each
-- call looks at the two longest unseen and deletes those bananas.unique.key_forgettable
-- lets go, so keys of finished jobs do not pile up.
local function enqueue_packed(ARGV)
--#include enqueue
end

local ns, now, n = ARGV[1], tonumber(ARGV[4]), tonumber(ARGV[5])
local prefix, locks, dead_errors = ns .. 'job:', ns .. 'unique:', ns .. 'dead:errors'
local index = ns .. 'unique-keys'  -- apart from every {ns}:unique:{key}, whatever the key

-- Seconds since the epoch of an RFC 3339 time (any offset, up to nine fraction digits).
local function epoch(text)
  local y, mo, d, h, mi, s, rest = string.match(text, '^(%d+)-(%d+)-(%d+)[Tt ](%d+):(%d+):(%d+)(.*)$')
  if not y then return nil end
  local frac, tz = string.match(rest, '^%.(%d+)(.*)$')
  local seconds = tonumber(s)
  if frac then
    seconds, rest = seconds + tonumber('0.' .. frac), tz
  end
  local offset = 0
  local sign, oh, om = string.match(rest, '^([+-])(%d%d):?(%d%d)$')
  if sign then
    offset = (tonumber(oh) * 3600 + tonumber(om) * 60) * (sign == '+' and 1 or -1)
  elseif rest ~= 'Z' and rest ~= 'z' and rest ~= '' then
    return nil
  end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((mo + 9) % 12) + 2) / 5) + d - 1
  local days = era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
  return days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + seconds - offset
end

-- The holder of a key's lock, its status (nil: gone, unreadable or dead-unreadable) and the
-- time it completed.
local function state_of(lock)
  local id = lock[1]
  if not id then return nil, nil, nil end
  local text = redis.call('GET', prefix .. id)
  if not text or redis.call('HEXISTS', dead_errors, id) == 1 then return id, nil, nil end
  local ok, job = pcall(cjson.decode, text)
  if not ok or type(job) ~= 'table' then return id, nil, nil end
  local at = nil
  if job.status == 'completed' and type(job.updated_at) == 'string' then at = epoch(job.updated_at) end
  return id, job.status, at
end

-- bananas.unique.key_held: the id of the job holding the key, or nil.
local function holder_of(key)
  local lock = redis.call('HMGET', locks .. key, 'job', 'for')
  local id, status, at = state_of(lock)
  if status == 'pending' or status == 'scheduled' or status == 'processing' then return id end
  if status == 'completed' and at and now < at + (tonumber(lock[2]) or 0) then return id end
  return nil
end

-- bananas.unique.key_forgettable: the holder is gone, or completed and past its window (a
-- dead holder's key is kept: requeued, that job holds it again).
local function forgettable(key)
  local lock = redis.call('HMGET', locks .. key, 'job', 'for')
  local _, status, at = state_of(lock)
  if status == nil then return true end
  return status == 'completed' and not (at and now < at + (tonumber(lock[2]) or 0))
end

local answers, parts, taken, takes = {}, {}, {}, {}
for i = 1, n do
  local base = 5 + (i - 1) * 3
  local part, key, window = ARGV[base + 1], ARGV[base + 2], ARGV[base + 3]
  local colon = string.find(part, ':', 2, true)
  local id = string.sub(part, colon + 1, colon + tonumber(string.sub(part, 2, colon - 1)))
  local holder = nil
  if key ~= '' then holder = taken[key] or holder_of(key) end
  if holder then
    answers[i] = holder
  else
    answers[i] = id
    parts[#parts + 1] = part
    if key ~= '' then
      taken[key] = id
      takes[#takes + 1] = {key, id, window}
    end
  end
end
if #parts > 0 then
  local reply = enqueue_packed({ARGV[1], ARGV[2], ARGV[3], ARGV[4], table.concat(parts)})
  if reply[1] == 'dup' then return reply end
  for _, take in ipairs(takes) do
    redis.call('HSET', locks .. take[1], 'job', take[2], 'for', take[3])
    redis.call('ZADD', index, now, take[1])
  end
end
for _, key in ipairs(redis.call('ZRANGE', index, 0, 1)) do
  if not taken[key] then
    if forgettable(key) then
      redis.call('DEL', locks .. key)
      redis.call('ZREM', index, key)
    else
      redis.call('ZADD', index, now, key)
    end
  end
end
return {'ok', unpack(answers)}
