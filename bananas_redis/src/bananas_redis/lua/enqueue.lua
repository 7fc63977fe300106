-- Store jobs and make them claimable, all or nothing; hand ready jobs straight to idle
-- workers that wait for them (see claimlib.lua), and publish a wake-up for subscribers.
-- KEYS[1] scheduled set (routes the call; every other key is named from the namespace)
-- ARGV[1] namespace prefix "{ns}:", ARGV[2] error for missing jobs, ARGV[3] updated_at
-- (RFC 3339), ARGV[4] now (seconds), ARGV[5] the jobs, packed (one argument, not five per job:
-- packing the arguments is most of a bulk submit's client time), per job:
--   kind ("L" ready list | "Z" scheduled set), then <length>:<value> for id, json,
--   target (list key | score) and routing key
-- Returns {} on success or {"dup", id} (nothing written) if a job id exists.
--#include claimlib
local ns, blob = ARGV[1], ARGV[5]
local prefix = ns .. 'job:'
local kinds, ids, jsons, targets, routes_of = {}, {}, {}, {}, {}

local function field(pos)
  local colon = string.find(blob, ':', pos, true)
  local stop = colon + tonumber(string.sub(blob, pos, colon - 1))
  return string.sub(blob, colon + 1, stop), stop + 1
end

local pos, n = 1, 0
while pos <= #blob do
  n = n + 1
  kinds[n] = string.sub(blob, pos, pos)
  ids[n], pos = field(pos + 1)
  jsons[n], pos = field(pos)
  targets[n], pos = field(pos)
  routes_of[n], pos = field(pos)
end
for i = 1, n do
  if redis.call('EXISTS', prefix .. ids[i]) == 1 then
    return {'dup', ids[i]}
  end
end
local woken, routes = {}, {}
for i = 1, n do
  redis.call('SET', prefix .. ids[i], jsons[i])
  if kinds[i] == 'Z' then
    redis.call('ZADD', KEYS[1], targets[i], ids[i])
  else
    redis.call('LPUSH', targets[i], ids[i])
    if not woken[routes_of[i]] then
      woken[routes_of[i]] = true
      routes[#routes + 1] = routes_of[i]
    end
  end
end
local c = {
  prefix = prefix, processing = ns .. 'queue:processing', leases = ns .. 'queue:leases',
  dead = ns .. 'queue:dead', dead_errors = ns .. 'dead:errors', missing = ARGV[2], now = ARGV[3],
}
local w = {waiting = ns .. 'waiting:', waiter = ns .. 'waiter:', inbox = ns .. 'inbox:', now = ARGV[4]}
local lib = nil
for _, route in ipairs(routes) do
  if redis.call('ZCOUNT', w.waiting .. route, w.now, '+inf') > 0 then
    lib = lib or claimlib()
    lib.serve_waiters(c, w, route, false)
  end
  redis.call('PUBLISH', ns .. 'wakeup', route)
end
return {}
