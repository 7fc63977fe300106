-- Shared by claim.lua, enqueue.lua and promote.lua (included where a script says
-- `--#include claimlib`). claimlib() returns the functions; it is a function so that a script
-- that may not need them does not pay for defining them on every call.
-- lib.walk(c, lists, limit, names, out) claims up to `limit` ready ids from `lists` in order:
-- each id moves to processing (RPOPLPUSH: never in no list) with a lease deadline; an id whose
-- job JSON is missing goes to the dead list; an id whose job already says completed or failed
-- (finished late by a worker whose lease was reaped) is dropped. The JSON is never decoded and
-- re-encoded (cjson would rewrite floats, big integers and field order): the values of the
-- top-level "status" and "updated_at" strings are replaced in place in the text. Each claim
-- gets a number (INCR {lease set}:seq) recorded as the job's holder ({lease set}:holders, id ->
-- number, deleted when the job is settled or reaped): a worker's settle applies only while its
-- number is the holder. Appends id, json, flag (2 * claim number + edited; edited is 1 when
-- the stored JSON now says "processing", 0 when the text was not a shape this editor handles:
-- the caller edits it) to `out`; returns how many it claimed.
-- c = {prefix = job key prefix, processing, leases, dead, dead_errors, deadline, missing, now}

local function claimlib()
  -- index of the quote closing the JSON string that opens at i, or nil
  local function string_end(s, i)
    local j = i + 1
    while true do
      local q = string.find(s, '["\\]', j)
      if not q then return nil end
      if string.byte(s, q) == 92 then j = q + 2 else return q end
    end
  end

  -- {key = {first, last}} spans (quotes included) of the top-level keys whose value is a string
  local function top_level_strings(s)
    if not string.find(s, '^%s*{') then return nil end
    local spans, depth, i = {}, 0, 1
    while true do
      local p = string.find(s, '[{}%[%]"]', i)
      if not p then break end
      local b = string.byte(s, p)
      if b == 34 then
        local e = string_end(s, p)
        if not e then return nil end
        i = e + 1
        if depth == 1 then
          local _, ce = string.find(s, '^%s*:%s*', e + 1)
          if ce then
            i = ce + 1
            if string.byte(s, ce + 1) == 34 then
              local ve = string_end(s, ce + 1)
              if not ve then return nil end
              spans[string.sub(s, p + 1, e - 1)] = {ce + 1, ve}
              i = ve + 1
            end
          end
        end
      elseif b == 123 or b == 91 then
        depth = depth + 1
        i = p + 1
      else
        depth = depth - 1
        i = p + 1
      end
    end
    if depth ~= 0 then return nil end
    return spans
  end

  local function mark_processing(json, spans, now)
    if not spans or not spans['status'] then return nil end
    local edits = {{spans['status'], '"processing"'}}
    if spans['updated_at'] then edits[2] = {spans['updated_at'], '"' .. now .. '"'} end
    table.sort(edits, function(a, b) return a[1][1] < b[1][1] end)
    local parts, pos = {}, 1
    for _, e in ipairs(edits) do
      parts[#parts + 1] = string.sub(json, pos, e[1][1] - 1)
      parts[#parts + 1] = e[2]
      pos = e[1][2] + 1
    end
    parts[#parts + 1] = string.sub(json, pos)
    return table.concat(parts)
  end

  -- lease one id that is already in processing; true if it was claimed
  local function take(c, id, out)
    local json = redis.call('GET', c.prefix .. id)
    if not json then
      redis.call('LREM', c.processing, 1, id)
      redis.call('LPUSH', c.dead, id)
      redis.call('HSET', c.dead_errors, id, c.missing)
      return false
    end
    local spans = top_level_strings(json)
    if spans and spans['status'] then
      local status = string.sub(json, spans['status'][1], spans['status'][2])
      if status == '"completed"' or status == '"failed"' then
        redis.call('LREM', c.processing, 1, id)
        return false
      end
    end
    redis.call('ZADD', c.leases, c.deadline, id)
    local claim = redis.call('INCR', c.leases .. ':seq')
    redis.call('HSET', c.leases .. ':holders', id, claim)
    local edited = mark_processing(json, spans, c.now)
    if edited then
      redis.call('SET', c.prefix .. id, edited)
      json = edited
    end
    out[#out + 1] = id
    out[#out + 1] = json
    out[#out + 1] = 2 * claim + (edited and 1 or 0)
    return true
  end

  -- whether the job `id` has one of `names` (or is unreadable: the claim buries it)
  local function wanted(c, id, names)
    local json = redis.call('GET', c.prefix .. id)
    if json then
      local ok, job = pcall(cjson.decode, json)
      if ok and type(job) == 'table' and type(job['name']) == 'string' then
        return names[job['name']] == true
      end
    end
    return true
  end

  -- move the oldest id of `list` (with one of `names`, when given) to processing; the id or nil
  local function pop(c, list, names)
    if names == nil then
      return redis.call('RPOPLPUSH', list, c.processing) or nil
    end
    local ids = redis.call('LRANGE', list, -1000, -1)
    for i = #ids, 1, -1 do
      local id = ids[i]
      if wanted(c, id, names) and redis.call('LREM', list, -1, id) == 1 then
        redis.call('LPUSH', c.processing, id)
        return id
      end
    end
    return nil
  end

  local function walk(c, lists, limit, names, out)
    local taken = 0
    for _, list in ipairs(lists) do
      if taken >= limit then break end
      if names == nil then
        while taken < limit do
          local id = redis.call('RPOPLPUSH', list, c.processing)
          if not id then break end
          if take(c, id, out) then taken = taken + 1 end
        end
      else
        -- leave jobs with other names where they are; look at the oldest 1000 of each list
        local ids = redis.call('LRANGE', list, -1000, -1)
        for i = #ids, 1, -1 do
          if taken >= limit then break end
          local id = ids[i]
          if wanted(c, id, names) and redis.call('LREM', list, -1, id) == 1 then
            redis.call('LPUSH', c.processing, id)
            if take(c, id, out) then taken = taken + 1 end
          end
        end
      end
    end
    return taken
  end

  -- Idle workers ("waiters"). A worker whose claim found nothing registers under a token:
  -- {ns}:waiting:{routing key} (sorted set: token -> registration expiry) for each routing key it
  -- serves, and {ns}:waiter:{token} (hash: lists, routes, limit, lease), then blocks on
  -- BLPOP {ns}:inbox:{token}. A script that makes jobs ready hands them to waiters directly.
  -- w = {waiting = prefix, waiter = prefix, inbox = prefix, now = seconds}

  -- the tokens of live waiters for `route` (expired registrations are removed)
  local function waiters_of(w, route)
    local key = w.waiting .. route
    redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. w.now)
    return redis.call('ZRANGE', key, 0, -1)
  end

  local function split(s)
    local parts = {}
    for part in string.gmatch(s, '[^\n]+') do parts[#parts + 1] = part end
    return parts
  end

  local function unregister(w, token, routes)
    for _, route in ipairs(routes) do redis.call('ZREM', w.waiting .. route, token) end
    redis.call('DEL', w.waiter .. token)
  end

  -- one inbox entry per hand-off, for each job: <id length>:<id><flag>:<json length>:<json>
  local function pack(out)
    local parts = {}
    for i = 1, #out, 3 do
      parts[#parts + 1] = #out[i] .. ':' .. out[i] .. out[i + 2] .. ':' .. #out[i + 1] .. ':' .. out[i + 1]
    end
    return table.concat(parts)
  end

  -- append the jobs of a packed entry to `out` (an empty entry only woke the waiter)
  local function unpack_into(s, out)
    local pos = 1
    while pos <= #s do
      local colon = string.find(s, ':', pos, true)
      local n = tonumber(string.sub(s, pos, colon - 1))
      local id = string.sub(s, colon + 1, colon + n)
      local colon1 = string.find(s, ':', colon + n + 1, true)
      local flag = tonumber(string.sub(s, colon + n + 1, colon1 - 1))
      local colon2 = string.find(s, ':', colon1 + 1, true)
      local m = tonumber(string.sub(s, colon1 + 1, colon2 - 1))
      out[#out + 1] = id
      out[#out + 1] = string.sub(s, colon2 + 1, colon2 + m)
      out[#out + 1] = flag
      pos = colon2 + m + 1
    end
  end

  -- claim for waiter `token` (as its own claim would) and put what it got in its inbox as one
  -- entry; with wake_only, put an empty entry that only wakes it. The waiter is unregistered
  -- when it was handed jobs or woken. Returns how many jobs it was handed (0 when woken), or -1
  -- when the registration is gone.
  local function hand_off(c, w, token, wake_only)
    local info = redis.call('HMGET', w.waiter .. token, 'lists', 'routes', 'limit', 'lease')
    if not info[1] then return -1 end
    local inbox, out, n = w.inbox .. token, {}, 0
    if not wake_only then
      c.deadline = tostring(tonumber(w.now) + tonumber(info[4]))
      n = walk(c, split(info[1]), tonumber(info[3]), nil, out)
      if n == 0 then return 0 end
    end
    unregister(w, token, split(info[2]))
    redis.call('LPUSH', inbox, pack(out))
    redis.call('PEXPIRE', inbox, math.floor(tonumber(info[4]) * 1000) + 60000)
    return n
  end

  -- hand ready jobs of `route` to its waiters, oldest registration first, until the lists run
  -- dry; with wake_only, wake one waiter
  local function serve_waiters(c, w, route, wake_only)
    for _, token in ipairs(waiters_of(w, route)) do
      local n = hand_off(c, w, token, wake_only)
      if n == 0 then return end
    end
  end

  return {
    walk = walk, take = take, pop = pop, split = split, unregister = unregister, unpack_into = unpack_into,
    serve_waiters = serve_waiters,
  }
end
