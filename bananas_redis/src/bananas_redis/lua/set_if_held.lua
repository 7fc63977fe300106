-- After a claim: write each job's "processing" JSON, but only while the claim still holds
-- (lease present) and the stored JSON is the one the claim read.
-- KEYS[1] lease set; ARGV[1] job key prefix, then per job: id, json read by the claim, new json
-- Returns how many were written.
local written = 0
for i = 2, #ARGV, 3 do
  local id = ARGV[i]
  local key = ARGV[1] .. id
  if redis.call('ZSCORE', KEYS[1], id) and redis.call('GET', key) == ARGV[i + 1] then
    redis.call('SET', key, ARGV[i + 2])
    written = written + 1
  end
end
return written
