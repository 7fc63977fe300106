-- Workflow continuation, shared by workflow_step.lua and workflow_submit.lua (included where a
-- script says `--#include wflib`). wflib(wkey, ns) returns the functions over one workflow hash
-- ({ns}:workflow:{id}, fields in docs/redis-wire-format.md). User values (results, job JSON)
-- are never decoded: they are spliced into JSON text as they are.
local function wflib(wkey, ns)
  local lib = {routes = {}, route_list = {}}

  local function create(ids, field, value)
    for _, jid in ipairs(ids) do
      if redis.call('HGET', wkey, 'state:' .. jid) == 'waiting' then
        local text = redis.call('HGET', wkey, 'job:' .. jid)
        text = string.sub(text, 1, #text - 1) .. ',"' .. field .. '":' .. value .. '}'
        if redis.call('SET', ns .. 'job:' .. jid, text, 'NX') then
          redis.call('LPUSH', redis.call('HGET', wkey, 'list:' .. jid), jid)
          local route = redis.call('HGET', wkey, 'route:' .. jid)
          if not lib.routes[route] then
            lib.routes[route] = true
            lib.route_list[#lib.route_list + 1] = route
          end
        end
        redis.call('HSET', wkey, 'state:' .. jid, 'created')
        if redis.call('HEXISTS', wkey, 'open') == 1 then redis.call('HINCRBY', wkey, 'open', 1) end
      end
    end
  end
  lib.create = create

  local arrive
  arrive = function(j, slot, outcome, value, ok)
    local at = j .. ':' .. slot
    if redis.call('HSETNX', wkey, 'slot:' .. at, outcome) == 0 then return end -- filled once
    redis.call('HSET', wkey, 'val:' .. at, value)
    local arrived = redis.call('HINCRBY', wkey, 'arrived:' .. j, 1)
    local failed = redis.call('HINCRBY', wkey, 'failed:' .. j, ok and 0 or 1)
    local join = cjson.decode(redis.call('HGET', wkey, 'join:' .. j))
    if arrived ~= join.size then return end
    if failed == 0 or join.allow_failures then
      local outs, vals = {}, {}
      for i = 0, join.size - 1 do
        outs[#outs + 1] = redis.call('HGET', wkey, 'slot:' .. j .. ':' .. i)
        vals[#vals + 1] = redis.call('HGET', wkey, 'val:' .. j .. ':' .. i)
      end
      if #join['then'] > 0 then create(join['then'], 'group_outcomes', '[' .. table.concat(outs, ',') .. ']') end
      if join.ok_up ~= cjson.null then
        local v = '[' .. table.concat(vals, ',') .. ']'
        arrive(join.ok_up[1], join.ok_up[2], '{"ok":true,"result":' .. v .. '}', v, true)
      end
    elseif join.fail_up ~= cjson.null then
      arrive(join.fail_up[1], join.fail_up[2], '{"ok":false,"error":"a member of the group failed"}', 'null', false)
    end
  end

  -- Record step `sid` as `state` (completed, dead or cancelled) and follow its link: on_success
  -- for a completion, on_dead otherwise. A step not `created` (settled already, or the workflow
  -- is gone) changes nothing. The settle that leaves no step running (`open`, the count of
  -- steps created and not settled, reaches 0) makes the hash expire after `ttl` ms.
  function lib.settle(sid, state, outcome, value, ttl)
    if redis.call('HGET', wkey, 'state:' .. sid) ~= 'created' then return end
    local ok = state == 'completed'
    redis.call('HSET', wkey, 'state:' .. sid, state, 'out:' .. sid, outcome)
    local link = cjson.decode(redis.call('HGET', wkey, (ok and 'ok:' or 'dead:') .. sid))
    if ok and #link.start > 0 then create(link.start, 'previous_result', value) end
    if link.join ~= cjson.null then arrive(link.join[1], link.join[2], outcome, ok and value or 'null', ok) end
    if redis.call('HEXISTS', wkey, 'open') == 1 and redis.call('HINCRBY', wkey, 'open', -1) <= 0 then
      redis.call('PEXPIRE', wkey, ttl)
    end
  end

  -- Hand what was made ready to waiting workers (claimlib) and publish a wake-up per route.
  function lib.wake(missing, updated_at, now)
    local waiting, c, w, cl = ns .. 'waiting:', nil, nil, nil
    for _, route in ipairs(lib.route_list) do
      if redis.call('ZCOUNT', waiting .. route, now, '+inf') > 0 then
        if cl == nil then
          cl = claimlib()
          c = {
            prefix = ns .. 'job:', processing = ns .. 'queue:processing', leases = ns .. 'queue:leases',
            dead = ns .. 'queue:dead', dead_errors = ns .. 'dead:errors', missing = missing, now = updated_at,
          }
          w = {waiting = waiting, waiter = ns .. 'waiter:', inbox = ns .. 'inbox:', now = now}
        end
        cl.serve_waiters(c, w, route, false)
      end
      redis.call('PUBLISH', ns .. 'wakeup', route)
    end
  end

  return lib
end
