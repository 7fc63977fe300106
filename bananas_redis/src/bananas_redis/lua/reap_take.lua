-- Take the expired leases for this reaper: bump each deadline to ARGV[2] (the reaper's own
-- short lease, which is also its token) so no other reaper sees them, and return {id, json|false, ...}.
-- A reaper that dies here leaves them to be reaped again when that short lease ends.
-- KEYS[1] lease set; ARGV[1] now, ARGV[2] reaper deadline, ARGV[3] limit, ARGV[4] job key prefix
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], ARGV[2], id)
  out[#out + 1] = id
  out[#out + 1] = redis.call('GET', ARGV[4] .. id)
end
return out
