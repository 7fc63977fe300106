-- Store a workflow and enqueue its first steps, all or nothing.
-- KEYS[1] the workflow hash {ns}:workflow:{id}
-- ARGV[1] namespace prefix "{ns}:", ARGV[2] error for missing jobs, ARGV[3] updated_at,
-- ARGV[4] now (seconds), ARGV[5] n = number of hash fields, ARGV[6 .. 5 + 2n] field/value
-- pairs, then per first step: id, ready list, routing key (its JSON is the hash's job:{id}).
-- Returns {} or {"dup", id} (nothing written) if the workflow or a first step's job exists.
--#include claimlib
--#include wflib
local ns, wkey = ARGV[1], KEYS[1]
if redis.call('EXISTS', wkey) == 1 then return {'dup', wkey} end
local n = tonumber(ARGV[5])
local first = 6 + 2 * n
for i = first, #ARGV, 3 do
  if redis.call('EXISTS', ns .. 'job:' .. ARGV[i]) == 1 then return {'dup', ARGV[i]} end
end
for i = 6, first - 1, 2 do redis.call('HSET', wkey, ARGV[i], ARGV[i + 1]) end
local wf = wflib(wkey, ns)
for i = first, #ARGV, 3 do
  local id = ARGV[i]
  redis.call('SET', ns .. 'job:' .. id, redis.call('HGET', wkey, 'job:' .. id))
  redis.call('LPUSH', ARGV[i + 1], id)
  redis.call('HSET', wkey, 'state:' .. id, 'created')
  if not wf.routes[ARGV[i + 2]] then
    wf.routes[ARGV[i + 2]] = true
    wf.route_list[#wf.route_list + 1] = ARGV[i + 2]
  end
end
wf.wake(ARGV[2], ARGV[3], ARGV[4])
return {}
