-- Store jobs and make them claimable, all or nothing.
-- KEYS[1] scheduled set (routes the call; every key shares the namespace)
-- ARGV[1] job key prefix, ARGV[2] wake-up channel, then per job 5 values:
--   id, json, kind ("L" ready list | "Z" scheduled set), target (list key | score), routing key
-- Returns {} on success or {"dup", id} (nothing written) if a job id exists.
local prefix, wakeup = ARGV[1], ARGV[2]
for i = 3, #ARGV, 5 do
  if redis.call('EXISTS', prefix .. ARGV[i]) == 1 then
    return {'dup', ARGV[i]}
  end
end
local woken = {}
for i = 3, #ARGV, 5 do
  local id, json, kind, target = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  redis.call('SET', prefix .. id, json)
  if kind == 'Z' then
    redis.call('ZADD', KEYS[1], target, id)
  else
    redis.call('LPUSH', target, id)
    woken[ARGV[i + 4]] = true
  end
end
for route, _ in pairs(woken) do
  redis.call('PUBLISH', wakeup, route)
end
return {}
