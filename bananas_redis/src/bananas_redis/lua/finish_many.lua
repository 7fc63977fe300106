-- Settle several claimed jobs in one call: finish.lua's logic applied to each in turn.
-- KEYS[1] processing list, KEYS[2] lease set, KEYS[3] dead-errors hash, then per job three
-- keys: job key, target (ready list, scheduled set or dead list; any key for "complete"),
-- result hash (any key when the job stores no result).
-- ARGV per job: id, new json ("" keeps the stored one), mode (complete | retry | dead |
-- release | ready), TTL ms or score, fence (as finish.lua's ARGV[5]), dead-list error ("" = none;
-- for release and ready of a grouped job its grouplib.join spec, as finish.lua's ARGV[6]),
-- result TTL ms, result channel, F = number of result field/value values that follow (0 = no
-- result), then the F values.
-- Returns one code per job, as finish.lua: 1 applied, 2 already applied (a retried call),
-- 0 the caller no longer holds the job (nothing changed for that job).
--#include grouplib
local processing, leases, dead_errors = KEYS[1], KEYS[2], KEYS[3]

local function settle(id, json, mode, n, token, dead_error, job_key, target)
  if string.sub(token, 1, 1) == 'c' then
    if redis.call('HGET', leases .. ':holders', id) ~= string.sub(token, 2) then
      if json ~= '' and redis.call('GET', job_key) == json then return 2 end
      return 0
    end
  elseif token ~= '' then
    local score = redis.call('ZSCORE', leases, id)
    if (not score) or tonumber(score) ~= tonumber(token) then return 0 end
  end
  local held = redis.call('ZREM', leases, id) + redis.call('LREM', processing, 1, id)
  redis.call('HDEL', leases .. ':holders', id)
  if held == 0 then
    if json ~= '' and redis.call('GET', job_key) == json then return 2 end
    return 0
  end
  if json ~= '' then
    if (mode == 'complete' or mode == 'dead') and tonumber(n) > 0 then
      redis.call('SET', job_key, json, 'PX', n)
    else
      redis.call('SET', job_key, json)
    end
  end
  if mode == 'retry' then
    redis.call('ZADD', target, n, id)
  elseif mode == 'dead' then
    redis.call('LPUSH', target, id)
    if dead_error ~= '' then redis.call('HSET', dead_errors, id, dead_error) end
  elseif mode == 'release' then
    redis.call('RPUSH', target, id)
    if dead_error ~= '' then grouplib().join(dead_error) end
  elseif mode == 'ready' then
    redis.call('LPUSH', target, id)
    if dead_error ~= '' then grouplib().join(dead_error) end
  end
  return 1
end

local out = {}
local a, k = 1, 4
while a <= #ARGV do
  local nfields = tonumber(ARGV[a + 8])
  local code = settle(ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], KEYS[k], KEYS[k + 1])
  if code == 1 and nfields > 0 then
    local result_key = KEYS[k + 2]
    redis.call('DEL', result_key)
    redis.call('HSET', result_key, unpack(ARGV, a + 9, a + 8 + nfields))
    redis.call('PEXPIRE', result_key, ARGV[a + 6])
    redis.call('PUBLISH', ARGV[a + 7], 'ready')
  end
  out[#out + 1] = code
  a = a + 9 + nfields
  k = k + 3
end
return out
