-- After a claim: write the job's "processing" JSON, but only while the claim still holds
-- (lease present) and the stored JSON is the one the claim read.
-- KEYS[1] lease set, KEYS[2] job key; ARGV[1] id, ARGV[2] json read by the claim, ARGV[3] new json
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[2], ARGV[3])
return 1
