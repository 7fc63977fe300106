-- Store jobs and make them claimable, all or nothing; hand ready jobs straight to idle
-- workers that wait for them (see claimlib.lua), and publish a wake-up for subscribers.
-- KEYS[1] scheduled set (routes the call; every other key is named from the namespace)
-- ARGV[1] namespace prefix "{ns}:", ARGV[2] error for missing jobs, ARGV[3] updated_at
-- (RFC 3339), ARGV[4] now (seconds), ARGV[5] the jobs, packed (one argument, not five per job:
-- packing the arguments is most of a bulk submit's client time), per job:
--   kind ("L" ready list | "Z" scheduled set | "G" a group's ready list | "S" the groups'
--   scheduled set {ns}:groups:scheduled), then <length>:<value> for id, json,
--   target (list key | score | for "G": list key, newline, grouplib.join's spec) and routing key.
--   A grouped job ("G", "S") is never in a list or set that an original Go worker pops; its
--   enqueue wakes one idle worker of the routing key instead of handing the job over (its
--   group's limit is for the claim to apply).
-- or ARGV[5] empty and ONE job's kind, id, json, target and routing key as ARGV[6..10]
-- (a single submit: nothing to pack or unpack, and its SET NX is also the existence check)
-- Returns {} on success or {"dup", id} (nothing written) if a job id exists.
--#include claimlib
--#include grouplib
local ns, blob = ARGV[1], ARGV[5]
local prefix = ns .. 'job:'
local kinds, ids, jsons, targets, routes_of = {}, {}, {}, {}, {}

local function field(pos)
  local colon = string.find(blob, ':', pos, true)
  local stop = colon + tonumber(string.sub(blob, pos, colon - 1))
  return string.sub(blob, colon + 1, stop), stop + 1
end

local pos, n = 1, 0
if blob == '' then
  n = 1
  kinds[1], ids[1], jsons[1], targets[1], routes_of[1] = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
end
while pos <= #blob do
  n = n + 1
  kinds[n] = string.sub(blob, pos, pos)
  ids[n], pos = field(pos + 1)
  jsons[n], pos = field(pos)
  targets[n], pos = field(pos)
  routes_of[n], pos = field(pos)
end
if n == 1 then
  if not redis.call('SET', prefix .. ids[1], jsons[1], 'NX') then
    return {'dup', ids[1]}
  end
else
  for i = 1, n do
    if redis.call('EXISTS', prefix .. ids[i]) == 1 then
      return {'dup', ids[i]}
    end
  end
  for i = 1, n do
    redis.call('SET', prefix .. ids[i], jsons[i])
  end
end
local woken, routes, glib = {}, {}, nil
for i = 1, n do
  local kind = kinds[i]
  if kind == 'Z' then
    redis.call('ZADD', KEYS[1], targets[i], ids[i])
  elseif kind == 'S' then
    redis.call('ZADD', ns .. 'groups:scheduled', targets[i], ids[i])
  else
    local target = targets[i]
    if kind == 'G' then
      local list, spec = string.match(target, '^(.-)\n(.*)$')
      glib = glib or grouplib()
      redis.call('LPUSH', list, ids[i])
      glib.join(spec)
    else
      redis.call('LPUSH', target, ids[i])
    end
    local route = routes_of[i]
    if not woken[route] then
      woken[route] = kind
      routes[#routes + 1] = route
    elseif woken[route] ~= kind then
      woken[route] = 'both'
    end
  end
end
local waiting, lib, c, w = ns .. 'waiting:', nil, nil, nil
for _, route in ipairs(routes) do
  if redis.call('ZCOUNT', waiting .. route, ARGV[4], '+inf') > 0 then
    if lib == nil then  -- built only when a worker waits: most submits find none
      lib = claimlib()
      c = {
        prefix = prefix, processing = ns .. 'queue:processing', leases = ns .. 'queue:leases',
        dead = ns .. 'queue:dead', dead_errors = ns .. 'dead:errors', missing = ARGV[2], now = ARGV[3],
      }
      w = {waiting = waiting, waiter = ns .. 'waiter:', inbox = ns .. 'inbox:', now = ARGV[4]}
    end
    if woken[route] ~= 'G' then lib.serve_waiters(c, w, route, false) end
    if woken[route] ~= 'L' then lib.serve_waiters(c, w, route, true) end
  end
  redis.call('PUBLISH', ns .. 'wakeup', route)
end
return {}
