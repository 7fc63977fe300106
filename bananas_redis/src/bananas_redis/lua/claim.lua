-- Claim up to `limit` ready ids in one call, walking the ready lists in the order given.
-- KEYS[1] processing list, KEYS[2] lease set, KEYS[3] dead list, KEYS[4] dead-errors hash,
-- KEYS[5..] ready lists (routing keys in the caller's order, priorities high to low)
-- ARGV[1] job key prefix, ARGV[2] limit, ARGV[3] lease deadline, ARGV[4] error for missing jobs,
-- ARGV[5] updated_at (RFC 3339), ARGV[6] number of job names to filter on (0: any), ARGV[7..] the names
-- Each claimed id moves to processing (RPOPLPUSH: never in no list) with a lease deadline.
-- An id whose job JSON is missing goes to the dead list at once; an id whose job already
-- says completed or failed (finished late by a worker whose lease was reaped) is dropped.
-- The JSON is never decoded and re-encoded here (cjson would rewrite floats, big integers and
-- field order): the values of the top-level "status" and "updated_at" strings are replaced in
-- place in the text. Returns {id, json, edited, ...}: edited is 1 when the stored JSON now says
-- "processing", 0 when the text was not a shape this editor handles (the caller then edits it).
local prefix, limit, deadline, missing, now = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local nnames = tonumber(ARGV[6])
local names = nil
if nnames > 0 then
  names = {}
  for i = 1, nnames do names[ARGV[6 + i]] = true end
end

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

local function mark_processing(json, spans)
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
local out = {}
local taken = 0

local function take(id)
  local json = redis.call('GET', prefix .. id)
  if not json then
    redis.call('LREM', KEYS[1], 1, id)
    redis.call('LPUSH', KEYS[3], id)
    redis.call('HSET', KEYS[4], id, missing)
    return
  end
  local spans = top_level_strings(json)
  if spans and spans['status'] then
    local status = string.sub(json, spans['status'][1], spans['status'][2])
    if status == '"completed"' or status == '"failed"' then
      -- already finished (a worker completed it after its lease was reaped): drop the stale id
      redis.call('LREM', KEYS[1], 1, id)
      return
    end
  end
  redis.call('ZADD', KEYS[2], deadline, id)
  local edited = mark_processing(json, spans)
  if edited then
    redis.call('SET', prefix .. id, edited)
    json = edited
  end
  out[#out + 1] = id
  out[#out + 1] = json
  out[#out + 1] = edited and 1 or 0
  taken = taken + 1
end

for k = 5, #KEYS do
  if taken >= limit then break end
  local list = KEYS[k]
  if names == nil then
    while taken < limit do
      local id = redis.call('RPOPLPUSH', list, KEYS[1])
      if not id then break end
      take(id)
    end
  else
    -- leave jobs with other names where they are; look at the oldest 1000 of each list
    local ids = redis.call('LRANGE', list, -1000, -1)
    for i = #ids, 1, -1 do
      if taken >= limit then break end
      local id = ids[i]
      local json = redis.call('GET', prefix .. id)
      local wanted = true
      if json then
        local ok, job = pcall(cjson.decode, json)
        if ok and type(job) == 'table' and type(job['name']) == 'string' then
          wanted = names[job['name']] == true
        end
      end
      if wanted and redis.call('LREM', list, -1, id) == 1 then
        redis.call('LPUSH', KEYS[1], id)
        take(id)
      end
    end
  end
end
return out
