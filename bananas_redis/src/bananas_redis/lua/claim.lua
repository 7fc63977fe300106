-- Claim up to `limit` ready ids in one call, walking the ready lists in the order given.
-- KEYS[1] processing list, KEYS[2] lease set, KEYS[3] dead list, KEYS[4] dead-errors hash,
-- KEYS[5..] ready lists (routing keys in the caller's order, priorities high to low)
-- ARGV[1] job key prefix, ARGV[2] limit, ARGV[3] lease deadline, ARGV[4] error for missing jobs,
-- ARGV[5] number of job names to filter on (0: any), ARGV[6..] the names
-- Each claimed id moves to processing (RPOPLPUSH: never in no list) with a lease deadline.
-- An id whose job JSON is missing goes to the dead list at once. Returns {id, json, id, json, ...};
-- the caller rewrites the JSON's status (see queue.py: JSON is never re-encoded here).
local prefix, limit, deadline, missing = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local nnames = tonumber(ARGV[5])
local names = nil
if nnames > 0 then
  names = {}
  for i = 1, nnames do names[ARGV[5 + i]] = true end
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
  redis.call('ZADD', KEYS[2], deadline, id)
  out[#out + 1] = id
  out[#out + 1] = json
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
