-- Groups with limits (bananas.groups; docs/redis-wire-format.md, "Groups and limits"). Shared
-- by the scripts that make grouped jobs ready (join) and by claim.lua (claim_line), included
-- where a script says `--#include grouplib`; grouplib() returns the functions.
-- Keys (all our own, apart from every list and set an original Go worker pops):
--   {ns}:groups:queue:{routing key}:{priority}:{group}  list: the group's ready ids (LPUSH, RPOP)
--   {ns}:groups:turns:{routing key}:{priority}          sorted set: the groups with ready jobs of that
--       line, and "" for its jobs without a group, scored by their place in the turns (+ ":seq")
--   {ns}:groups:limits                                  hash: group (or "*") -> GroupLimit JSON
--   {ns}:groups:running:{group}                         sorted set: claimed id -> lease deadline
--   {ns}:groups:starts:{group}                          sorted set: claim -> when it started
-- A slot is counted only while the id's lease in {ns}:queue:leases runs (the entry of a settled
-- or expired claim is dropped when next looked at), so a crashed worker's slot cannot leak.

local function grouplib()
  -- put a group in the turns of its line ("turns key\ngroup"; "" does nothing): at the back
  -- when it joins; the jobs without a group join first when the line's turns begin
  local function join(spec)
    if spec == nil or spec == '' then return end
    local turns, group = string.match(spec, '^(.-)\n(.+)$')
    if not turns then return end
    if redis.call('EXISTS', turns) == 0 then
      redis.call('ZADD', turns, redis.call('INCR', turns .. ':seq'), '')
    end
    if not redis.call('ZSCORE', turns, group) then
      redis.call('ZADD', turns, redis.call('INCR', turns .. ':seq'), group)
    end
  end

  local units = {s = 1, m = 60, h = 3600}
  local paused = {max = 0}

  -- a stored limit as {max = n|nil, count = n|nil, per = seconds|nil}, the rate as the window
  -- the store enforces (bananas.groups.Rate.burst starts per Rate.window seconds: one start
  -- per per/COUNT, so starts are spaced); one that cannot be read holds the group back (never
  -- more than its real limit)
  local function parse_limit(text)
    local ok, data = pcall(cjson.decode, text)
    if not ok or type(data) ~= 'table' then return paused end
    local out = {}
    local max = data['max_running']
    if max ~= nil and max ~= cjson.null then
      if type(max) ~= 'number' or max < 0 or max ~= math.floor(max) then return paused end
      out.max = max
    end
    local rate = data['rate']
    if rate ~= nil and rate ~= cjson.null then
      if type(rate) ~= 'string' then return paused end
      local count, unit = string.match(rate, '^(%d+)/([smh])$')
      if not count or tonumber(count) < 1 then return paused end
      out.count, out.per = 1, units[unit] / tonumber(count)
    end
    return out
  end

  -- g = {limits = hash, running = prefix, starts = prefix, leases = lease set, now = number,
  --      now_text = the same as sent, cache = {}}
  local function limit_of(g, group)
    local found = g.cache[group]
    if found then return found end
    local texts = redis.call('HMGET', g.limits, group, '*')
    local text = texts[1] or texts[2]
    if text then found = parse_limit(text) else found = {} end
    g.cache[group] = found
    return found
  end

  -- look at a group's slots (all, or the few whose recorded deadline passed): keep those whose
  -- lease still runs (with its current deadline), drop the others; how many were kept
  local function tidy(g, group, all)
    local key = g.running .. group
    local ids
    if all then
      ids = redis.call('ZRANGE', key, 0, -1)
    else
      ids = redis.call('ZRANGEBYSCORE', key, '-inf', g.now_text, 'LIMIT', 0, 4)
    end
    local held = 0
    for _, id in ipairs(ids) do
      local deadline = redis.call('ZSCORE', g.leases, id)
      if deadline and tonumber(deadline) > g.now then
        held = held + 1
        redis.call('ZADD', key, deadline, id)
      else
        redis.call('ZREM', key, id)
      end
    end
    return held
  end

  -- a held-back group may start one at `at` (a lease ends, a start leaves the window): keep the earliest
  local function free_at(g, at)
    if at and (g.next == nil or at < g.next) then g.next = at end
  end

  -- bananas.groups.admits: a free slot and room in the rate's window
  local function admits(g, group)
    local limit = limit_of(g, group)
    if limit.max then
      if limit.max == 0 then return false end
      local key = g.running .. group
      if redis.call('ZCARD', key) >= limit.max and tidy(g, group, true) >= limit.max then
        local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
        free_at(g, tonumber(first[2]))
        return false
      end
    end
    if limit.per then
      local key = g.starts .. group
      redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.17g', g.now - limit.per))
      local n = redis.call('ZCARD', key)
      if n >= limit.count then
        local oldest = redis.call('ZRANGE', key, n - limit.count, n - limit.count, 'WITHSCORES')
        free_at(g, tonumber(oldest[2]) + limit.per)
        return false
      end
    end
    return true
  end

  -- a claim took `id` of `group` (claim number `claim`): it holds a slot, and starts count
  -- against a rate the group has now
  local function took(g, group, id, deadline, claim)
    redis.call('ZADD', g.running .. group, deadline, id)
    local limit = limit_of(g, group)
    if limit.per then
      local key = g.starts .. group
      redis.call('ZADD', key, g.now_text, claim)
      redis.call('PEXPIRE', key, math.ceil(limit.per * 1000) + 1000)  -- gone with its last start's window
    end
    if not limit.max then tidy(g, group, false) end  -- keeps an unlimited group's set short
  end

  -- claim up to `limit` jobs of one line (routing key and priority) by turns: the participant
  -- with the lowest place whose limit admits one more gives its oldest job and goes to the
  -- back; "" is the line's plain lists (FIFO, as without groups). A group whose list is empty
  -- leaves the turns; when only "" is left the turns end (the plain fast path again).
  -- line = {lists = plain lists, turns = key, prefix = group list prefix}
  local function claim_line(lib, c, g, line, limit, names, out)
    local taken = 0
    while taken < limit do
      local moved = false
      for _, who in ipairs(redis.call('ZRANGE', line.turns, 0, -1)) do
        if who == '' then
          local n = lib.walk(c, line.lists, 1, names, out)
          if n > 0 then
            taken, moved = taken + n, true
          end
        else
          local list = line.prefix .. who
          if redis.call('LLEN', list) == 0 then
            redis.call('ZREM', line.turns, who)
          elseif admits(g, who) then
            local id = lib.pop(c, list, names)
            if id then
              moved = true
              if lib.take(c, id, out) then
                taken = taken + 1
                took(g, who, id, c.deadline, math.floor(out[#out] / 2))
              end
            end
          end
        end
        if moved then
          if who ~= '' and redis.call('LLEN', line.prefix .. who) == 0 then
            redis.call('ZREM', line.turns, who)  -- its last ready job: it leaves the turns
          else
            redis.call('ZADD', line.turns, redis.call('INCR', line.turns .. ':seq'), who)
          end
          break
        end
      end
      if not moved then break end
    end
    if redis.call('ZCARD', line.turns) <= 1 then redis.call('DEL', line.turns) end
    return taken
  end

  return {join = join, claim_line = claim_line}
end
