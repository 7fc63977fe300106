-- Extend leases still held by the callers' claims. KEYS[1] lease set; ARGV[1] new deadline,
-- then per job: id, fence ("c" + the claim number, see claimlib.lua).
-- Returns the ids that were still held (and are now extended).
local out = {}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('ZSCORE', KEYS[1], id) and 'c' .. (redis.call('HGET', KEYS[1] .. ':holders', id) or '') == ARGV[i + 1] then
    redis.call('ZADD', KEYS[1], ARGV[1], id)
    out[#out + 1] = id
  end
end
return out
