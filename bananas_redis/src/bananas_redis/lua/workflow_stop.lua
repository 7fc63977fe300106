-- Stop a workflow (cancel_workflow's first write): unless no step is running, record every step
-- not created yet cancelled (it is never created afterwards) and name the running ones.
-- KEYS[1] the workflow hash {ns}:workflow:{id}
-- ARGV[1] outcome JSON of a step cancelled before it was created, ARGV[2..] the workflow's step ids
-- Returns {"gone"} for no workflow, else {"ok", n, n cancelled ids..., running ids...}.
local wkey = KEYS[1]
if redis.call('EXISTS', wkey) == 0 then return {'gone'} end
local waiting, running = {}, {}
for i = 2, #ARGV do
  local state = redis.call('HGET', wkey, 'state:' .. ARGV[i])
  if state == 'created' then
    running[#running + 1] = ARGV[i]
  elseif state == 'waiting' then
    waiting[#waiting + 1] = ARGV[i]
  end
end
if #running == 0 then return {'ok', 0} end
local reply = {'ok', #waiting}
for _, id in ipairs(waiting) do
  redis.call('HSET', wkey, 'state:' .. id, 'cancelled', 'out:' .. id, ARGV[1])
  reply[#reply + 1] = id
end
for _, id in ipairs(running) do reply[#reply + 1] = id end
return reply
