-- Extend leases still held. KEYS[1] lease set; ARGV[1] new deadline, ARGV[2..] ids.
-- Returns the ids that were still held (and are now extended).
local out = {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i])
    out[#out + 1] = ARGV[i]
  end
end
return out
