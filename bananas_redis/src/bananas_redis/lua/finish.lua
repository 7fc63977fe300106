-- Settle a claimed job: write its new JSON and move its id, atomically.
-- KEYS[1] processing list, KEYS[2] lease set, KEYS[3] job key, KEYS[4] target (ready list,
-- scheduled set or dead list; unused for "complete"), KEYS[5] dead-errors hash,
-- KEYS[6] result hash (optional)
-- ARGV[1] id, ARGV[2] new json ("" keeps the stored one), ARGV[3] mode:
--   complete | retry | dead | release | ready
-- ARGV[4] TTL in ms (complete, dead; 0 = none) or score (retry), ARGV[5] fence: "c" + the claim
-- number (a worker: its claim must still hold the job, see {lease set}:holders in claimlib.lua),
-- a lease deadline (a reaper: the lease it took), or "" (any holder),
-- ARGV[6] error to remember for the dead list ("" = none); for release and ready of a grouped
-- job, its grouplib.join spec instead (the target is then its group's list),
-- ARGV[7] result TTL ms, ARGV[8] result channel, ARGV[9..] result hash field/value pairs
-- Returns 1 when applied, 2 when it had already been applied (a retried call), 0 when the
-- caller no longer holds the job (its lease was reaped, it was claimed again or settled by
-- another; nothing changed).
--#include grouplib
local id, json, mode, n, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if string.sub(token, 1, 1) == 'c' then
  if redis.call('HGET', KEYS[2] .. ':holders', id) ~= string.sub(token, 2) then
    if json ~= '' and redis.call('GET', KEYS[3]) == json then return 2 end
    return 0
  end
elseif token ~= '' then
  local score = redis.call('ZSCORE', KEYS[2], id)
  if (not score) or tonumber(score) ~= tonumber(token) then return 0 end
end
local held = redis.call('ZREM', KEYS[2], id) + redis.call('LREM', KEYS[1], 1, id)
redis.call('HDEL', KEYS[2] .. ':holders', id)
if held == 0 then
  if json ~= '' and redis.call('GET', KEYS[3]) == json then return 2 end
  return 0
end
if json ~= '' then
  if (mode == 'complete' or mode == 'dead') and tonumber(n) > 0 then
    redis.call('SET', KEYS[3], json, 'PX', n)
  else
    redis.call('SET', KEYS[3], json)
  end
end
if mode == 'retry' then
  redis.call('ZADD', KEYS[4], n, id)
elseif mode == 'dead' then
  redis.call('LPUSH', KEYS[4], id)
  if ARGV[6] ~= '' then redis.call('HSET', KEYS[5], id, ARGV[6]) end
elseif mode == 'release' then
  redis.call('RPUSH', KEYS[4], id)
  if ARGV[6] ~= '' then grouplib().join(ARGV[6]) end
elseif mode == 'ready' then
  redis.call('LPUSH', KEYS[4], id)
  if ARGV[6] ~= '' then grouplib().join(ARGV[6]) end
end
if KEYS[6] and #ARGV >= 9 then
  redis.call('DEL', KEYS[6])
  for i = 9, #ARGV, 2 do redis.call('HSET', KEYS[6], ARGV[i], ARGV[i + 1]) end
  redis.call('PEXPIRE', KEYS[6], ARGV[7])
  redis.call('PUBLISH', ARGV[8], 'ready')
end
return 1
