-- Store jobs and make them claimable, all or nothing; hand ready jobs straight to idle
-- workers that wait for them (see claimlib.lua), and publish a wake-up for subscribers.
-- KEYS[1] scheduled set (routes the call; every key shares the namespace), KEYS[2] processing
-- list, KEYS[3] lease set, KEYS[4] dead list, KEYS[5] dead-errors hash
-- ARGV[1] job key prefix, ARGV[2] wake-up channel, ARGV[3] error for missing jobs,
-- ARGV[4] updated_at (RFC 3339), ARGV[5] waiting prefix, ARGV[6] waiter prefix,
-- ARGV[7] inbox prefix, ARGV[8] now (seconds), then per job 5 values:
--   id, json, kind ("L" ready list | "Z" scheduled set), target (list key | score), routing key
-- Returns {} on success or {"dup", id} (nothing written) if a job id exists.
--#include claimlib
local prefix, wakeup = ARGV[1], ARGV[2]
for i = 9, #ARGV, 5 do
  if redis.call('EXISTS', prefix .. ARGV[i]) == 1 then
    return {'dup', ARGV[i]}
  end
end
local woken, routes = {}, {}
for i = 9, #ARGV, 5 do
  local id, json, kind, target = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  redis.call('SET', prefix .. id, json)
  if kind == 'Z' then
    redis.call('ZADD', KEYS[1], target, id)
  else
    redis.call('LPUSH', target, id)
    if not woken[ARGV[i + 4]] then
      woken[ARGV[i + 4]] = true
      routes[#routes + 1] = ARGV[i + 4]
    end
  end
end
local c = {
  prefix = prefix, processing = KEYS[2], leases = KEYS[3], dead = KEYS[4], dead_errors = KEYS[5],
  missing = ARGV[3], now = ARGV[4],
}
local w = {waiting = ARGV[5], waiter = ARGV[6], inbox = ARGV[7], now = ARGV[8]}
local lib = nil
for _, route in ipairs(routes) do
  if redis.call('ZCOUNT', w.waiting .. route, w.now, '+inf') > 0 then
    lib = lib or claimlib()
    lib.serve_waiters(c, w, route, false)
  end
  redis.call('PUBLISH', wakeup, route)
end
return {}
